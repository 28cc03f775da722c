import GraphAttention

/// CSR and COO arrays into graphs. Byte 0 picks the form and which sizes are given; bytes 1-2 the lengths
/// (1...64); the rest are values, one byte each (small, in range) or, when bit 7 of byte 0 is set, eight
/// bytes each (any Int64, so huge and negative indices too). Accepted graphs are checked entry by entry
/// against the arrays.
enum ArraysTarget {
  static func run(_ data: UnsafeRawBufferPointer) {
    guard data.count >= 3, data.count <= 4096 else { return }
    let mode = data[0]
    let queryCount = 1 + Int(data[1] % 64), keyCount = 1 + Int(data[2] % 64)
    var values: [Int64] = []
    if mode & 0x80 == 0 {
      values = data.dropFirst(3).map { Int64(Int8(bitPattern: $0)) }
    } else {
      var i = 3
      while i + 8 <= data.count {
        values.append(Int64(littleEndian: data.loadUnaligned(fromByteOffset: i, as: Int64.self)))
        i += 8
      }
    }
    let passLengths = mode & 0x01 != 0
    let csr = mode & 0x02 != 0
    let declare = mode & 0x04 != 0
    let graph: ExplicitGraph
    var expected: Set<[Int64]>?
    do {
      if csr {
        // values = indptr (queryCount + 1 entries, made non-decreasing when bit 3 is set) + indices.
        var offsets = Array(values.prefix(queryCount + 1))
        var indices = Array(values.dropFirst(queryCount + 1))
        if mode & 0x08 != 0, !offsets.isEmpty {
          offsets = offsets.map { abs($0 % 8) }
          offsets[0] = 0
          for r in 1..<offsets.count { offsets[r] += offsets[r - 1] }
          indices = Array(indices.prefix(Int(offsets[offsets.count - 1])))
          if Int64(indices.count) < offsets[offsets.count - 1] { return }
        }
        graph = try ExplicitGraph(rowOffsets: offsets, columns: indices, queryCount: passLengths ? queryCount : nil,
                                  keyCount: passLengths ? keyCount : nil)
        var pairs = Set<[Int64]>()
        for r in 0..<(offsets.count - 1) {
          for e in Int(offsets[r])..<Int(offsets[r + 1]) { pairs.insert([Int64(r), indices[e]]) }
        }
        expected = pairs
      } else {
        let half = values.count / 2
        let rows = Array(values.prefix(half)), columns = Array(values[half..<(2 * half)])
        graph = try ExplicitGraph(rows: rows, columns: columns, rowCount: declare ? queryCount : nil,
                                  columnCount: declare ? keyCount : nil, queryCount: passLengths ? queryCount : nil,
                                  keyCount: passLengths ? keyCount : nil)
        expected = Set(zip(rows, columns).map { [$0, $1] })
      }
    } catch is GraphAttentionError {
      return
    } catch {
      fatalError("non-GraphAttentionError \(error)")
    }
    let whole = Graph.explicit(graph)
    GraphOracle.checkHugeLengths(whole)
    guard (try? whole.validate(queryCount: queryCount, keyCount: keyCount)) != nil else { return }
    if let expected {
      var stored = Set<[Int64]>()
      for r in 0..<queryCount {
        for c in graph.columns(ofRow: r) { stored.insert([Int64(r), Int64(c)]) }
      }
      GraphOracle.require(stored == expected, "explicit graph holds \(stored.sorted { $0.lexicographicallyPrecedes($1) }), the arrays \(expected)")
    }
    GraphOracle.check(whole, queryCount: queryCount, keyCount: keyCount, what: "arrays mode \(mode)")
    // In a union with strided and global components too.
    if queryCount == keyCount, let union = try? Graph.dilated(radius: 2, dilation: 1) + Graph.global([0]) + whole,
       (try? union.validate(queryCount: queryCount, keyCount: keyCount)) != nil {
      GraphOracle.check(union, queryCount: queryCount, keyCount: keyCount, what: "union with arrays mode \(mode)")
    }
  }
}
