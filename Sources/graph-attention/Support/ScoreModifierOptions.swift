import ArgumentParser
import GraphAttention

/// `--softcap`, `--alibi`, `--alibi-slopes`, `--sinks`: the score modifiers of `AttentionOptions`, declared once
/// for the commands that compute attention (run, verify, grad, time) and turned into options by `applied`.
///
/// Per-head values come from `.npy` (or single-tensor `.safetensors`) files of shape `[H_q]`, read through the
/// library's `TensorFile` (fp32; fp16, bf16 and fp64 are widened or rounded to fp32 as for any input).
struct ScoreModifierOptions: ParsableArguments {
  @Option(parsing: .unconditional, help: "Logit softcap C > 0 (Gemma 2): each score s = scale * q.k becomes C * tanh(s / C), before ALiBi.")
  var softcap: Float?

  @Flag(help: "ALiBi with the standard slopes 2^(-8(h+1)/H_q): adds -slope_h * |i + L_k - L_q - j| to each score of head h.")
  var alibi = false

  @Option(help: "ALiBi with these slopes: a .npy of shape [H_q], one slope per query head (instead of --alibi).")
  var alibiSlopes: String?

  @Option(help: "Attention sinks (GPT-OSS): a .npy of shape [H_q], one logit per query head that joins every row's softmax denominator.")
  var sinks: String?

  /// Whether any modifier was asked for.
  var isEmpty: Bool { softcap == nil && !alibi && alibiSlopes == nil && sinks == nil }

  func validate() throws {
    if alibi, alibiSlopes != nil {
      throw ValidationError("--alibi (the standard slopes) and --alibi-slopes exclude each other: pass --alibi-slopes alone to give slopes.")
    }
  }

  /// `options` with the modifiers set for `queryHeads` query heads, the per-head files read and checked.
  /// - Throws: `GraphAttentionError` for an unreadable file, a shape other than `[queryHeads]`, or a value
  ///   that is not finite, naming the option and the file.
  func applied(to options: AttentionOptions, queryHeads: Int) throws -> AttentionOptions {
    var options = options
    options.softcap = softcap
    if alibi { options.alibi = .standard }
    if let alibiSlopes { options.alibi = .slopes(try Self.perHead(alibiSlopes, option: "--alibi-slopes", heads: queryHeads)) }
    if let sinks { options.sinks = try Self.perHead(sinks, option: "--sinks", heads: queryHeads) }
    try options.checkScoreModifiers(queryHeads: queryHeads)  // the library's rules, before any output exists
    return options
  }

  /// One finite value per query head from `path`.
  static func perHead(_ path: String, option: String, heads: Int) throws -> [Float] {
    let file = try TensorFile.open(path)
    guard file.shape == [heads] else {
      throw GraphAttentionError(.shape, "\(option) \(path) has shape \(file.shape), but Q has \(heads) query head(s)",
                                fix: "save one value per query head, e.g. np.save(\"\(path)\", np.zeros(\(heads), np.float32))")
    }
    let values = Tensor(file).scalars
    if let bad = values.firstIndex(where: { !$0.isFinite }) {
      throw GraphAttentionError(.value, "\(option) \(path) holds \(values[bad]) at head \(bad)", fix: "give finite values")
    }
    return values
  }
}
