import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention bench`: sweeps masks, lengths, head dimensions and head counts; reports time, useful
/// GFLOP/s, percent of this machine's measured FMA peak, edges per second, peak memory and exact-work ratio,
/// optionally beside PyTorch run on the same shapes.
struct BenchCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench",
    abstract: "Benchmark masks over lengths against this machine's measured FMA peak (and PyTorch with --peers).",
    discussion: """
      Masks are presets or specifications: window (window:256), causal-window (window:256:causal), \
      dilated (dilated:128:1), blocked (blocked:256:0), longformer (window:256+global:0,1,2,3), \
      bigbird (window:128+global:0,1+random with ~3 keys per row), random-1e-4 ... random-1e-1 (a random \
      graph stored as an explicit CSR pattern, run through the gather path), causal (dense causal), or any \
      mask specification. Rows whose estimated time exceeds --max-row-seconds or whose tensors exceed \
      --memory-fraction of physical memory are listed as skipped, with the reason. Refuses debug builds.
      """
  )

  @Option(help: "Comma-separated presets or mask specifications.")
  var masks = "window,causal-window,dilated,blocked,longformer,bigbird,random-1e-4,random-1e-3,random-1e-2,random-1e-1,causal"
  @Option(help: "Comma-separated sequence lengths.") var tokens = "4096,16384,65536,262144,1048576"
  @Option(help: "Comma-separated head dimensions (d_k = d_v).") var dims = "64,128"
  @Option(help: "Comma-separated head counts.") var heads = "1,8"
  @Option(parsing: .unconditional, help: "Timed runs per row (the median is reported).") var repeats = 5
  @Option(parsing: .unconditional, help: "Skip rows estimated to take longer than this, in seconds for all repeats.") var maxRowSeconds = 30.0
  @Option(parsing: .unconditional, help: "Skip rows whose tensors need more than this fraction of physical memory.") var memoryFraction = 0.6
  @OptionGroup var threadOption: ThreadOption
  var threads: Int? { threadOption.threads }
  @Option(help: "CPU kernel: automatic (GRAPH_ATTENTION_KERNEL, else the widest), portable, avx2 or avx512.")
  var kernel: CPUKernel = .automatic
  @Option(help: "Write results.json, results.csv and results.svg into this directory.") var outputDirectory: String?
  @Flag(help: "Also time PyTorch (Benchmarks/peers) on the same shapes.") var peers = false
  @Option(help: "Python with PyTorch for --peers.") var peerPython = "Benchmarks/peers/.venv/bin/python"
  @Option(help: "The peer script for --peers.") var peerScript = "Benchmarks/peers/torch_peers.py"
  @Option(parsing: .unconditional, help: "Run peers only up to this length.") var peerMaxTokens = 65536
  @Flag(help: "Also time the backward (attentionGradients, from a saved forward) of each measured mask, as a row 'MASK bwd' (GFLOP/s count 10 * edges * d); with --peers, PyTorch's backward alone beside it.")
  var backward = false

  func validate() throws {
    guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1.") }
    guard maxRowSeconds > 0 else { throw ValidationError("--max-row-seconds must be positive.") }
    guard memoryFraction > 0, memoryFraction <= 1 else { throw ValidationError("--memory-fraction must be in (0, 1].") }
    for (name, list) in [("tokens", tokens), ("dims", dims), ("heads", heads)] {
      guard let values = BenchCommand.integers(list), !values.isEmpty, values.allSatisfy({ $0 >= 1 }) else {
        throw ValidationError("--\(name) must be a comma-separated list of positive integers, got '\(list)'.")
      }
    }
    // Everything that can fail is checked here, before minutes of measuring.
    if let outputDirectory { try BenchReport.checkDirectory(outputDirectory) }
    for name in masks.split(separator: ",") {
      let (_, spec) = BenchPreset.specification(String(name), tokens: 4096)
      do {
        _ = try BenchPreset.graph(spec, tokens: 4096)
      } catch {
        throw ValidationError("--masks: '\(name)' is neither a preset (\(BenchPreset.names.joined(separator: ", "))) "
          + "nor a mask specification: \(error)")
      }
    }
    if peers { try PeerRunner(python: peerPython, script: peerScript).checkAvailable() }
  }

  /// Prints a table line and flushes it at once: piped into a log, stdout is block-buffered, and a row
  /// measured minutes ago must not wait for the table to end.
  static func printRow(_ line: String) {
    print(line)
    fflush(nil)  // every C stream: stdout without naming the global, which Swift 6 does not let us read
  }

  static func integers(_ list: String) -> [Int]? {
    let values = list.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    return values.contains(nil) ? nil : values.compactMap { $0 }
  }

  func run() throws {
    #if DEBUG
    throw GraphAttentionError(.option, "bench refuses debug builds: their kernels run 10-100x slower",
                              fix: "build with -c release: swift run -c release graph-attention bench")
    #else
    let threadCount = threadOption.count
    Console.note("measuring this machine's FMA peak and read bandwidth with \(threadCount) thread(s)...")
    // The peak of the widest FMA this CPU runs: a percentage of a narrower one would overstate every row.
    let peak = (0..<3).map { _ in MachineLimits.measureFMAPeak(threads: threadCount) }.max() ?? 0
    let isa = MachineLimits.instructionSetName(MachineLimits.fmaKernel)
    let bandwidth = MachineLimits.measureReadBandwidth(threads: threadCount)
    let kernelName = try kernel.resolved().rawValue
    Console.note("\(isa) FMA peak " + String(format: "%.1f GFLOP/s, read bandwidth %.1f GB/s", peak / 1e9, bandwidth / 1e9)
                 + ", \(kernelName) kernel")
    var report = BenchReport(peakFlops: peak, peakInstructionSet: isa, kernel: kernelName, readBandwidth: bandwidth, threads: threadCount,
                             command: CommandLine.arguments.joined(separator: " "))
    let physical = Double(ProcessInfo.processInfo.physicalMemory)
    // Seconds per useful FLOP, per mask, from its measured rows (gathers and dense tiles differ by 10x);
    // masks not yet measured start at 30% of peak.
    var secondsPerFlop: [String: Double] = [:]
    let lengths = BenchCommand.integers(tokens)!, dimensions = BenchCommand.integers(dims)!, headCounts = BenchCommand.integers(heads)!
    let maskCount = masks.split(separator: ",").count
    let rowCount = lengths.count * dimensions.count * headCounts.count * maskCount
    let peerRows = lengths.filter { $0 <= peerMaxTokens }.count * dimensions.count * headCounts.count * maskCount
    Console.note("bench: \(rowCount) row(s)\(backward ? " and their backward" : ""), each at most --max-row-seconds "
      + "\(Int(maxRowSeconds)) s for the engine, so at most \(Console.format(seconds: Double(rowCount) * maxRowSeconds * (backward ? 2 : 1)))"
      + (peers ? "; plus \(peerRows) row(s) for the PyTorch peers (SDPA, SDPA dense, compiled FlexAttention), each "
                 + "peer in its own process: its torch.compile takes 0.5-2 min per row on 2 cores before any timing, "
                 + "so expect a few minutes per row (the peer being run is named on stderr)" : "")
      + "; rows are printed as they finish.")
    BenchCommand.printRow(BenchReport.Row.tableHeader(peers: peers))

    for length in lengths {
      for dim in dimensions {
        for headCount in headCounts {
          let tensorBytes = 4.0 * Double(4 * headCount * length * dim)
          let specs = masks.split(separator: ",").map { BenchPreset.specification(String($0), tokens: length) }
          var inputs: (Tensor, Tensor, Tensor)?
          for (name, spec) in specs {
            var row = BenchReport.Row(mask: name, spec: spec, tokens: length, dim: dim, heads: headCount)
            row.tensorBytes = tensorBytes
            do {
              let graph = try BenchPreset.graph(spec, tokens: length)
              let edges = graph.edgeCount(queryCount: length, keyCount: length)
              row.edges = edges
              let flops = 4 * Double(edges) * Double(dim) * Double(headCount)
              let estimate = flops * (secondsPerFlop[name] ?? 1 / (0.3 * peak)) * Double(repeats + 1)
              let graphBytes = BenchPreset.isExplicit(spec) ? 4.0 * Double(edges) : 0
              if tensorBytes + graphBytes > memoryFraction * physical {
                row.skipped = String(format: "needs %.1f GiB, over %.0f%% of memory", (tensorBytes + graphBytes) / 1073741824, memoryFraction * 100)
              } else if estimate > maxRowSeconds {
                row.skipped = String(format: "estimated %.0f s > --max-row-seconds %.0f", estimate, maxRowSeconds)
              } else {
                let runnable = BenchPreset.isExplicit(spec)
                  ? Graph.explicit(try ExplicitGraph(materializing: graph, queryCount: length, keyCount: length)) : graph
                if inputs == nil {
                  let shape = [headCount, length, dim]
                  inputs = (Tensor.random(shape: shape, seed: 1), Tensor.random(shape: shape, seed: 2), Tensor.random(shape: shape, seed: 3))
                }
                let (q, k, v) = inputs!
                try measure(&row, graph: runnable, q: q, k: k, v: v, threads: threadCount, peak: peak)
                if let median = row.medianSeconds, flops > 0 { secondsPerFlop[name] = max(median / flops, 1 / peak) }
              }
            } catch {
              row.skipped = "\(error)"
            }
            if peers, row.skipped == nil, length <= peerMaxTokens {
              row.peers = PeerRunner(python: peerPython, script: peerScript)
                .run(spec: spec, tokens: length, dim: dim, heads: headCount, threads: threadCount, repeats: repeats)
            }
            BenchCommand.printRow(row.tableLine(peers: peers))
            report.rows.append(row)
            if backward, let forward = row.medianSeconds, let (q, k, v) = inputs {
              var gradients = BenchReport.Row(mask: name + " bwd", spec: spec, tokens: length, dim: dim, heads: headCount)
              gradients.edges = row.edges
              gradients.tensorBytes = 2 * tensorBytes
              do {
                let runnable = BenchPreset.isExplicit(spec)
                  ? Graph.explicit(try ExplicitGraph(materializing: try BenchPreset.graph(spec, tokens: length), queryCount: length, keyCount: length))
                  : try BenchPreset.graph(spec, tokens: length)
                try measureBackward(&gradients, graph: runnable, q: q, k: k, v: v, threads: threadCount, peak: peak)
                Console.note(String(format: "%@ %d tokens d=%d H=%d: backward / forward = %.2f", name, length, dim, headCount,
                                    (gradients.medianSeconds ?? .nan) / forward))
              } catch {
                gradients.skipped = "\(error)"
              }
              if peers, gradients.skipped == nil, length <= peerMaxTokens {
                gradients.peers = PeerRunner(python: peerPython, script: peerScript)
                  .run(spec: spec, tokens: length, dim: dim, heads: headCount, threads: threadCount, repeats: repeats, backward: true)
              }
              BenchCommand.printRow(gradients.tableLine(peers: peers))
              report.rows.append(gradients)
            }
          }
        }
      }
    }
    if let outputDirectory {
      try report.write(to: outputDirectory)
      Console.note("wrote \(outputDirectory)/results.json, results.csv, results.svg")
    }
    #endif
  }

  private func measure(_ row: inout BenchReport.Row, graph: Graph, q: Tensor, k: Tensor, v: Tensor, threads: Int, peak: Double) throws {
    var options = AttentionOptions(threads: threads, checksFiniteInputs: false, kernel: kernel)
    options.assumesFiniteInputs = true  // the inputs are random normals: measure the kernels alone
    let (queryView, keyView, valueView) = (TensorView(q), TensorView(k), TensorView(v))
    let output = MutableTensorView(allocating: try AttentionShape(query: q.shape, key: k.shape, value: v.shape).outputShape,
                                   type: .float32)
    func once() throws -> AttentionWork {
      try attention(query: queryView, key: keyView, value: valueView, output: output, graph: graph, options: options)
    }
    try record(&row, flopsPerEdgeDim: 4, peak: peak, timing: once)
  }

  /// Runs `once` for a warm-up, then `repeats` times, and fills the row's timings: the median and minimum,
  /// GFLOP/s at `flopsPerEdgeDim * edges * d` per head, the share of `peak`, edges per second, scores per edge
  /// and the peak resident set of the timed runs.
  fileprivate func record(_ row: inout BenchReport.Row, flopsPerEdgeDim: Double, peak: Double,
                          timing once: () throws -> AttentionWork) throws {
    _ = try once()  // warm-up
    PeakMemory.reset()
    var times: [Double] = []
    var work = AttentionWork(edges: 0, scoresComputed: 0)
    for _ in 0..<repeats {
      let start = monotonicSeconds()
      work = try once()
      times.append(monotonicSeconds() - start)
    }
    times.sort()
    let median = times[times.count / 2]
    let edgesAllHeads = Double(work.edges)
    row.medianSeconds = median
    row.minSeconds = times[0]
    row.gflops = flopsPerEdgeDim * edgesAllHeads * Double(row.dim) / median / 1e9
    row.percentOfPeak = 100 * row.gflops! * 1e9 / peak
    row.edgesPerSecond = edgesAllHeads / median
    row.scoresPerEdge = edgesAllHeads > 0 ? Double(work.scoresComputed) / edgesAllHeads : 1
    row.peakResidentBytes = PeakMemory.current()
  }
}

extension BenchCommand {
  /// Times `attentionGradients` (dQ, dK, dV) from one saved forward (output and log-sum-exp), `repeats` times
  /// after a warm-up; GFLOP/s count FlashAttention's `10 * edges * d` per head.
  fileprivate func measureBackward(_ row: inout BenchReport.Row, graph: Graph, q: Tensor, k: Tensor, v: Tensor,
                                   threads: Int, peak: Double) throws {
    var options = AttentionOptions(threads: threads, checksFiniteInputs: false, kernel: kernel)
    options.assumesFiniteInputs = true  // the inputs are random normals: measure the kernels alone
    let (qv, kv, vv) = (TensorView(q), TensorView(k), TensorView(v))
    let dO = TensorView(Tensor.random(shape: q.shape, seed: 4))
    let o = MutableTensorView(allocating: q.shape, type: .float32)
    let lse = MutableTensorView(allocating: Array(q.shape.dropLast()), type: .float32)
    try attention(query: qv, key: kv, value: vv, output: o, graph: graph, options: options, logSumExp: lse)
    let gradients = [q.shape, k.shape, v.shape].map { MutableTensorView(allocating: $0, type: .float32) }
    func once() throws -> AttentionWork {
      try attentionGradients(query: qv, key: kv, value: vv, output: o.readOnly, logSumExp: lse.readOnly, gradOutput: dO,
                             gradQuery: gradients[0], gradKey: gradients[1], gradValue: gradients[2], graph: graph, options: options)
    }
    try record(&row, flopsPerEdgeDim: 10, peak: peak, timing: once)
  }
}

/// The benchmark's named masks.
enum BenchPreset {
  /// The preset names (`random-P` takes any probability P).
  static let names = ["window", "causal-window", "dilated", "blocked", "longformer", "bigbird", "causal", "random-P"]

  /// `(display name, specification)` for a preset name or a specification given as is.
  static func specification(_ name: String, tokens: Int) -> (String, String) {
    switch name {
    case "window": return (name, "window:256")
    case "causal-window": return (name, "window:256:causal")
    case "dilated": return (name, "dilated:128:1")
    case "blocked": return (name, "blocked:256:0")
    case "longformer": return (name, "window:256+global:0,1,2,3")
    case "bigbird": return (name, "window:128+global:0,1+random:\(String(format: "%.3g", min(1, 3.0 / Double(tokens)))):7")
    case "causal": return (name, "causal")
    default:
      if name.hasPrefix("random-"), let p = Double(name.dropFirst("random-".count)) {
        return (name, "explicit:random:\(p):11")
      }
      return (name, name)
    }
  }

  static func isExplicit(_ spec: String) -> Bool { spec.hasPrefix("explicit:") }

  /// The graph of a specification; `explicit:SPEC` is materialised by the caller.
  static func graph(_ spec: String, tokens: Int) throws -> Graph {
    try Graph(parsing: isExplicit(spec) ? String(spec.dropFirst("explicit:".count)) : spec)
  }
}

/// The process's peak resident memory, resettable on Linux (`/proc/self/clear_refs`).
enum PeakMemory {
  static func reset() {
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
  }

  /// VmHWM in bytes, or nil where /proc is unavailable.
  static func current() -> Double? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
      let kb = line.split(separator: " ").compactMap { Double($0) }.first
      return kb.map { $0 * 1024 }
    }
    return nil
  }
}
