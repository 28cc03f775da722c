import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention plan`: the longest context that fits in memory, and the longest that streams from disk.
struct PlanCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "plan",
    abstract: "The longest context that fits in memory, and the longest that can be streamed from disk.",
    discussion: """
      In memory: Q, K, V, O, the graph (explicit graphs only; implicit and random graphs are computed per \
      row) and the engine's working memory (64 MiB + 1 MiB per thread). Streamed: Q, K, V, O are files on \
      disk, processed as `run` does: in chunks of R query rows of every head (R as `run` picks it, about 2^26 \
      edges, unless --chunk-rows is given); the resident set is the engine, the chunk and the K/V rows the \
      chunk reaches, which is bounded independently of L for local masks. The arithmetic is \
      printed line by line. BYTES accept suffixes: 24G, 512MiB, 1.5T (powers of 1024), 100GB (powers of \
      1000), 1e9.
      """
  )

  @Option(help: "Mask specification, e.g. window:256+global:0.") var mask: String
  @Option(parsing: .unconditional, help: "Head dimension d.") var dim: Int = 64
  @Option(parsing: .unconditional, help: "Value head dimension (default: d).") var valueDim: Int?
  @Option(parsing: .unconditional, help: "Query heads H.") var heads: Int = 1
  @Option(parsing: .unconditional, help: "Key/value heads (default: H; fewer for grouped-query attention).") var kvHeads: Int?
  @Option(parsing: .unconditional, help: "Batch B.") var batch: Int = 1
  @Option(help: "Storage type of Q, K, V: f32, f16 or bf16.") var dtype: StorageType = .float32
  @Option(help: "Storage type of O (default: --dtype).") var outputDtype: StorageType?
  @Option(parsing: .unconditional, help: "Memory for the process, BYTES (default: available memory, MemAvailable in /proc/meminfo).")
  var memory: ByteCount?
  @Option(parsing: .unconditional, help: "Free disk for the files, BYTES (default: free space of the current directory's file system).")
  var disk: ByteCount?
  @Option(parsing: .unconditional, help: "Query rows per streamed chunk R (default: what `run` picks for this shape).") var chunkRows: Int?
  @OptionGroup var threadOption: ThreadOption
  var threads: Int? { threadOption.threads }
  @Option(parsing: .unconditional, help: "Also evaluate this context length L.") var tokens: Int?
  @Option(parsing: .unconditional, help: "Sustained useful GFLOP/s, to estimate compute time (e.g. from `graph-attention bench`).") var gflops: Double?
  @Flag(help: "Print one JSON object.") var json = false

  func validate() throws {
    try requirePositive(dim, "dim", max: 1 << 20)
    if let valueDim { try requirePositive(valueDim, "value-dim", max: 1 << 20) }
    try requirePositive(heads, "heads", max: 1 << 20)
    if let kvHeads { try requirePositive(kvHeads, "kv-heads", max: 1 << 20) }
    try requirePositive(batch, "batch", max: 1 << 20)
    if let chunkRows { try requirePositive(chunkRows, "chunk-rows", max: 1 << 32) }
    if let tokens { try requirePositive(tokens, "tokens", max: 1 << 50) }
    if let gflops, !(gflops > 0 && gflops.isFinite) { throw ValidationError("--gflops must be a positive number, got \(gflops).") }
  }

  func run() throws {
    let graph = try Graph(parsing: mask)
    let available = availableMemory()
    let memoryBytes = memory?.bytes ?? available?.bytes ?? physicalMemory()
    let diskSpace = disk == nil ? try DiskSpace(of: ".") : nil
    let diskBytes = disk?.bytes ?? diskSpace?.availableBytes ?? 0
    let request = ContextPlan.Request(
      headDim: dim, valueDim: valueDim, heads: heads, keyValueHeads: kvHeads, batch: batch, storage: dtype,
      output: outputDtype, memoryBytes: memoryBytes, diskBytes: diskBytes,
      threads: threadOption.count, chunkRows: chunkRows)
    let plan = try ContextPlan(graph: graph, request: request)
    if json {
      print(jsonReport(plan))
    } else {
      print(textReport(plan, memorySource: memory != nil ? "--memory" : (available?.source ?? "physical memory"),
                       diskSource: diskSpace.map { "free on \($0.mountPoint), the file system of ." } ?? "--disk"))
    }
  }

  // MARK: - Reports

  private func textReport(_ plan: ContextPlan, memorySource: String, diskSource: String) -> String {
    let r = plan.request
    let b = { (bytes: Int) in Console.format(bytes: Double(bytes)) }
    var lines: [String] = []
    func line(_ label: String, _ text: String) { lines.append(label.padding(toLength: 12, withPad: " ", startingAt: 0) + text) }

    line("plan", "\(plan.graph), d = \(r.headDim), d_v = \(r.valueDim), \(r.heads) head\(r.heads == 1 ? "" : "s") (\(r.keyValueHeads) K/V), batch \(r.batch); "
      + "Q, K, V \(r.storage.shortName), O \(r.output.shortName)")
    line("per token", plan.tokenTerms.map { "\($0.label) = \($0.bytes) B" }.joined(separator: " + ") + " = \(plan.bytesPerToken) B")
    line("memory", "\(b(r.memoryBytes)) (\(memorySource))")
    line("engine", "64 MiB + \(r.threads) threads x 1 MiB = \(b(plan.engineBytes))")
    let graphBytes = plan.graphBytes
    line("graph", graphBytes == 0 ? "0 B: implicit (and random) components are computed per row, nothing is stored"
                                  : "\(b(graphBytes)) for the explicit pattern: 8·(L_q+1) + 4·E")
    if let fixed = plan.fixedLength {
      line("length", "fixed by the explicit graph: L_q = \(groupedDigits(fixed.queries)), L_k = \(groupedDigits(fixed.keys))")
    }
    lines.append("")
    line("in memory", "Q, K, V, O, graph and engine in RAM")
    if let fixed = plan.fixedLength {
      line("", "needs \(b(plan.memoryBytes(tokens: fixed.queries))) of \(b(r.memoryBytes)): "
        + (plan.maxTokensInMemory > 0 ? "fits" : "does not fit"))
    } else {
      line("", "L <= (\(b(r.memoryBytes)) - \(b(plan.engineBytes)) engine) / \(plan.bytesPerToken) B "
        + "= \(groupedDigits(plan.maxTokensInMemory)) tokens")
    }
    appendWork(&lines, plan, tokens: plan.maxTokensInMemory)
    lines.append("")
    line("streamed", "Q, K, V, O as files; chunks of R = \(groupedDigits(plan.chunkRows(tokens: max(plan.maxTokensStreamed, 1)))) query rows of every head (as run), "
      + "pages behind dropped")
    line("  disk", "\(b(r.diskBytes)) (\(diskSource))")
    if let fixed = plan.fixedLength {
      line("", "needs \(b(plan.diskBytes(tokens: fixed.queries))): " + (plan.maxTokensOnDisk > 0 ? "fits" : "does not fit"))
    } else {
      line("", "L <= (\(b(r.diskBytes)) - 16 KiB headers) / \(plan.bytesPerToken) B = \(groupedDigits(plan.maxTokensOnDisk)) tokens")
      let outputPerToken = plan.tokenTerms.last?.bytes ?? 1
      line("", "(with Q, K, V already on disk, O alone: L <= \(b(r.diskBytes)) / \(outputPerToken) B "
        + "= \(groupedDigits(r.diskBytes / max(outputPerToken, 1))) tokens)")
    }
    let at = plan.maxTokensStreamed > 0 ? plan.maxTokensStreamed : max(plan.maxTokensOnDisk, 1)
    let terms = plan.residentTerms(tokens: at)
    line("  resident", "at L = \(groupedDigits(at)):")
    for term in terms { line("", "  \(b(term.bytes).padding(toLength: 11, withPad: " ", startingAt: 0)) \(term.label)") }
    let resident = terms.reduce(0) { $0 + $1.bytes }
    line("", "= \(b(resident)) resident " + (resident <= r.memoryBytes ? "<=" : ">") + " \(b(r.memoryBytes)) memory")
    line("  result", "L <= \(groupedDigits(plan.maxTokensStreamed)) tokens (limited by \(plan.streamingLimit.rawValue))")
    appendWork(&lines, plan, tokens: plan.maxTokensStreamed)

    if let tokens {
      lines.append("")
      let needMemory = plan.memoryBytes(tokens: tokens), needDisk = plan.diskBytes(tokens: tokens)
      let needResident = plan.residentTerms(tokens: tokens).reduce(0) { $0 + $1.bytes }
      lines.append("at L = \(groupedDigits(tokens)) tokens:")
      line("  in memory", "needs \(b(needMemory)) of \(b(r.memoryBytes)): " + (needMemory <= r.memoryBytes ? "fits" : "does not fit"))
      line("  streamed", "needs \(b(needDisk)) of disk (\(b(r.diskBytes)) free) and \(b(needResident)) resident: "
        + (needDisk <= r.diskBytes && needResident <= r.memoryBytes ? "fits" : "does not fit"))
      appendWork(&lines, plan, tokens: tokens)
    }
    return lines.joined(separator: "\n")
  }

  private func appendWork(_ lines: inout [String], _ plan: ContextPlan, tokens: Int) {
    guard tokens > 0 else { return }
    let (edges, upper) = plan.edgesPerHead(tokens: tokens)
    var text = "work at that L: \(upper ? "<= " : "")\(String(format: "%.3g", edges)) edges per head, "
      + "\(String(format: "%.3g", plan.usefulFlops(tokens: tokens))) useful FLOP"
    if let gflops { text += ", about \(Console.format(seconds: plan.usefulFlops(tokens: tokens) / (gflops * 1e9))) at \(gflops) GFLOP/s" }
    lines.append(String(repeating: " ", count: 12) + text)
  }

  private func jsonReport(_ plan: ContextPlan) -> String {
    let r = plan.request
    var fields: [(String, String)] = [
      ("mask", jsonQuoted(plan.graph.description)), ("head_dim", "\(r.headDim)"), ("value_dim", "\(r.valueDim)"),
      ("heads", "\(r.heads)"), ("kv_heads", "\(r.keyValueHeads)"), ("batch", "\(r.batch)"),
      ("dtype", jsonQuoted(r.storage.shortName)), ("output_dtype", jsonQuoted(r.output.shortName)),
      ("memory_bytes", "\(r.memoryBytes)"), ("disk_bytes", "\(r.diskBytes)"), ("threads", "\(r.threads)"),
      ("chunk_rows", "\(plan.chunkRows(tokens: max(plan.maxTokensStreamed, 1)))"),
      ("bytes_per_token", "\(plan.bytesPerToken)"),
      ("bytes_per_token_qkvo", "[" + plan.tokenTerms.map { "\($0.bytes)" }.joined(separator: ",") + "]"),
      ("engine_bytes", "\(plan.engineBytes)"), ("graph_bytes", "\(plan.graphBytes)"),
      ("max_tokens_in_memory", "\(plan.maxTokensInMemory)"), ("max_tokens_on_disk", "\(plan.maxTokensOnDisk)"),
      ("max_tokens_streamed", "\(plan.maxTokensStreamed)"), ("streaming_limit", jsonQuoted(plan.streamingLimit.rawValue)),
    ]
    let at = max(plan.maxTokensStreamed, 1)
    let terms = plan.residentTerms(tokens: at)
    fields.append(("resident_bytes_at_max", "\(terms.reduce(0) { $0 + $1.bytes })"))
    fields.append(("resident_terms", "[" + terms.map { "{\"label\":\(jsonQuoted($0.label)),\"bytes\":\($0.bytes)}" }.joined(separator: ",") + "]"))
    if let tokens {
      let needResident = plan.residentTerms(tokens: tokens).reduce(0) { $0 + $1.bytes }
      fields += [
        ("tokens", "\(tokens)"), ("memory_bytes_needed", "\(plan.memoryBytes(tokens: tokens))"),
        ("disk_bytes_needed", "\(plan.diskBytes(tokens: tokens))"), ("resident_bytes_needed", "\(needResident)"),
        ("fits_in_memory", "\(plan.memoryBytes(tokens: tokens) <= r.memoryBytes)"),
        ("fits_streamed", "\(plan.diskBytes(tokens: tokens) <= r.diskBytes && needResident <= r.memoryBytes)"),
        ("edges_per_head", "\(plan.edgesPerHead(tokens: tokens).edges)"), ("useful_flops", "\(plan.usefulFlops(tokens: tokens))"),
      ]
    }
    return "{" + fields.map { "\(jsonQuoted($0.0)):\($0.1)" }.joined(separator: ",") + "}"
  }

  /// Memory a new process can take without swapping: the kernel's `MemAvailable` (free memory plus
  /// reclaimable page cache, less reserves). Physical memory overstates it by what the system and other
  /// processes hold, and a plan at that length would be killed for memory.
  private func availableMemory() -> (bytes: Int, source: String)? {
    guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
      let fields = line.split(separator: " ")
      guard fields.count >= 2, let kib = Int(fields[1]) else { return nil }
      return (kib * 1024, "available now: MemAvailable of /proc/meminfo")
    }
    return nil
  }

  private func physicalMemory() -> Int {
    Int(clamping: ProcessInfo.processInfo.physicalMemory)
  }
}
