import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention` (or `graph-attention demo`): the main job on built-in defaults.
struct DemoCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "demo",
    abstract: "BigBird attention over a million tokens on random inputs, checked against the exact reference.",
    discussion: """
      Defaults: 1,048,576 tokens, 4 heads, d = 64, mask window:64+global:0,1+random:0.000004:42 (BigBird: a \
      sliding window, two global tokens, about 4 random keys per row). Prints the time, the useful GFLOP/s \
      (4 x edges x d per head) and the largest relative error over sampled rows against float64.
      """
  )

  @Option(parsing: .unconditional, help: "Sequence length.") var tokens = 1 << 20
  @Option(parsing: .unconditional, help: "Heads.") var heads = 4
  @Option(parsing: .unconditional, help: "Head dimension.") var dim = 64
  @Option(help: "Mask specification.") var mask = "window:64+global:0,1+random:0.000004:42"
  @Option(parsing: .unconditional, help: "Rows per head checked against the float64 reference.") var sample = 16
  @OptionGroup var threadOption: ThreadOption
  var threads: Int? { threadOption.threads }

  func validate() throws {
    try requirePositive(tokens, "tokens", max: 1 << 31)
    try requirePositive(heads, "heads", max: 4096)
    try requirePositive(dim, "dim", max: 65_536)
    try requirePositive(sample, "sample")
  }

  func run() throws {
    let graph = try Graph(parsing: mask)
    try graph.validate(queryCount: tokens, keyCount: tokens)
    let shape = [heads, tokens, dim]
    let bytes = 4.0 * Double(4 * heads * tokens * dim)
    Console.note("graph-attention demo: \(graph) over \(tokens) tokens, \(heads) heads, d = \(dim) "
      + "(\(Console.format(bytes: bytes)) of fp32 Q, K, V, O)")
    Console.note("generating random inputs...")
    let q = Tensor.random(shape: shape, seed: 1)
    let k = Tensor.random(shape: shape, seed: 2)
    let v = Tensor.random(shape: shape, seed: 3)
    let edges = graph.edgeCount(queryCount: tokens, keyCount: tokens)
    Console.note("graph: \(edges) edges per head (\(String(format: "%.1f", Double(edges) / Double(tokens))) keys per query)")

    let progress = Console.progressBar("attention")
    let start = monotonicSeconds()
    let o = try attention(query: q, key: k, value: v, graph: graph,
                          options: AttentionOptions(threads: threads, progress: progress))
    let seconds = monotonicSeconds() - start
    let problem = try AttentionShape(query: shape, key: shape, value: shape)
    let gflops = problem.usefulFlops(edges: edges) / seconds / 1e9

    let sampled = (0..<heads).flatMap { head in
      (0..<min(sample, tokens)).map { s in
        (head: head, row: [0, 1, tokens - 1].indices.contains(s) ? [0, 1, tokens - 1][s] : (s * 7919 * 104_729) % tokens)
      }
    }
    let worst = ReferenceAttention.check(rows: sampled, output: { o.scalars[$0] }, shape: problem, options: AttentionOptions()) {
      ReferenceAttention.row($1, head: $0, query: q, key: k, value: v, shape: problem, graph: graph, scale: 1 / Double(dim).squareRoot())
    }.worstError
    let checked = heads * min(sample, tokens)
    print("""
      mask             \(graph)
      tokens x heads   \(tokens) x \(heads), d = \(dim)
      edges            \(edges) per head
      attention time   \(Console.format(seconds: seconds))
      useful GFLOP/s   \(String(format: "%.1f", gflops))  (4 x edges x d x heads / time)
      check            max relative error \(String(format: "%.2e", worst)) over \(checked) sampled rows vs float64 \
      (\(worst <= 1e-5 ? "PASS" : "FAIL"))
      """)
    if !(worst <= 1e-5) { throw ExitCode(1) }
  }
}
