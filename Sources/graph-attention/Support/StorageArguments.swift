import ArgumentParser
import Foundation
import GraphAttention
import Synchronization

extension StorageType: ExpressibleByArgument {
  /// Accepts f32/float32/fp32, f16/float16/fp16/half, bf16/bfloat16 (see `StorageType(parsing:)`).
  public init?(argument: String) {
    self.init(parsing: argument)
  }

  public static var allValueStrings: [String] { StorageType.allCases.map(\.shortName) }

  /// Shown under the option in help: each spelling and its aliases.
  public static var allValueDescriptions: [String: String] {
    ["f32": "IEEE binary32; also fp32, float32", "f16": "IEEE binary16; also fp16, float16, half",
     "bf16": "bfloat16, fp32's range with 8 significant bits; also bfloat16"]
  }

  public var defaultValueDescription: String { shortName }
}

/// A byte count given on the command line: `24G`, `512MiB`, `1.5T`, `1e9`, `100KB`, `4096`.
///
/// Suffixes (any case): none or `B` = bytes; `K`, `M`, `G`, `T`, `P` and `KiB` ... `PiB` are powers of
/// 1024; `KB`, `MB`, `GB`, `TB`, `PB` are powers of 1000. Fractions and exponents are allowed; the
/// result is rounded down to whole bytes.
struct ByteCount: ExpressibleByArgument, Equatable {
  var bytes: Int

  init(bytes: Int) {
    self.bytes = bytes
  }

  init?(argument: String) {
    let text = Array(argument.trimmingCharacters(in: .whitespaces))
    // The number: digits and '.', then an optional exponent (e, sign, digits).
    var end = 0
    while end < text.count, text[end].isNumber || text[end] == "." { end += 1 }
    if end < text.count, text[end] == "e" || text[end] == "E" {
      var probe = end + 1
      if probe < text.count, text[probe] == "+" || text[probe] == "-" { probe += 1 }
      if probe < text.count, text[probe].isNumber {
        while probe < text.count, text[probe].isNumber { probe += 1 }
        end = probe
      }
    }
    guard end > 0, let number = Double(String(text[..<end])), number.isFinite, number >= 0 else { return nil }
    let unit: Double
    switch String(text[end...]).trimmingCharacters(in: .whitespaces).lowercased() {
    case "", "b": unit = 1
    case "k", "kib": unit = 0x1p10
    case "m", "mib": unit = 0x1p20
    case "g", "gib": unit = 0x1p30
    case "t", "tib": unit = 0x1p40
    case "p", "pib": unit = 0x1p50
    case "kb": unit = 1e3
    case "mb": unit = 1e6
    case "gb": unit = 1e9
    case "tb": unit = 1e12
    case "pb": unit = 1e15
    default: return nil
    }
    let value = (number * unit).rounded(.down)
    guard value < 9.2e18 else { return nil }
    bytes = Int(value)
  }

  var defaultValueDescription: String { Console.format(bytes: Double(bytes)) }
}

/// `1234567` as `1,234,567`.
func groupedDigits(_ value: Int) -> String {
  let digits = String(value.magnitude)
  var out = ""
  for (i, c) in digits.enumerated() {
    if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
    out.append(c)
  }
  return (value < 0 ? "-" : "") + out
}

/// A JSON string literal (the library's escaping, so every JSON output escapes alike).
func jsonQuoted(_ text: String) -> String {
  JSONText.quoted(text)
}

/// Progress of a long write: `label [#####     ] 42%  1.20 of 2.93 GiB, 812 MiB/s, ETA 2.1 s` on stderr,
/// redrawn at most 10 times a second, only when stderr is a terminal.
final class TransferProgress: Sendable {
  private let label: String
  private let totalBytes: Int
  private let start = monotonicSeconds()
  /// Bytes done in each part (a part reports its running total, possibly out of order from several threads).
  private let parts = Mutex([Int: Int]())
  private let redraw = RedrawTimer()

  init(_ label: String, totalBytes: Int) {
    self.label = label
    self.totalBytes = max(totalBytes, 1)
  }

  /// Records that `bytes` of part `part` are done (a running total; smaller totals than one already
  /// seen are ignored), and redraws if due.
  func update(part: Int, doneBytes bytes: Int) {
    guard Console.stderrIsTerminal else { return }
    let now = monotonicSeconds()
    let done = parts.withLock { parts in
      parts[part] = max(parts[part] ?? 0, bytes)
      return parts.values.reduce(0, +)
    }
    guard redraw.isDue(at: now, force: done >= totalBytes) else { return }
    let fraction = min(1, Double(done) / Double(totalBytes))
    let elapsed = now - start
    let rate = elapsed > 0 ? Double(done) / elapsed : 0
    let eta = rate > 0 ? Double(totalBytes - done) / rate : 0
    let width = 30
    let filled = Int(fraction * Double(width))
    let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
    let line = "\r\(label) [\(bar)] \(Int(fraction * 100))%  \(Console.format(bytes: Double(done))) of "
      + "\(Console.format(bytes: Double(totalBytes))), \(Console.format(bytes: rate))/s, ETA \(Console.format(seconds: eta))  "
    FileHandle.standardError.write(Data((fraction >= 1 ? line + "\n" : line).utf8))
  }
}
