import ArgumentParser
import Foundation
import GraphAttention

/// The results of a benchmark sweep and their renderings: a table for people, JSON and CSV for machines,
/// and an SVG plot of time and percent of peak against length.
struct BenchReport: Encodable {
  /// One (mask, length, dimension, heads) measurement.
  struct Row: Encodable {
    var mask: String
    var spec: String
    var tokens: Int
    var dim: Int
    var heads: Int
    var edges: Int?
    var medianSeconds: Double?
    var minSeconds: Double?
    var gflops: Double?
    var percentOfPeak: Double?
    var edgesPerSecond: Double?
    var scoresPerEdge: Double?
    var peakResidentBytes: Double?
    var tensorBytes: Double?
    var skipped: String?
    var peers: [PeerResult] = []

    init(mask: String, spec: String, tokens: Int, dim: Int, heads: Int) {
      self.mask = mask
      self.spec = spec
      self.tokens = tokens
      self.dim = dim
      self.heads = heads
    }

    static let peerNames = ["sdpa_masked", "sdpa_dense", "flex"]

    static func tableHeader(peers: Bool) -> String {
      var header = pad("mask", 14) + pad("tokens", 9, right: true) + pad("d", 5, right: true) + pad("H", 3, right: true)
        + pad("edges/head", 14, right: true) + pad("median s", 11, right: true) + pad("GFLOP/s", 9, right: true)
        + pad("% peak", 8, right: true) + pad("Gedge/s", 9, right: true) + pad("peak MiB", 10, right: true)
        + pad("in+out MiB", 11, right: true) + pad("scores/edge", 12, right: true)
      if peers { for name in peerNames { header += pad("ours/\(name)", 17, right: true) } }
      return header
    }

    func tableLine(peers showPeers: Bool) -> String {
      var line = BenchReport.pad(mask, 14) + BenchReport.pad("\(tokens)", 9, right: true) + BenchReport.pad("\(dim)", 5, right: true)
        + BenchReport.pad("\(heads)", 3, right: true) + BenchReport.pad(edges.map { "\($0)" } ?? "-", 14, right: true)
      guard let median = medianSeconds else {
        return line + "  skipped: \(skipped ?? "?")"
      }
      line += BenchReport.pad(String(format: "%.4f", median), 11, right: true)
        + BenchReport.pad(String(format: "%.1f", gflops ?? 0), 9, right: true)
        + BenchReport.pad(String(format: "%.1f", percentOfPeak ?? 0), 8, right: true)
        + BenchReport.pad(String(format: "%.3f", (edgesPerSecond ?? 0) / 1e9), 9, right: true)
        + BenchReport.pad(peakResidentBytes.map { String(format: "%.0f", $0 / 1048576) } ?? "-", 10, right: true)
        + BenchReport.pad(tensorBytes.map { String(format: "%.0f", $0 / 1048576) } ?? "-", 11, right: true)
        + BenchReport.pad(String(format: "%.4f", scoresPerEdge ?? 0), 12, right: true)
      if showPeers {
        for name in Row.peerNames {
          let cell: String
          if let peer = peers.first(where: { $0.peer == name }) {
            if let theirs = peer.medianSeconds, peer.status == "ok" {
              cell = String(format: "%.3g (%.3gs)", median / theirs, theirs)
            } else {
              cell = peer.status
            }
          } else {
            cell = "-"
          }
          line += BenchReport.pad(cell, 17, right: true)
        }
      }
      return line
    }
  }

  var peakFlops: Double
  /// The instruction set whose FMA chains measured `peakFlops` (the widest this CPU runs), e.g. "AVX-512".
  var peakInstructionSet: String
  /// The CPU kernel the rows ran (`--kernel`, resolved), e.g. "avx512".
  var kernel: String
  var readBandwidth: Double
  var threads: Int
  var command: String
  var machine = BenchReport.machineDescription()
  var rows: [Row] = []

  static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
    let gap = max(1, width - text.count)
    return right ? String(repeating: " ", count: gap) + text : text + String(repeating: " ", count: gap)
  }

  static func machineDescription() -> String {
    let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
      .split(separator: "\n").first { $0.hasPrefix("model name") }?
      .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
    let memory = Double(ProcessInfo.processInfo.physicalMemory) / 1073741824
    return "\(cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores, \(String(format: "%.0f", memory)) GiB"
  }

  /// Writes results.json, results.csv and results.svg into `directory` (created if missing), atomically.
  /// Throws unless `directory` can receive the results: an existing directory that is writable, or a
  /// path whose nearest existing ancestor is a writable directory (the rest is created when writing).
  static func checkDirectory(_ directory: String) throws {
    try AtomicFile.checkDirectoryDestination(directory, option: "--output-directory")
  }

  func write(to directory: String) throws {
    try AtomicFile.createDirectory(directory, option: "--output-directory")
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try writeAtomically(String(decoding: try encoder.encode(self), as: UTF8.self), to: "\(directory)/results.json")
    try writeAtomically(csv(), to: "\(directory)/results.csv")
    try writeAtomically(svg(), to: "\(directory)/results.svg")
  }

  private func writeAtomically(_ text: String, to path: String) throws {
    let bytes = Array(text.utf8)
    try AtomicFile.write(to: path) { sink in
      try bytes.withUnsafeBytes { try sink.write($0) }
    }
  }

  func csv() -> String {
    var lines = ["mask,spec,tokens,dim,heads,edges_per_head,median_s,min_s,gflops,percent_of_peak,edges_per_s,scores_per_edge,peak_rss_bytes,tensor_bytes,skipped,"
      + Row.peerNames.map { "\($0)_s,\($0)_status" }.joined(separator: ",")]
    func f(_ x: Double?) -> String { x.map { String(format: "%.6g", $0) } ?? "" }
    for r in rows {
      var fields = [r.mask, "\"\(r.spec)\"", "\(r.tokens)", "\(r.dim)", "\(r.heads)", r.edges.map(String.init) ?? "",
                    f(r.medianSeconds), f(r.minSeconds), f(r.gflops), f(r.percentOfPeak), f(r.edgesPerSecond),
                    f(r.scoresPerEdge), f(r.peakResidentBytes), f(r.tensorBytes), "\"\(r.skipped ?? "")\""]
      for name in Row.peerNames {
        let peer = r.peers.first { $0.peer == name }
        fields.append(f(peer?.medianSeconds))
        fields.append(peer?.status ?? "")
      }
      lines.append(fields.joined(separator: ","))
    }
    return lines.joined(separator: "\n") + "\n"
  }

  /// Two panels against length (log scale): median seconds (log) and percent of the FMA peak, one line per
  /// mask and configuration.
  func svg() -> String {
    let measured = rows.filter { $0.medianSeconds != nil }
    let series = Dictionary(grouping: measured) { "\($0.mask) d=\($0.dim) H=\($0.heads)" }
    let names = series.keys.sorted()
    let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000"]
    let width = 1200.0, height = 560.0, panel = 500.0, top = 50.0, plotHeight = 380.0
    let lengths = measured.map { Double($0.tokens) }
    let xMin = log10(lengths.min() ?? 1000), xMax = log10(lengths.max() ?? 1e6) + 0.01
    let times = measured.compactMap(\.medianSeconds)
    let tMin = floor(log10(times.min() ?? 1e-3)), tMax = ceil(log10(times.max() ?? 1)) + (times.isEmpty ? 1 : 0)
    func x(_ tokens: Int, _ left: Double) -> Double { left + (log10(Double(tokens)) - xMin) / max(xMax - xMin, 0.1) * panel }
    func yTime(_ s: Double) -> Double { top + plotHeight - (log10(s) - tMin) / max(tMax - tMin, 1) * plotHeight }
    func yPercent(_ p: Double) -> Double { top + plotHeight - min(p, 100) / 100 * plotHeight }
    var out = """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height + 22 * Double((names.count + 2) / 3)))" font-family="sans-serif" font-size="12">
      <rect width="100%" height="100%" fill="white"/>
      <text x="20" y="24" font-size="15">graph-attention bench: \(escape(machine)), \(threads) threads, \(peakInstructionSet) FMA peak \(String(format: "%.0f", peakFlops / 1e9)) GFLOP/s, \(kernel) kernel</text>

      """
    for (index, left) in [70.0, 660.0].enumerated() {
      out += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(panel)\" height=\"\(plotHeight)\" fill=\"none\" stroke=\"#888\"/>\n"
      out += "<text x=\"\(left + panel / 2 - 60)\" y=\"\(top + plotHeight + 36)\">tokens (log scale)</text>\n"
      let title = index == 0 ? "median seconds (log scale)" : "useful GFLOP/s, % of measured FMA peak"
      out += "<text x=\"\(left)\" y=\"\(top - 8)\">\(title)</text>\n"
      for exponent in Int(ceil(xMin))...max(Int(ceil(xMin)), Int(floor(xMax))) {
        let px = left + (Double(exponent) - xMin) / max(xMax - xMin, 0.1) * panel
        out += "<line x1=\"\(px)\" y1=\"\(top)\" x2=\"\(px)\" y2=\"\(top + plotHeight)\" stroke=\"#eee\"/>"
        out += "<text x=\"\(px - 10)\" y=\"\(top + plotHeight + 16)\">1e\(exponent)</text>\n"
      }
      if index == 0 {
        for exponent in Int(tMin)...Int(tMax) {
          let py = yTime(pow(10, Double(exponent)))
          out += "<line x1=\"\(left)\" y1=\"\(py)\" x2=\"\(left + panel)\" y2=\"\(py)\" stroke=\"#eee\"/><text x=\"\(left - 40)\" y=\"\(py + 4)\">1e\(exponent)</text>\n"
        }
      } else {
        for percent in stride(from: 0, through: 100, by: 25) {
          let py = yPercent(Double(percent))
          out += "<line x1=\"\(left)\" y1=\"\(py)\" x2=\"\(left + panel)\" y2=\"\(py)\" stroke=\"#eee\"/><text x=\"\(left - 34)\" y=\"\(py + 4)\">\(percent)%</text>\n"
        }
      }
    }
    for (i, name) in names.enumerated() {
      let color = palette[i % palette.count]
      let dash = name.contains("H=1") ? "" : " stroke-dasharray=\"5,3\""
      let points = series[name]!.sorted { $0.tokens < $1.tokens }
      let timeLine = points.map { "\(x($0.tokens, 70)),\(yTime($0.medianSeconds!))" }.joined(separator: " ")
      let peakLine = points.map { "\(x($0.tokens, 660)),\(yPercent($0.percentOfPeak ?? 0))" }.joined(separator: " ")
      out += "<polyline points=\"\(timeLine)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\"\(dash)/>\n"
      out += "<polyline points=\"\(peakLine)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\"\(dash)/>\n"
      let lx = 70 + Double(i % 3) * 380, ly = top + plotHeight + 60 + Double(i / 3) * 20
      out += "<line x1=\"\(lx)\" y1=\"\(ly - 4)\" x2=\"\(lx + 24)\" y2=\"\(ly - 4)\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>"
      out += "<text x=\"\(lx + 30)\" y=\"\(ly)\">\(escape(name))</text>\n"
    }
    return out + "</svg>\n"
  }

  private func escape(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
  }
}
