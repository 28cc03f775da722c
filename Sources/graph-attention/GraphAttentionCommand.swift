import ArgumentParser
import GraphAttention

/// `graph-attention`: exact sparse attention over graph masks, from the command line.
@main
struct GraphAttentionCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "graph-attention",
    abstract: "Exact sparse attention over graph masks: work proportional to edges, memory to tokens.",
    discussion: """
      Masks (SPEC): full, causal, window:W, window:W:causal, dilated:W:D, blocked:B:D, global:I,J,...,
      random:P:SEED, csr:INDPTR.npy:INDICES.npy, coo:ROWS.npy:COLS.npy, mtx:FILE.mtx, joined with '+'
      for a union (an edge in several operands is visited once), e.g. window:64+global:0+random:0.001:7.
      With no subcommand, runs the demo.
      """,
    subcommands: [DemoCommand.self, RunCommand.self, GradCommand.self, VerifyCommand.self, InspectCommand.self, BenchCommand.self,
                  TimeCommand.self, GenerateCommand.self, PlanCommand.self, CUDACompileCommand.self, CUDAInfoCommand.self],
    defaultSubcommand: DemoCommand.self
  )
}
