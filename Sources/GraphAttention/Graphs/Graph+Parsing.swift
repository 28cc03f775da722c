/// Where an explicit graph's pattern is stored, as named by a mask specification.
///
/// The graph layer parses `csr:`, `coo:` and `mtx:` components into this and hands it to a loader; the
/// storage layer's `ExplicitGraph(contentsOf:)` reads the files (`Graph(parsing:)` wires the two), so
/// parsing itself never touches a file.
public enum ExplicitGraphSource: Sendable, Equatable {
  /// `csr:INDPTR.npy:INDICES.npy`: row offsets and column indices, integer `.npy` files.
  case csr(indptr: String, indices: String)
  /// `coo:ROWS.npy:COLS.npy`: row and column of each entry, integer `.npy` files.
  case coo(rows: String, columns: String)
  /// `mtx:FILE.mtx`: a Matrix Market coordinate file.
  case matrixMarket(String)
}

extension Graph {
  /// Parses a mask specification, handing explicit components to `explicit` to load.
  ///
  /// The grammar (the README's "Mask grammar" states it for users):
  /// ```
  /// mask      := term ('+' term)*                 union
  /// term      := component ('&' component)*       intersection, binding tighter than '+'
  /// component := kind (':' field)*
  /// field     := text | '"' text '"'
  /// ```
  /// Kinds: the cases of `MaskKind`, each with its form. `documents:` takes offsets written out or an
  /// integer `.npy` file: a field of digits, commas and blanks is a list, anything else a path, so write a
  /// path of digits as `./123`. A field
  /// in double quotes is taken literally, so file paths may hold `+`, `&` and `:`
  /// (`csr:"my+ptr.npy":"a:b.npy"`); outside quotes a backslash escapes the next character
  /// (`csr:my\+ptr.npy:idx.npy`), and inside quotes `\"` and `\\` stand for `"` and `\`. Blanks
  /// around unquoted fields are ignored.
  ///
  /// - Parameters:
  ///   - specification: the mask.
  ///   - explicit: loads an explicit component; gets where it is stored and the component's text (its
  ///     `source`, for messages).
  ///   - documents: loads the offsets of `documents:PATH`; gets the path and the component's text. Without
  ///     it such a component is refused (`Graph(parsing:queryCount:keyCount:)` reads the file).
  /// - Throws: `GraphAttentionError` (`.mask`) naming the component and the expected form, or what
  ///   `explicit` and `documents` throw.
  /// - Complexity: O(length of the specification) plus the loads.
  public init(parsing specification: String,
              explicit: (_ source: ExplicitGraphSource, _ specification: String) throws -> ExplicitGraph,
              documents: ((_ path: String, _ specification: String) throws -> DocumentGraph)? = nil) throws {
    var components: [Component] = []
    for term in try MaskTokenizer.terms(of: specification) {
      var graph: Graph?
      for part in term {
        let operand = try Graph.parseComponent(part, explicit: explicit, documents: documents)
        graph = graph.map { $0 & operand } ?? operand
      }
      components += graph!.components
    }
    self.init(components: components)
  }

  private static func parseComponent(_ part: MaskTokenizer.Component,
                                     explicit: (ExplicitGraphSource, String) throws -> ExplicitGraph,
                                     documents: ((String, String) throws -> DocumentGraph)?) throws -> Graph {
    let text = part.text
    guard let kind = MaskKind(field: part.fields[0]) else {
      throw GraphAttentionError(.mask, "unknown mask kind '\(part.fields[0])' in '\(part.text)'", fix: "use one of them. \(MaskKind.grammarSummary)")
    }
    let arguments = Array(part.fields.dropFirst())
    func expect(_ counts: ClosedRange<Int>, _ form: String) throws {
      guard counts.contains(arguments.count) else {
        throw GraphAttentionError(.mask, "'\(text)' has \(arguments.count) argument(s)", fix: "write it as \(form)")
      }
    }
    func integer(_ index: Int, _ name: String, _ form: String) throws -> Int {
      try Graph.integer(arguments[index], name, in: text, form: form)
    }
    switch kind {
    case .full:
      try expect(0...0, "full")
      return .full
    case .causal:
      try expect(0...0, "causal")
      return .causal
    case .window:
      let form = "window:W or window:W:causal"
      try expect(1...2, form)
      if arguments.count == 2, arguments[1].lowercased() != "causal" {
        throw GraphAttentionError(.mask, "'\(text)': unknown window option '\(arguments[1])'", fix: "write it as \(form)")
      }
      return try .window(integer(0, "radius", form), causal: arguments.count == 2)
    case .dilated:
      let form = "dilated:W:D (radius W, dilation D)"
      try expect(2...2, form)
      return try .dilated(radius: integer(0, "radius", form), dilation: integer(1, "dilation", form))
    case .blocked:
      let form = "blocked:B:D (block size B, dilation D)"
      try expect(1...2, form)
      return try .blocked(block: integer(0, "block", form), dilation: arguments.count == 2 ? integer(1, "dilation", form) : 0)
    case .global:
      let form = "global:I,J,... (token indices)"
      try expect(1...1, form)
      let tokens = try arguments[0].split(separator: ",", omittingEmptySubsequences: false).map {
        try Graph.integer(String($0), "global token", in: text, form: form)
      }
      return try .global(tokens)
    case .prefix:
      let form = "prefix:P (a bidirectional prefix of P tokens, causal after)"
      try expect(1...1, form)
      return try .prefix(integer(0, "prefix length", form))
    case .documents:
      let form = "documents:0,N1,...,L (cumulative offsets) or documents:CU.npy"
      try expect(1...1, form)
      let field = arguments[0]
      if Graph.isOffsetList(field) {
        let offsets = try field.split(separator: ",", omittingEmptySubsequences: false).map {
          try Graph.integer(String($0), "document offset", in: text, form: form)
        }
        return .documents(try DocumentGraph(offsets: offsets, source: text))
      }
      guard let documents else {
        throw GraphAttentionError(.mask, "'\(text)' names a file, and this parser reads no files",
                                  fix: "parse with Graph(parsing:queryCount:keyCount:), or list the offsets: \(form)")
      }
      return .documents(try documents(field, text))
    case .random:
      let form = "random:P:SEED or random:P:SEED:per-head (probability P in [0,1], integer SEED)"
      try expect(2...3, form)
      if arguments.count == 3, arguments[2].lowercased() != "per-head" {
        throw GraphAttentionError(.mask, "'\(text)': unknown random option '\(arguments[2])'", fix: "write it as \(form)")
      }
      guard let p = Double(arguments[0]), p.isFinite else {
        throw GraphAttentionError(.mask, "probability '\(arguments[0])' in '\(text)' is not a number", fix: "write it as \(form)")
      }
      guard let seed = UInt64(arguments[1]) else {
        let tooLarge = !arguments[1].isEmpty && arguments[1].allSatisfy { $0.isASCII && $0.isNumber }
        throw GraphAttentionError(
          .mask, "seed '\(arguments[1])' in '\(text)' is \(tooLarge ? "too large (at most \(UInt64.max))" : "not a non-negative integer")",
          fix: "write it as \(form)")
      }
      return try .random(probability: p, seed: seed, perHead: arguments.count == 3)
    case .csr:
      try expect(2...2, "csr:INDPTR.npy:INDICES.npy")
      return .explicit(try explicit(.csr(indptr: arguments[0], indices: arguments[1]), text))
    case .coo:
      try expect(2...2, "coo:ROWS.npy:COLS.npy")
      return .explicit(try explicit(.coo(rows: arguments[0], columns: arguments[1]), text))
    case .mtx:
      try expect(1...1, "mtx:FILE.mtx")
      return .explicit(try explicit(.matrixMarket(arguments[0]), text))
    }
  }

  /// Whether a `documents:` field lists offsets (digits, signs, commas and blanks) rather than naming a file.
  private static func isOffsetList(_ field: String) -> Bool {
    !field.isEmpty && field.allSatisfy { $0.isASCII && ($0.isNumber || $0 == "," || $0 == "-" || $0 == "+" || $0.isWhitespace) }
  }

  /// The files a mask specification names, in order and as written (explicit graphs' `.npy` and `.mtx`
  /// files, documents' offset files), without reading any: what a caller caching parsed graphs watches
  /// for changes. The same tokenizer and kinds as `Graph(parsing:)`, so quoting and escapes agree.
  /// - Throws: `GraphAttentionError(.mask)` for a specification the tokenizer or the kind table refuses.
  /// - Complexity: O(length of the specification).
  public static func filesNamed(by specification: String) throws -> [String] {
    var files: [String] = []
    for part in try MaskTokenizer.terms(of: specification).joined() {
      let arguments = part.fields.dropFirst()
      switch MaskKind(field: part.fields[0]) {
      case .csr?, .coo?, .mtx?: files += arguments
      case .documents?: files += arguments.filter { !isOffsetList($0) }
      default: continue
      }
    }
    return files
  }

  /// A decimal integer field; a number beyond `Int` is "too large", anything else "not an integer".
  private static func integer(_ field: String, _ name: String, in text: String, form: String) throws -> Int {
    let value = field.trimmingWhitespace()
    if let n = Int(value) { return n }
    let digits = value.hasPrefix("-") || value.hasPrefix("+") ? value.dropFirst() : Substring(value)
    if !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) {
      throw GraphAttentionError(
        .mask, "\(name) '\(value)' in '\(text)' is too \(value.hasPrefix("-") ? "small (at least \(Int.min))" : "large (at most \(Int.max))")",
        fix: "write it as \(form) with a smaller number")
    }
    throw GraphAttentionError(.mask, "\(name) '\(field)' in '\(text)' is not an integer", fix: "write it as \(form)")
  }
}

/// Splits a mask specification into components and fields, honouring quotes and backslash escapes.
enum MaskTokenizer {
  struct Component {
    /// The component as written (quotes and escapes kept), blanks trimmed: the explicit graph's `source`.
    var text: String
    /// The kind and the arguments, unquoted and unescaped; unquoted fields trimmed of blanks.
    var fields: [String]
  }

  /// Text whose escaped characters survive trimming: blanks are trimmed only outside them.
  struct EscapedText {
    private var characters: [Character] = []
    private var firstKept: Int?
    private var lastKept = -1

    mutating func append(_ c: Character, escaped: Bool = false) {
      if escaped {
        firstKept = firstKept ?? characters.count
        lastKept = characters.count
      }
      characters.append(c)
    }

    var isBlank: Bool { trimmed.isEmpty }

    /// The text without leading and trailing blanks that were not escaped.
    var trimmed: String {
      var lo = 0, hi = characters.count
      while lo < hi, lo < (firstKept ?? hi), characters[lo].isWhitespace { lo += 1 }
      while hi > lo, hi - 1 > lastKept, characters[hi - 1].isWhitespace { hi -= 1 }
      return String(characters[lo..<hi])
    }

    var whole: String { String(characters) }
  }

  /// The union's terms, each the components of an intersection (one for a plain component).
  static func terms(of specification: String) throws -> [[Component]] {
    var terms: [[Component]] = []
    var components: [Component] = []
    var fields: [String] = []
    var field = EscapedText()
    var raw = EscapedText()
    var quoted = false
    var wasQuoted = false
    var iterator = specification.makeIterator()

    func endField() {
      fields.append(wasQuoted ? field.whole : field.trimmed)
      field = EscapedText()
      wasQuoted = false
    }
    func endComponent() throws {
      endField()
      let text = raw.trimmed
      guard !text.isEmpty else {
        throw GraphAttentionError(.mask, "mask '\(specification)' has an empty component",
                                  fix: "join components with single '+' or '&', e.g. window:64+global:0, documents:0,5,9&causal")
      }
      components.append(Component(text: text, fields: fields))
      fields = []
      raw = EscapedText()
    }

    while let c = iterator.next() {
      if c == "\\" {
        guard let next = iterator.next() else {
          throw GraphAttentionError(.mask, "mask '\(specification)' ends with a lone backslash",
                                    fix: "escape '+', ':' or '\"' as \\+, \\: or \\\", or quote the field")
        }
        if quoted && next != "\"" && next != "\\" { field.append(c, escaped: true) }
        field.append(next, escaped: true)
        raw.append(c, escaped: true)
        raw.append(next, escaped: true)
        continue
      }
      if c == "\"" {
        if !quoted, !field.isBlank {
          throw GraphAttentionError(.mask, "mask '\(specification)' has a quote inside a field",
                                    fix: "quote a whole field, e.g. csr:\"my+ptr.npy\":indices.npy, or escape the quote as \\\"")
        }
        if !quoted { field = EscapedText() }
        quoted.toggle()
        wasQuoted = true
        raw.append(c)
        continue
      }
      if !quoted && c == "+" {
        try endComponent()
        terms.append(components)
        components = []
        continue
      }
      if !quoted && c == "&" {
        try endComponent()
        continue
      }
      raw.append(c, escaped: quoted)
      if !quoted && c == ":" {
        endField()
      } else if wasQuoted && !quoted {
        guard c.isWhitespace else {
          throw GraphAttentionError(.mask, "mask '\(specification)' has text after a closing quote",
                                    fix: "end the quoted field at ':' or '+', e.g. csr:\"my+ptr.npy\":indices.npy")
        }
      } else {
        field.append(c)
      }
    }
    guard !quoted else {
      throw GraphAttentionError(.mask, "mask '\(specification)' has an unterminated quote", fix: "close the quoted field with '\"'")
    }
    try endComponent()
    terms.append(components)
    return terms
  }
}

extension StringProtocol {
  func trimmingWhitespace() -> String {
    var slice = Substring(self)
    while let c = slice.first, c.isWhitespace { slice.removeFirst() }
    while let c = slice.last, c.isWhitespace { slice.removeLast() }
    return String(slice)
  }
}
