import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention grad`: exact gradients dQ, dK, dV of attention over a mask, from tensors in files.
struct GradCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "grad",
    abstract: "Compute the gradients dQ, dK, dV of attention over a mask for an output gradient dO.",
    discussion: """
      Q, K, V and dO are .npy or .safetensors (fp32, fp16 or bf16), shaped as for `run` (dO like the output). \
      Writes DIR/dq.npy, DIR/dk.npy and DIR/dv.npy (fp32, the shapes of Q, K and V), and with --sinks \
      DIR/dsinks.npy (fp32 [H_q]), each through a temporary file renamed at the end. The forward is run first (in memory) unless --output and --lse give the output \
      and log-sum-exp of an earlier `run --save-lse` (with the same mask and score modifiers). Deterministic: the \
      same bytes for any --threads. \
      With --json, prints edges (per head), seconds (the backward only) and gflops (10 * edges * d per head).
      """
  )

  @Option(help: "Query tensor (.npy or .safetensors).") var query: String
  @Option(help: "Key tensor.") var key: String
  @Option(help: "Value tensor.") var value: String
  @Option(help: "Gradient of the output, dO (shaped like the output).") var gradOutput: String
  @OptionGroup var masks: HeadMaskOptions
  @Option(help: "Directory for dq.npy, dk.npy, dv.npy and, with --sinks, dsinks.npy (created, with its parents, if missing).") var outputDirectory: String
  @Option(help: "The forward's output O (from `run`); needs --lse.") var output: String?
  @Option(help: "The forward's log-sum-exp (from `run --save-lse`); needs --output.") var lse: String?
  @Option(parsing: .unconditional, help: "Factor on q.k before the softmax (default 1/sqrt(d_k)); must be the forward's.") var scale: Float?
  @OptionGroup var threadOption: ThreadOption
  var threads: Int? { threadOption.threads }
  @Option(help: "dQ of rows with no edges: zero, or nan (as PyTorch gives for fully masked rows).")
  var emptyRows: EmptyRowPolicy = .zero
  @OptionGroup var modifiers: ScoreModifierOptions
  @Flag(help: "Print one JSON object with edges, seconds (backward only) and gflops.") var json = false

  func validate() throws {
    if (output == nil) != (lse == nil) {
      throw ValidationError("--output and --lse go together (the output and log-sum-exp of one `run --save-lse`).")
    }
    if let scale, !scale.isFinite {
      throw ValidationError("--scale must be a finite number, got \(scale).")
    }
  }

  func run() throws {
    let q = try TensorFile.open(query), k = try TensorFile.open(key), v = try TensorFile.open(value)
    let dO = try TensorFile.open(gradOutput)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    // One graph for every head, or with --mask-file one per query head (the per-head forms of the library).
    let headGraphs = try masks.headGraphs(heads: shape.queryHeads, queryCount: shape.queryCount, keyCount: shape.keyCount)
    let graph = try headGraphs.map(Graph.union) ?? Graph(parsing: masks.mask!)
    for graph in headGraphs ?? [graph] { try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount) }
    try AtomicFile.checkDirectoryDestination(outputDirectory, option: "--output-directory")
    let options = try modifiers.applied(to: AttentionOptions(scale: scale, emptyRows: emptyRows, threads: threads),
                                        queryHeads: shape.queryHeads)
    let names = ["dq", "dk", "dv"] + (options.sinks == nil ? [] : ["dsinks"])
    let paths = names.map { outputDirectory + "/" + $0 + ".npy" }
    try AtomicFile.createDirectory(outputDirectory, option: "--output-directory")
    for path in paths { try checkOutputWritable(path) }

    let o: TensorView, logSumExp: TensorView
    var forwardSeconds: Double?
    if let output, let lse {
      o = try TensorFile.open(output)
      logSumExp = try TensorFile.open(lse)
    } else {
      let out = MutableTensorView(allocating: shape.outputShape, type: .float32)
      let rowLSE = MutableTensorView(allocating: Array(q.shape.dropLast()), type: .float32)
      let start = monotonicSeconds()
      if let headGraphs {
        try attention(query: q, key: k, value: v, output: out, graphs: headGraphs, options: options, logSumExp: rowLSE)
      } else {
        try attention(query: q, key: k, value: v, output: out, graph: graph, options: options, logSumExp: rowLSE)
      }
      forwardSeconds = monotonicSeconds() - start
      (o, logSumExp) = (out.readOnly, rowLSE.readOnly)
    }

    let files = try zip(paths, [q.shape, k.shape, v.shape, [shape.queryHeads]]).map { path, shape in
      try TensorFile.create(path, shape: shape, type: .float32, name: "grad")
    }
    let work: AttentionWork
    let start = monotonicSeconds()
    do {
      let (dq, dk, dv) = (files[0].view, files[1].view, files[2].view)
      let dsinks = files.count > 3 ? files[3].view : nil
      if let headGraphs {
        work = try attentionGradients(query: q, key: k, value: v, output: o, logSumExp: logSumExp, gradOutput: dO,
                                      gradQuery: dq, gradKey: dk, gradValue: dv, graphs: headGraphs, options: options,
                                      gradSinks: dsinks)
      } else {
        work = try attentionGradients(query: q, key: k, value: v, output: o, logSumExp: logSumExp, gradOutput: dO,
                                      gradQuery: dq, gradKey: dk, gradValue: dv, graph: graph, options: options,
                                      gradSinks: dsinks)
      }
    } catch {
      for file in files { file.abandon() }
      throw error
    }
    let seconds = monotonicSeconds() - start
    do {
      for file in files { try file.commit() }
    } catch {
      for file in files { file.abandon() }
      throw error
    }
    let edges = work.edges / (shape.batch * shape.queryHeads)
    let flops = backwardUsefulFlops(shape: shape, edges: work.edges)
    if json {
      print(Console.json([
        "edges": edges, "edges_all_heads": work.edges, "seconds": seconds, "gflops": flops / seconds / 1e9,
        "forward_seconds": forwardSeconds ?? .nan, "mask": masks.described(graph, heads: shape.queryHeads), "outputs": paths.joined(separator: ","),
      ]))
    } else {
      print("wrote \(paths.joined(separator: ", ")) (fp32): \(edges) edges per head, backward "
        + "\(Console.format(seconds: seconds)), \(String(format: "%.2f", flops / seconds / 1e9)) useful GFLOP/s"
        + (forwardSeconds.map { ", forward \(Console.format(seconds: $0))" } ?? ""))
    }
  }
}
