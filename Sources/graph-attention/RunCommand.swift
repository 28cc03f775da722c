import ArgumentParser
import GraphAttention

/// `graph-attention run`: attention of .npy tensors over a mask, written to an .npy file.
struct RunCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract: "Compute attention of Q, K, V (.npy, fp32 or fp16) over a mask and write O (.npy, fp32).",
    discussion: """
      Q is [L_q, d_k], [H, L_q, d_k] or [B, H, L_q, d_k]; K and V have the same rank, H_kv heads dividing H
      (grouped-query attention), L_k tokens, and V's last dimension d_v. O has Q's leading shape and d_v.
      The output is written to a temporary file and renamed, so a failed run leaves an existing file as it was.
      """
  )

  @Option(help: "Query tensor (.npy).") var query: String
  @Option(help: "Key tensor (.npy).") var key: String
  @Option(help: "Value tensor (.npy).") var value: String
  @Option(help: "Mask specification, e.g. window:256+global:0.") var mask: String
  @Option(help: "Output tensor (.npy, fp32).") var output: String
  @OptionGroup var compute: ComputeOptions
  @Flag(help: "Print one JSON object with edges, seconds (attention only) and gflops.") var json = false

  func run() throws {
    let graph = try Graph(parsing: mask)
    let q = try Tensor(npyFile: query, name: "query")
    let k = try Tensor(npyFile: key, name: "key")
    let v = try Tensor(npyFile: value, name: "value")
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount)
    try checkOutputWritable(output)

    let start = monotonicSeconds()
    let o = try attention(query: q, key: k, value: v, graph: graph,
                          options: compute.attentionOptions(progress: json ? nil : Console.progressBar("attention")),
                          device: compute.attentionDevice)
    let seconds = monotonicSeconds() - start
    try o.write(npyFile: output)

    let edges = graph.edgeCount(queryCount: shape.queryCount, keyCount: shape.keyCount)
    let flops = shape.usefulFlops(edges: edges)
    if json {
      print(Console.json([
        "edges": edges, "edges_all_heads": edges * shape.batch * shape.queryHeads, "seconds": seconds,
        "gflops": flops / seconds / 1e9, "output_shape": o.shape, "mask": graph.description,
      ]))
    } else {
      print("wrote \(output) \(o.shape): \(edges) edges per head, \(Console.format(seconds: seconds)), "
        + "\(String(format: "%.2f", flops / seconds / 1e9)) useful GFLOP/s")
    }
  }
}
