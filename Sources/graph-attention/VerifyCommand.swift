import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention verify`: the engine against the float64 reference on random inputs.
struct VerifyCommand: ParsableCommand, ShapedCommand {
  static let configuration = CommandConfiguration(
    commandName: "verify",
    abstract: "Check the engine against the float64 reference on fresh random inputs.",
    discussion: """
      Runs the mask on random Q, K, V of shape [H, L, D], compares every row (or --sample rows) with a plain \
      float64 implementation that shares no code with the kernels, prints the largest relative error, and \
      exits 1 if it is above the tolerance. Relative error of a row: max |o - r| / max_c sum_j p_j |v_jc|.
      """
  )

  @OptionGroup var masks: HeadMaskOptions
  @OptionGroup var shape: ShapeOptions
  @Option(parsing: .unconditional, help: "Check only this many rows per head, evenly spread (default: every row).") var sample: Int?
  @Option(parsing: .unconditional, help: "Seed of the random inputs (Q, K and V draw independent streams from it).") var seed: UInt64 = 1
  @Option(parsing: .unconditional, help: "Largest relative error that passes.") var tolerance: Double = 1e-5
  @Option(parsing: .unconditional, help: "When stderr is not a terminal: seconds between plain progress lines (percent, ETA).")
  var progressSeconds = 10.0
  @OptionGroup var compute: ComputeOptions
  @OptionGroup var modifiers: ScoreModifierOptions
  @Flag(help: "Accumulate the mask's '+' components one at a time through AttentionState (each skipping the edges of those before it) instead of in one call.")
  var compose = false

  func validate() throws {
    try requirePositive(tokens, "tokens", max: 1 << 31)
    try requirePositive(dim, "dim", max: 65_536)
    try requirePositive(heads, "heads", max: 65_536)
    if let sample { try requirePositive(sample, "sample") }
    guard tolerance > 0 else { throw ValidationError("--tolerance must be positive.") }
    guard progressSeconds >= 0, progressSeconds.isFinite else { throw ValidationError("--progress-seconds must be >= 0.") }
  }

  func run() throws {
    let one = try masks.mask.map { try Graph(parsing: $0, queryCount: tokens, keyCount: tokens) }
    let graphs = try one.map { graph in (0..<heads).map { graph.forHead($0) } }
      ?? masks.headGraphs(heads: heads, queryCount: tokens, keyCount: tokens)!
    let perHead = one?.variesPerHead ?? true
    for graph in graphs {
      try graph.validate(queryCount: tokens, keyCount: tokens)
      try VerifyCommand.checkSize(graph: graph, tokens: tokens, dim: dim, heads: perHead ? 1 : heads)
    }
    if perHead && (compose || compute.device != .cpu) {
      throw GraphAttentionError(.option, "per-head graphs run on the CPU in one call", fix: "drop --compose and --device")
    }
    let graph = one ?? graphs[0]
    let shape = [heads, tokens, dim]
    let q = Tensor.random(shape: shape, seed: seed)
    let k = Tensor.random(shape: shape, seed: seed &+ 1)
    let v = Tensor.random(shape: shape, seed: seed &+ 2)
    let output: Tensor
    let options = try modifiers.applied(to: compute.attentionOptions(progress: compose ? nil : Console.progressBar("attention", plainLineSeconds: progressSeconds)),
                                        queryHeads: heads)
    if compose {
      // Softcap and ALiBi apply per accumulation; a sink joins each row once, at the output.
      var accumulation = options
      accumulation.sinks = nil
      var state = try AttentionState(query: q, value: v)
      for part in graph.operands {
        try state.accumulate(query: q, key: k, value: v, graph: part, options: accumulation)
      }
      output = try options.sinks.map { try state.output(sinks: $0) } ?? state.output(emptyRows: compute.emptyRows)
    } else if perHead {
      output = try attention(query: q, key: k, value: v, graphs: graphs, options: options)
    } else {
      output = try attention(query: q, key: k, value: v, graph: graph, options: options)
    }
    let problem = try AttentionShape(query: shape, key: shape, value: shape)
    let scale = Double(compute.scale ?? 1 / Float(dim).squareRoot())
    let rows = sample.map { min($0, tokens) } ?? tokens
    let sampled = (0..<heads).flatMap { head in
      (0..<rows).map { s in (head: head, row: rows == tokens ? s : (rows == 1 ? 0 : s * (tokens - 1) / (rows - 1))) }
    }
    let check = ReferenceAttention.check(rows: sampled, output: { output.scalars[$0] }, shape: problem, options: options) {
      ReferenceAttention.row($1, head: $0, query: q, key: k, value: v, shape: problem, graph: graphs[$0 % heads], scale: scale,
                             options: options)
    }
    let (worst, worstAt) = (check.worstError, (check.head, check.row))
    let verdict = worst <= tolerance ? "PASS" : "FAIL"
    let kernelNote = compute.device == .cpu ? "; \(try compute.kernel.resolved().rawValue) kernel" : ""
    let described = masks.described(graph, heads: heads)
    print("\(verdict) \(described) \(compose ? "composed " : "")\(compute.device == .cpu ? "" : "on \(compute.attentionDevice) ")L=\(tokens) d=\(dim) heads=\(heads): max relative error \(String(format: "%.3e", worst)) "
      + "(head \(worstAt.0), row \(worstAt.1); \(rows * heads) rows checked, tolerance \(tolerance)\(kernelNote))")
    if worst > tolerance || worst.isNaN { throw ExitCode(1) }
  }
}

extension VerifyCommand {
  /// The most edges x heads `verify` takes on: about a minute of attention on two cores at d = 64.
  static let maximumEdgeHeads = 1 << 34
  /// The most bytes of Q, K, V and O (fp32) `verify` holds in memory.
  static let maximumTensorBytes = 4 << 30

  /// Refuses sizes that would run for hours or exhaust memory (it computes everything in memory, then
  /// checks rows against the float64 reference), saying what to use instead.
  static func checkSize(graph: Graph, tokens: Int, dim: Int, heads: Int) throws {
    let edges = Double(graph.estimatedEdgeCount(queryCount: tokens, keyCount: tokens)) * Double(heads)
    if edges > Double(maximumEdgeHeads) {
      throw GraphAttentionError(
        .option, "verify checks at most \(maximumEdgeHeads) edges x heads, but \(graph) over \(tokens) tokens and \(heads) head(s) "
          + "has about \(String(format: "%.3g", edges))",
        fix: "use fewer --tokens or heads (verify is a correctness check), or `run` on files for large inputs")
    }
    let bytes = 16.0 * Double(heads) * Double(tokens) * Double(dim)
    if bytes > Double(maximumTensorBytes) {
      throw GraphAttentionError(
        .option, "verify holds fp32 Q, K, V and O in memory: \(Console.format(bytes: bytes)), more than its limit of \(Console.format(bytes: Double(maximumTensorBytes)))",
        fix: "use fewer --tokens, heads or a smaller --dim, or `run` on files for large inputs")
    }
  }
}
