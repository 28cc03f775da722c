import ArgumentParser
import Foundation
import GraphAttention

/// One peer's measurement, as printed by Benchmarks/peers/torch_peers.py (one JSON object per line).
struct PeerResult: Codable {
  var peer: String
  var status: String
  var medianSeconds: Double?
  var reason: String?

  enum CodingKeys: String, CodingKey {
    case peer, status, reason
    case medianSeconds = "median_seconds"
  }
}

/// Runs the PyTorch peer script on the same mask and shape, and says why when it cannot.
struct PeerRunner {
  var python: String
  var script: String

  /// Throws, saying why and how to fix it, unless the peer script and a Python that imports torch exist.
  func checkAvailable() throws {
    guard FileManager.default.isExecutableFile(atPath: python) else {
      throw ValidationError("--peers needs Python with PyTorch, but \(python) is not an executable: run Benchmarks/peers/setup.sh, "
        + "or pass --peer-python PATH (or drop --peers).")
    }
    guard FileManager.default.fileExists(atPath: script) else {
      throw ValidationError("--peers: the peer script \(script) does not exist; run from the package root or pass --peer-script PATH.")
    }
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: python)
    probe.arguments = ["-c", "import torch"]
    probe.standardOutput = FileHandle.nullDevice
    let errors = Pipe()
    probe.standardError = errors
    do { try probe.run() } catch {
      throw ValidationError("--peers: cannot start \(python): \(error.localizedDescription).")
    }
    let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    probe.waitUntilExit()
    guard probe.terminationStatus == 0 else {
      let reason = text.split(separator: "\n").last.map(String.init) ?? "exit status \(probe.terminationStatus)"
      throw ValidationError("--peers needs PyTorch, but \(python) cannot import torch (\(reason)): run Benchmarks/peers/setup.sh, "
        + "or pass --peer-python PATH (or drop --peers).")
    }
  }

  /// Each peer's median time on this mask and shape; with `backward`, of its backward alone (the forward untimed).
  func run(spec: String, tokens: Int, dim: Int, heads: Int, threads: Int, repeats: Int, backward: Bool = false) -> [PeerResult] {
    guard FileManager.default.isExecutableFile(atPath: python), FileManager.default.fileExists(atPath: script) else {
      return [PeerResult(peer: "all", status: "unavailable", reason: "no \(python) or \(script): run Benchmarks/peers/setup.sh")]
    }
    var mask = spec
    var extra: [String] = []
    var edgesFile: String?
    if BenchPreset.isExplicit(spec) || spec.contains("random:") {
      // The peers cannot reproduce our random generator: hand them the edges.
      let path = NSTemporaryDirectory() + "graph-attention-peer-edges-\(getpid()).npy"
      do {
        try writePeerEdges(spec: spec, tokens: tokens, to: path)
        edgesFile = path
        extra = ["--edges", path]
        if BenchPreset.isExplicit(spec) { mask = String(spec.dropFirst("explicit:".count)) }
      } catch {
        return [PeerResult(peer: "all", status: "error", reason: "could not write the edges for the peers: \(error)")]
      }
    }
    defer { if let edgesFile { try? FileManager.default.removeItem(atPath: edgesFile) } }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = [script, "--mask", mask, "--tokens", "\(tokens)", "--dim", "\(dim)", "--heads", "\(heads)",
                         "--threads", "\(threads)", "--repeats", "\(repeats)", "--flex-mask", "compiled"] + extra
      + (backward ? ["--backward"] : [])
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.standardError
    do { try process.run() } catch {
      return [PeerResult(peer: "all", status: "error", reason: "could not start \(python): \(error)")]
    }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let decoder = JSONDecoder()
    return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
      try? decoder.decode(PeerResult.self, from: Data($0.utf8))
    }
  }

  private func writePeerEdges(spec: String, tokens: Int, to path: String) throws {
    let graph = try BenchPreset.graph(spec, tokens: tokens)
    let edges = graph.edgeCount(queryCount: tokens, keyCount: tokens)
    guard edges <= 100_000_000 else {
      throw GraphAttentionError(.resource, "\(edges) edges are too many to hand to the peers", fix: "use fewer tokens")
    }
    try writeEdges(of: graph, queryCount: tokens, keyCount: tokens, edges: edges, to: path)
  }
}
