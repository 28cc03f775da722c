import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention inspect`: a mask's size without running attention.
struct InspectCommand: ParsableCommand, MaskedCommand {
  static let configuration = CommandConfiguration(
    commandName: "inspect",
    abstract: "Edges, density, degrees and memory of a mask over L tokens (heads and d size the memory estimate).",
    discussion: """
      Edge counts are exact: in closed form for single implicit graphs (any length), row by row for unions and \
      random graphs, with progress on stderr. Masks whose edge count cannot fit in 64 bits are refused.
      """
  )

  @OptionGroup var maskOptions: MaskOptions
  @OptionGroup var shape: ShapeOptions
  @Option(parsing: .unconditional, help: "Key tokens (default: L; differ only for explicit graphs, full, random and the causal kinds, aligned bottom-right).") var keyTokens: Int?
  @Option(help: "Also write the edges as an int64 [E, 2] (row, column) .npy file (for cross-checks; small graphs).")
  var edgesOut: String?
  @Flag(help: "Print one JSON object.") var json = false

  func validate() throws {
    if let keyTokens { try requirePositive(keyTokens, "key-tokens", max: ShapeOptions.maximumTokens) }
    try requirePositive(dim, "dim", max: 65_536)
    try requirePositive(heads, "heads", max: 65_536)
  }

  func run() throws {
    let keys = keyTokens ?? tokens
    let graph = try Graph(parsing: mask, queryCount: tokens, keyCount: keys)
    try graph.validate(queryCount: tokens, keyCount: keys)
    let stats = graph.degreeStatistics(queryCount: tokens, keyCount: keys, progress: InspectCommand.rowProgress(total: tokens))
    let density = Double(stats.edges) / (Double(tokens) * Double(keys))
    let tensorBytes = 4.0 * Double(heads) * Double(dim) * Double(2 * tokens + 2 * keys)
    if let edgesOut {
      guard stats.edges <= 200_000_000 else {
        throw GraphAttentionError(.option, "the graph has \(stats.edges) edges, too many for --edges-out",
                                  fix: "use --edges-out on graphs of at most 200M edges")
      }
      try checkOutputWritable(edgesOut)
      try writeEdges(of: graph, queryCount: tokens, keyCount: keys, edges: stats.edges, to: edgesOut)
    }
    if json {
      print(Console.json([
        "mask": graph.description, "tokens": tokens, "key_tokens": keys, "edges": stats.edges, "density": density,
        "degree_min": stats.min, "degree_mean": stats.mean, "degree_max": stats.max, "empty_rows": stats.emptyRows,
        "tensor_bytes_fp32": tensorBytes,
      ]))
      return
    }
    print("""
      mask          \(graph)
      tokens        \(tokens) queries x \(keys) keys
      edges         \(stats.edges) per head (density \(String(format: "%.3g", density)))
      degree        min \(stats.min), mean \(String(format: "%.2f", stats.mean)), max \(stats.max); \(stats.emptyRows) empty rows
      memory        \(Console.format(bytes: tensorBytes)) for fp32 Q, K, V, O at d=\(dim), \(heads) head(s); the mask itself needs none
      useful work   \(String(format: "%.3g", 4 * Double(stats.edges) * Double(dim) * Double(heads))) FLOP (4 x edges x d x heads)
      """)
  }
}

extension InspectCommand {
  /// Progress of a row-by-row count: a bar on a terminal, else a plain line every 10 s (`Console.progressBar`).
  static func rowProgress(total: Int) -> (Int) -> Void {
    let bar = Console.progressBar("counting rows")
    return { done in bar(Double(done) / Double(max(1, total))) }
  }
}
