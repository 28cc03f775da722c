import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention time`: time one mask on random inputs on a device (release builds only); `bench` sweeps.
struct TimeCommand: ParsableCommand, MaskedCommand {
  static let configuration = CommandConfiguration(
    commandName: "time",
    abstract: "Time attention of a mask on random inputs, on the CPU or a CUDA GPU (release builds only).",
    discussion: """
      Runs --warmup untimed calls, then --repeat timed ones, on random Q, K, V of shape [B, H, L, D] (K and V with \
      --kv-heads heads). Reports the minimum and median wall time per call (for CUDA including the copies to and \
      from the GPU, not the first-use compilation, which the warm-up absorbs) and, for CUDA, the kernel time from \
      launch to completion. Useful GFLOP/s count 2 * edges * (d_k + d_v) per head over the kernel (CUDA) or call \
      (CPU) time. With --dtype f16 or bf16 on the CPU, Q, K, V and O are held in memory in that type, as the \
      in-memory column of `plan` assumes, and the peak resident memory is printed too; on CUDA --dtype is --storage.
      """
  )

  @OptionGroup var maskOptions: MaskOptions
  @OptionGroup var shape: ShapeOptions
  @Option(parsing: .unconditional, help: "Batch size.") var batch: Int = 1
  @Option(parsing: .unconditional, help: "Key/value heads (default: --heads); must divide --heads.") var kvHeads: Int?
  @Option(help: "Storage type of Q, K, V: f32, f16 or bf16 (arithmetic is fp32). On the CPU, Q, K, V and O are held in memory in this type; with --device cuda, the same as --storage.")
  var dtype: StorageType = .float32
  @Option(parsing: .unconditional, help: "Untimed calls first.") var warmup: Int = 2
  @Option(name: .customLong("repeat"), parsing: .unconditional, help: "Timed calls.") var repetitions: Int = 10
  @OptionGroup var compute: ComputeOptions
  @OptionGroup var modifiers: ScoreModifierOptions
  @Flag(help: "Print one JSON object.") var json = false

  func validate() throws {
    #if DEBUG
    throw ValidationError("time refuses debug builds (timings would mislead): use swift build -c release.")
    #else
    try requirePositive(tokens, "tokens", max: 1 << 31)
    try requirePositive(batch, "batch", max: 65_536)
    try requirePositive(heads, "heads", max: 65_536)
    try requirePositive(dim, "dim", max: 65_536)
    try requirePositive(repetitions, "repeat", max: 100_000)
    guard warmup >= 0 else { throw ValidationError("--warmup must be >= 0.") }
    if let kvHeads {
      try requirePositive(kvHeads, "kv-heads", max: 65_536)
      guard heads % kvHeads == 0 else { throw ValidationError("--kv-heads \(kvHeads) must divide --heads \(heads).") }
    }
    if dtype != .float32, compute.device != .cpu, compute.storage != .float32, compute.storage != dtype {
      throw ValidationError("--dtype \(dtype.shortName) and --storage \(compute.storage.shortName) disagree; give one of them.")
    }
    #endif
  }

  func run() throws {
    let graph = try Graph(parsing: mask)
    try graph.validate(queryCount: tokens, keyCount: tokens)
    if dtype != .float32, compute.device == .cpu { return try runInMemoryViews(graph) }
    let kv = kvHeads ?? heads
    let q = Tensor.random(shape: [batch, heads, tokens, dim], seed: 1)
    let k = Tensor.random(shape: [batch, kv, tokens, dim], seed: 2)
    let v = Tensor.random(shape: [batch, kv, tokens, dim], seed: 3)
    var options = try modifiers.applied(to: compute.attentionOptions(), queryHeads: heads)
    if case let .cuda(ordinal, .float32, tensorCores) = options.device, dtype != .float32 {
      options.device = .cuda(ordinal: ordinal, storage: dtype, tensorCores: tensorCores)
    }
    let device = options.device
    let shapes = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let (queryView, keyView, valueView) = (TensorView(q), TensorView(k), TensorView(v))
    let output = MutableTensorView(allocating: shapes.outputShape, type: .float32)
    var walls: [Double] = []
    var kernels: [Double] = []
    var idle: [Double] = []
    var work = AttentionWork(edges: 0, scoresComputed: 0)
    for iteration in 0..<(warmup + repetitions) {
      let start = monotonicSeconds()
      work = try attention(query: queryView, key: keyView, value: valueView, output: output, graph: graph, options: options)
      let wall = monotonicSeconds() - start
      if iteration >= warmup {
        walls.append(wall)
        if let kernel = work.kernelSeconds { kernels.append(kernel) }
        if let fraction = work.idleThreadFraction { idle.append(fraction) }
      }
    }
    let edges = graph.edgeCount(queryCount: tokens, keyCount: tokens)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    func median(_ x: [Double]) -> Double { let s = x.sorted(); return s.isEmpty ? .nan : s[s.count / 2] }
    let timed = kernels.isEmpty ? walls : kernels
    let gflops = shape.usefulFlops(edges: edges) / median(timed) / 1e9
    let build = device == .cpu ? "" : (CUDABackend.build(ofDevice: compute.cudaDevice) ?? "")
    if json {
      print(Console.json([
        "mask": graph.description, "tokens": tokens, "batch": batch, "heads": heads, "kv_heads": kv, "dim": dim,
        "dtype": dtype.shortName, "device": device.description,
        "kernel": device == .cpu ? try compute.kernel.resolved().rawValue : "cuda", "edges": edges,
        "scores_per_edge": Double(work.scoresComputed) / Double(max(1, work.edges)), "repeat": repetitions,
        "seconds_min": walls.min() ?? .nan, "seconds_median": median(walls),
        "kernel_seconds_min": kernels.min() ?? .nan, "kernel_seconds_median": median(kernels),
        "gflops": gflops, "build": build, "idle_thread_fraction_median": median(idle),
      ]))
    } else {
      print("""
        mask             \(graph) (\(edges) edges per head)
        shape            B=\(batch) H=\(heads) H_kv=\(kv) L=\(tokens) d=\(dim) on \(device)\(build.isEmpty ? "" : ", \(build)")
        call             min \(Console.format(seconds: walls.min() ?? .nan)), median \(Console.format(seconds: median(walls))) over \(repetitions)
        """ + (kernels.isEmpty ? "" : "\nkernel           min \(Console.format(seconds: kernels.min()!)), median \(Console.format(seconds: median(kernels)))")
        + "\nuseful GFLOP/s   \(String(format: "%.1f", gflops))"
        + (idle.isEmpty ? "" : "\nthreads idle     \(String(format: "%.1f", 100 * median(idle)))% of their time (median; waiting to start, and at the end for the last items)"))
    }
  }

  /// Q, K, V and O as heap views of `dtype`: the in-memory case of `plan` (nothing on disk).
  private func runInMemoryViews(_ graph: Graph) throws {
    let kv = kvHeads ?? heads
    let start = monotonicSeconds()
    let q = MutableTensorView(allocating: [batch, heads, tokens, dim], type: dtype)
    let k = MutableTensorView(allocating: [batch, kv, tokens, dim], type: dtype)
    let v = MutableTensorView(allocating: [batch, kv, tokens, dim], type: dtype)
    let o = MutableTensorView(allocating: [batch, heads, tokens, dim], type: dtype)
    for (stream, view) in [q, k, v].enumerated() {
      RandomTensorGenerator(seed: 1, stream: stream).fill(view, threads: compute.threads)
    }
    let fillSeconds = monotonicSeconds() - start
    let options = try modifiers.applied(to: compute.attentionOptions(), queryHeads: heads)
    var walls: [Double] = []
    var work = AttentionWork(edges: 0, scoresComputed: 0)
    for iteration in 0..<(warmup + repetitions) {
      let begin = monotonicSeconds()
      work = try attention(query: q.readOnly, key: k.readOnly, value: v.readOnly, output: o, graph: graph, options: options)
      if iteration >= warmup { walls.append(monotonicSeconds() - begin) }
    }
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let edges = work.edges / (batch * heads)
    let sorted = walls.sorted()
    let median = sorted[sorted.count / 2]
    let gflops = shape.usefulFlops(edges: edges) / median / 1e9
    let peak = Int(PeakMemory.current() ?? 0)
    if json {
      print(Console.json([
        "mask": graph.description, "tokens": tokens, "batch": batch, "heads": heads, "kv_heads": kv, "dim": dim,
        "dtype": dtype.shortName, "device": "cpu", "kernel": try compute.kernel.resolved().rawValue, "edges": edges,
        "scores_per_edge": Double(work.scoresComputed) / Double(max(1, work.edges)), "repeat": repetitions,
        "seconds_min": sorted[0], "seconds_median": median, "gflops": gflops, "fill_seconds": fillSeconds,
        "tensor_bytes": q.byteCount + k.byteCount + v.byteCount + o.byteCount, "peak_resident_bytes": peak,
      ]))
    } else {
      print("""
        mask             \(graph) (\(edges) edges per head)
        shape            B=\(batch) H=\(heads) H_kv=\(kv) L=\(tokens) d=\(dim), Q K V O \(dtype.shortName) in memory
        kernel           \(try compute.kernel.resolved().rawValue)
        call             min \(Console.format(seconds: sorted[0])), median \(Console.format(seconds: median)) over \(repetitions)
        useful GFLOP/s   \(String(format: "%.1f", gflops))
        memory           tensors \(Console.format(bytes: Double(q.byteCount + k.byteCount + v.byteCount + o.byteCount))), peak resident \(Console.format(bytes: Double(peak)))
        """)
    }
  }
}
