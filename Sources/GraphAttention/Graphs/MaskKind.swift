/// The kinds of component a mask specification is made of: the one table the parser
/// (`Graph(parsing:)`) switches over and every grammar text is generated from (the CLI's help, the parser's
/// error messages, the Python package's `Graph` documentation through the C ABI), so no list of kinds can go
/// stale.
public enum MaskKind: String, CaseIterable, Sendable {
  case full, causal, window, prefix, documents, dilated, blocked, global, random, csr, coo, mtx

  /// The kind a specification's first field names (case-insensitive; `local` and `docs` are aliases), or nil.
  public init?(field: String) {
    switch field.lowercased() {
    case "local": self = .window
    case "docs": self = .documents
    case let name: self.init(rawValue: name)
    }
  }

  /// How a component of this kind is written, e.g. `window:W[:causal]`.
  public var form: String {
    switch self {
    case .full: return "full"
    case .causal: return "causal"
    case .window: return "window:W[:causal]"
    case .prefix: return "prefix:P"
    case .documents: return "documents:0,N1,...,L or documents:CU.npy"
    case .dilated: return "dilated:W:D"
    case .blocked: return "blocked:B[:D]"
    case .global: return "global:I,J,..."
    case .random: return "random:P:SEED[:per-head]"
    case .csr: return "csr:INDPTR.npy:INDICES.npy"
    case .coo: return "coo:ROWS.npy:COLS.npy"
    case .mtx: return "mtx:FILE.mtx"
    }
  }

  /// What a component of this kind attends to, in one line (row `i`, key `j`).
  public var summary: String {
    switch self {
    case .full: return "every key"
    case .causal: return "keys j <= i (aligned bottom-right when L_q != L_k)"
    case .window: return "keys with |i - j| <= W; with :causal, i - W <= j <= i"
    case .prefix: return "bidirectional over the first P tokens, causal after (prefix-LM)"
    case .documents: return "keys in the row's own document, from cumulative offsets (cu_seqlens)"
    case .dilated: return "keys j = i (mod D + 1) with |i - j| <= W(D + 1)"
    case .blocked: return "within blocks of B tokens, every (D + 1)-th row attends to every (D + 1)-th key; D = 0 by default"
    case .global: return "i or j is a listed token"
    case .random: return "each edge with probability P from SEED; :per-head draws a pattern per head"
    case .csr: return "an explicit pattern: row offsets and column indices (integer .npy files)"
    case .coo: return "an explicit pattern: row and column of each edge (integer .npy files)"
    case .mtx: return "an explicit pattern in a Matrix Market coordinate file"
    }
  }

  /// The grammar in a few lines: every kind's form, and the operators. What `--help` and error messages show.
  public static var grammarSummary: String {
    "Masks: " + allCases.map(\.form).joined(separator: ", ")
      + "; 'A+B' is the union (an edge in both is visited once), 'A&B' the intersection (binding tighter than '+'), "
      + "e.g. window:64+global:0+random:0.001:7 (BigBird) or documents:0,512,4096&causal (packed documents). "
      + "Fields in double quotes are taken literally (file paths holding '+', '&' or ':')."
  }

  /// One line per kind: its form and what it attends to, for reference texts (the Python `Graph` docstring).
  public static var grammarReference: String {
    allCases.map { "\($0.form): \($0.summary)" }.joined(separator: "\n")
  }
}
