import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention`: exact sparse attention over graph masks, from the command line.
@main
struct GraphAttentionCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "graph-attention",
    abstract: "Exact sparse attention over graph masks: work proportional to edges, memory to tokens.",
    discussion: MaskKind.grammarSummary + " Every command taking --mask reads this grammar (docs/MASKS.md has the "
      + "definitions); with no subcommand, runs the demo.",
    version: GraphAttentionCommand.version,
    subcommands: [DemoCommand.self, RunCommand.self, GradCommand.self, VerifyCommand.self, InspectCommand.self, BenchCommand.self,
                  TimeCommand.self, GenerateCommand.self, PlanCommand.self, CUDACompileCommand.self, CUDAInfoCommand.self],
    defaultSubcommand: DemoCommand.self
  )

  /// The version `--version` prints.
  static let version = "\(graphAttentionVersion)"

  /// Refuses what the parser would silently misread, then parses and runs as usual: a first word that
  /// names no subcommand (the default subcommand, demo, would otherwise report it as its own unexpected
  /// argument), a `--mask` given twice (the parser keeps the last), and `run --query-name` (or
  /// `--key-name`, `--value-name`) with a `.npy` input, which has no names.
  static func main() {
    let arguments = Array(CommandLine.arguments.dropFirst())
    if let problem = argumentProblem(arguments) {
      FileHandle.standardError.write(Data("Error: \(problem)\n".utf8))
      Foundation.exit(ExitCode.validationFailure.rawValue)
    }
    main(arguments)
  }

  /// The message for arguments the parser would misread, or nil.
  static func argumentProblem(_ arguments: [String]) -> String? {
    let names = configuration.subcommands.map { $0.configuration.commandName ?? "" } + ["help"]
    if let first = arguments.first, !first.hasPrefix("-"), !names.contains(first) {
      let close = names.filter { editDistance($0, first) <= 2 }
      return "unknown subcommand '\(first)'"
        + (close.isEmpty ? "" : " (did you mean \(close.map { "'\($0)'" }.joined(separator: " or "))?)")
        + ". The subcommands are: \(names.dropLast().joined(separator: ", ")). See 'graph-attention --help'."
    }
    if arguments.first == "run", let ignored = ignoredTensorNames(in: arguments) {
      return ignored
    }
    if let (option, values) = repeatedSingleValueOptions(in: arguments).first {
      return "\(option) was given \(values.count) times (\(values.joined(separator: ", "))), but only one is used. "
        + "Give one \(option); join graphs with '+' for their union, e.g. \(option) \(values.joined(separator: "+"))."
    }
    return nil
  }
}

/// The Levenshtein distance between two words (insertions, deletions and substitutions), for suggestions.
/// - Complexity: O(a.count * b.count).
func editDistance(_ a: String, _ b: String) -> Int {
  let a = Array(a), b = Array(b)
  var previous = Array(0...b.count)
  for i in 1...max(a.count, 1) where !a.isEmpty {
    var current = [i] + [Int](repeating: 0, count: b.count)
    for j in stride(from: 1, through: b.count, by: 1) {
      current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.count]
}
