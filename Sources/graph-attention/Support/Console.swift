import Foundation
import GraphAttention
import Synchronization

/// Human-facing output: progress on stderr (only when it is a terminal) and number formatting.
enum Console {
  /// Whether stderr is a terminal, so that progress bars do not litter logs.
  static let stderrIsTerminal = isatty(STDERR_FILENO) == 1

  /// Writes a line to stderr, after what stdout holds: where both go to one pipe or file, the line does not
  /// land in the middle of a line of a table that stdout was still buffering.
  static func note(_ text: String) {
    fflush(nil)  // every C stream: stdout without naming the global, which Swift 6 does not let us read
    FileHandle.standardError.write(Data((text + "\n").utf8))
  }

  /// A progress callback (callable from worker threads) for a fraction of work done: on a terminal it
  /// redraws `label [#####     ] 42%  1.2 s elapsed, ETA 1.7 s` on stderr, at most 10 times a second;
  /// otherwise (a batch job, a log file) it writes a plain line `label: 42% after 12.0 s, ETA 16.5 s` once
  /// the work has taken 2 s (or `plainLineSeconds`, if shorter), then every `plainLineSeconds`, and a last
  /// one at the end if any was written or the work took that long.
  static func progressBar(_ label: String, plainLineSeconds: Double = 10) -> @Sendable (Double) -> Void {
    let start = Date()
    let terminal = stderrIsTerminal
    let redraw = RedrawTimer(interval: terminal ? 0.1 : plainLineSeconds)
    // Work under 2 s prints nothing; anything longer says early that it is running and how long it will take.
    let firstLineSeconds = min(2, plainLineSeconds)
    return { fraction in
      let now = Date()
      let elapsed = now.timeIntervalSince(start)
      let finishing = fraction >= 1 && (terminal || elapsed >= firstLineSeconds)
      guard terminal || elapsed >= firstLineSeconds || finishing,
            redraw.isDue(at: now.timeIntervalSinceReferenceDate, force: finishing) else { return }
      let eta = fraction > 0 ? elapsed * (1 - fraction) / fraction : 0
      guard terminal else {
        note("\(label): \(Int(fraction * 100))% after \(format(seconds: elapsed)), ETA \(format(seconds: eta))")
        return
      }
      let width = 30
      let filled = Int(fraction * Double(width))
      let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
      let line = "\r\(label) [\(bar)] \(Int(fraction * 100))%  \(format(seconds: elapsed)) elapsed, ETA \(format(seconds: eta))  "
      FileHandle.standardError.write(Data((fraction >= 1 ? line + "\n" : line).utf8))
    }
  }

  /// A streamed job's progress reporter: on a terminal the bar of `progressBar`; otherwise (a batch job,
  /// a log file) one plain line every `lineSeconds` (and one at the end), e.g.
  /// `attention: 1048576 of 16777216 rows (6.2%), 87381 rows/s, ETA 3.1 min`.
  static func rowProgress(_ label: String, lineSeconds: Double) -> ((StreamingAttention.Progress) -> Void)? {
    var announcedResume = false
    if stderrIsTerminal {
      let bar = progressBar(label)
      return { progress in
        if progress.firstRow > 0, !announcedResume {
          announcedResume = true
          note("resuming at row \(progress.firstRow) of \(progress.totalRows)")
        }
        bar(progress.fraction)
      }
    }
    var lastLine = -Double.infinity
    return { progress in
      if progress.firstRow > 0, !announcedResume {
        announcedResume = true
        note("resuming at row \(progress.firstRow) of \(progress.totalRows)")
      }
      let now = monotonicSeconds()
      guard now - lastLine >= lineSeconds || progress.completedRows == progress.totalRows else { return }
      lastLine = now
      let eta = progress.estimatedSecondsLeft
      note("\(label): \(progress.completedRows) of \(progress.totalRows) rows (\(String(format: "%.1f", 100 * progress.fraction))%), "
        + "\(Int(progress.rowsPerSecond.rounded())) rows/s, ETA \(eta >= 120 ? String(format: "%.1f min", eta / 60) : format(seconds: eta))")
    }
  }

  static func format(seconds: Double) -> String {
    seconds < 1 ? String(format: "%.0f ms", seconds * 1000) : String(format: "%.1f s", seconds)
  }

  static func format(bytes: Double) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = bytes
    var unit = 0
    while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(Int(value)) B" : String(format: "%.2f %@", value, units[unit])
  }

  /// Encodes a flat dictionary as one line of JSON with keys in the given order.
  static func json(_ fields: KeyValuePairs<String, Any>) -> String {
    let body = fields.map { key, value -> String in
      let encoded: String
      switch value {
      case let s as String: encoded = JSONText.quoted(s)
      case let d as Double: encoded = d.isFinite ? "\(d)" : "null"
      case let a as [Int]: encoded = "[" + a.map(String.init).joined(separator: ",") + "]"
      default: encoded = "\(value)"
      }
      return "\"\(key)\":\(encoded)"
    }
    return "{" + body.joined(separator: ",") + "}"
  }
}

/// Limits progress redraws to 10 a second, shared by the worker threads that report progress.
final class RedrawTimer: Sendable {
  private let lastDraw = Mutex(-Double.infinity)
  private let interval: Double

  /// A timer that is due every `interval` seconds.
  init(interval: Double = 0.1) { self.interval = interval }

  /// Whether to redraw at `now` (seconds): true when `force` or `interval` passed since the last redraw.
  func isDue(at now: Double, force: Bool = false) -> Bool {
    lastDraw.withLock { last in
      guard force || now - last >= interval else { return false }
      last = now
      return true
    }
  }
}
