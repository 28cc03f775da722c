#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Synchronization

/// Reads the key and value rows of a query row's far keys (random and explicit edges) from their files
/// with positioned reads, instead of touching them through the memory mapping.
///
/// Why: every first touch of a mapped page makes it resident in this process, and Linux maps up to 16
/// cached neighbours with each fault ("fault-around", 64 KiB). A random graph over 160M keys touches a
/// new page for nearly every edge, so through the mapping the resident set grows by ~128 KiB per edge
/// and has to be released (a page-table walk over the whole file) every few thousand rows. `pread`
/// copies the 64-512 bytes of a row into a small per-thread buffer; the page stays in the shared page
/// cache, never in this process. Near keys (`NearKeys`: within the graph's local reach of the row, and global tokens) (a window's keys) are still read
/// through the mapping: the streaming caller keeps those pages resident anyway.
///
/// One `pread` per far key still costs 1.5-3 µs, mostly the page-cache lookup and the cache misses of a
/// random page; `prepare` removes most of that for a block of rows: it lists the rows' far keys, sorts
/// them, and copies their rows in one sweep through the mapping in key order (each fault maps 16
/// neighbouring pages, and the next keys on them cost a copy), releasing the pages behind the sweep every
/// 64 MiB so the resident set stays bounded. The executor then finds each far key in its row's short
/// sorted list; a key not found there (or rows outside the block) falls back to `pread`.
///
/// The reader has its own descriptors (`MappedFile.openRandomAccessDescriptor`, so a renamed input still
/// works), advised `POSIX_FADV_RANDOM` so a miss reads one page, not a read-ahead window, without
/// changing the mapping's read-ahead. Thread-safe: `pread` is positional. I/O errors are recorded and
/// reported by `failure` after the call; the rows they affect are filled with NaN.
final class ScatteredKeyReader: @unchecked Sendable {
  /// Keys gathered per kernel call; a longer single-row tile is folded in pieces.
  static let pieceKeys = 256

  /// Key indices `0..<pieceKeys`, read-only after init: gathered keys lie at consecutive buffer positions.
  let positions: UnsafeMutablePointer<Int64>

  private let keyDescriptor: Int32
  private let valueDescriptor: Int32
  /// File offsets of key 0 and value 0 of key/value head 0.
  private let keyOffset: Int
  private let valueOffset: Int
  let keyRowBytes: Int
  let valueRowBytes: Int
  let keyCount: Int
  /// Keys read through the mapping: within the graph's local reach of the row (the streaming caller keeps
  /// those pages), and global tokens (a few pages, resident) rather than once per row with a system call.
  let near: NearKeys
  private let keyPath: String
  private let valuePath: String
  /// The mapped key and value tensors (for the sweep of `prepare` and its page releases).
  private let keys: TensorView
  private let values: TensorView
  /// The far keys of `prepare`'s rows and their rows, read ahead; nil: every far key is a `pread`.
  private var readAhead: ReadAhead?
  private let failedErrno = Atomic<Int32>(0)
  private let failedKey = Atomic<Int>(-1)

  /// A reader for key and value views that lie in mapped files, or nil when either is in heap memory.
  ///
  /// - Throws: `GraphAttentionError(.file)` if a file cannot be reopened.
  init?(key: TensorView, value: TensorView, keyCount: Int, keyDim: Int, valueDim: Int, near: NearKeys) throws {
    guard let keyFile = key.mappedFile, let valueFile = value.mappedFile else { return nil }
    keyDescriptor = try keyFile.openRandomAccessDescriptor()
    do {
      valueDescriptor = try valueFile.openRandomAccessDescriptor()
    } catch {
      close(keyDescriptor)
      throw error
    }
    keys = key
    values = value
    keyOffset = key.base - UnsafeRawPointer(keyFile.base)
    valueOffset = value.base - UnsafeRawPointer(valueFile.base)
    keyRowBytes = keyDim * key.type.byteCount
    valueRowBytes = valueDim * value.type.byteCount
    self.keyCount = keyCount
    self.near = near
    keyPath = keyFile.path
    valuePath = valueFile.path
    positions = .allocate(capacity: ScatteredKeyReader.pieceKeys)
    for i in 0..<ScatteredKeyReader.pieceKeys { positions[i] = Int64(i) }
  }

  deinit {
    readAhead?.deallocate()
    positions.deallocate()
    close(keyDescriptor)
    close(valueDescriptor)
  }

  /// The first read error, as an error naming the file, or nil if every read succeeded.
  var failure: GraphAttentionError? {
    let code = failedErrno.load(ordering: .relaxed)
    guard code != 0 else { return nil }
    let key = failedKey.load(ordering: .relaxed)
    let text = code == -1 ? "the file ended early" : storageErrnoText(code)
    return GraphAttentionError(.file, "reading key/value row \(key) from \(keyPath) or \(valuePath) failed: \(text)",
                               fix: "check that the input files are complete and the disk is healthy, then rerun")
  }

  /// Whether any of a single row's sorted keys is far (see `NearKeys`).
  /// - Complexity: O(1) when the first and last keys are near the row, else O(count) at most.
  func hasFarKeys(row: Int, keys: UnsafePointer<Int64>, count: Int) -> Bool {
    guard count > 0, Int(keys[0]) < row - near.reach || Int(keys[count - 1]) > row + near.reach else { return false }
    for i in 0..<count where near.isFar(Int(keys[i]), row: row) { return true }
    return false
  }

  /// Copies the key and value rows of `keys[0..<count]` (sorted, `count <= pieceKeys`) of key/value head
  /// `kvHead` into `keyBuffer` and `valueBuffer`, in order: far keys by `pread` (consecutive ones in one
  /// call), local and resident ones from the mapping at `mappedKeys`/`mappedValues` (the head's first row).
  /// - Complexity: O(count) copies and at most `2 * count` system calls.
  func gather(row: Int, kvHead: Int, keys: UnsafePointer<Int64>, count: Int,
              mappedKeys: UnsafeRawPointer, mappedValues: UnsafeRawPointer,
              keyBuffer: UnsafeMutableRawPointer, valueBuffer: UnsafeMutableRawPointer) {
    var i = 0
    while i < count {
      let key = Int(keys[i])
      // Near keys come from the mapping, read-ahead ones from its rows: either way row `index` of a source.
      var source: (keys: UnsafeRawPointer, values: UnsafeRawPointer, index: Int)?
      if !near.isFar(key, row: row) {
        source = (mappedKeys, mappedValues, key)
      } else if let ahead = readAhead, let slot = ahead.slot(row: row, key: key) {
        source = (UnsafeRawPointer(ahead.keyRows), UnsafeRawPointer(ahead.valueRows), kvHead * ahead.uniqueCount + slot)
      }
      if let (sourceKeys, sourceValues, index) = source {
        (keyBuffer + i * keyRowBytes).copyMemory(from: sourceKeys + index * keyRowBytes, byteCount: keyRowBytes)
        (valueBuffer + i * valueRowBytes).copyMemory(from: sourceValues + index * valueRowBytes, byteCount: valueRowBytes)
        i += 1
        continue
      }
      var run = 1
      while i + run < count, Int(keys[i + run]) == key + run, near.isFar(key + run, row: row) {
        run += 1
      }
      let headRow = kvHead * keyCount + key
      read(keyDescriptor, into: keyBuffer + i * keyRowBytes, bytes: run * keyRowBytes,
           at: keyOffset + headRow * keyRowBytes, key: key)
      read(valueDescriptor, into: valueBuffer + i * valueRowBytes, bytes: run * valueRowBytes,
           at: valueOffset + headRow * valueRowBytes, key: key)
      i += run
    }
  }

  /// `pread` of exactly `bytes`, retried on EINTR and short reads; on failure records the error and fills
  /// the destination with NaN bytes (0xFF), so nothing computed from it can pass for a result.
  private func read(_ fd: Int32, into destination: UnsafeMutableRawPointer, bytes: Int, at offset: Int, key: Int) {
    let result = transferAll(bytes) { done, chunk in pread(fd, destination + done, chunk, off_t(offset + done)) }
    let done: Int, code: Int32
    switch result {
    case .success(let n): (done, code) = (n, -1)  // short only at the end of the file
    case .failure(let failure): (done, code) = (0, failure.rawValue)
    }
    if done < bytes {
      _ = failedErrno.compareExchange(expected: 0, desired: code, ordering: .relaxed)
      failedKey.store(key, ordering: .relaxed)
      (destination + done).initializeMemory(as: UInt8.self, repeating: 0xFF, count: bytes - done)
    }
  }

  /// Bytes of key and value rows `prepare` holds by default; beyond it far keys are read one by one.
  static let defaultReadAheadBytes = 1 << 30
  /// The sweep of `prepare` releases the pages behind it each time it has passed this many bytes.
  static let sweepReleaseBytes = 64 << 20

  /// Reads the far keys of rows `rows` of every key/value head ahead, in key order (see the type's
  /// comment), when their rows fit in `budget` bytes; otherwise leaves them to `pread`.
  ///
  /// Call before the rows are computed, from one thread; `gather` may then run on many.
  /// - Parameters:
  ///   - keyValueHeads: `batch * H_kv`, the heads of the key and value tensors.
  /// - Complexity: O(rows * scattered keys per row * log) to list and sort, one copy per far key and head.
  func prepare(graph: Graph, rows: Range<Int>, queryCount: Int, keyValueHeads: Int, threads: Int,
               budget: Int = ScatteredKeyReader.defaultReadAheadBytes) {
    readAhead?.deallocate()
    readAhead = nil
    guard let scattered = graph.scatteredComponents, !rows.isEmpty else { return }
    let expected = graph.scatteredKeysPerRow(queryCount: queryCount, keyCount: keyCount) * Double(rows.count)
      * Double(keyValueHeads * (keyRowBytes + valueRowBytes))
    guard expected <= Double(budget) else { return }

    // 1. Each row's far keys (sorted, as its runs are), rows split across threads.
    let parts = max(1, min(threads, rows.count / 4096 + 1))
    let listed = UnsafeMutablePointer<(keys: [Int64], counts: [Int32])>.allocate(capacity: parts)
    listed.initialize(repeating: ([], []), count: parts)
    defer { listed.deinitialize(count: parts); listed.deallocate() }
    let shared = UnsafeSendable(listed)
    DispatchQueue.concurrentPerform(iterations: parts) { part in
      let first = rows.lowerBound + part * rows.count / parts
      let last = rows.lowerBound + (part + 1) * rows.count / parts
      var scratch = RowScratch()
      var keys: [Int64] = []
      var counts = [Int32](repeating: 0, count: last - first)
      for row in first..<last {
        scattered.neighbourhood(row: row, queryCount: queryCount, keyCount: keyCount, into: &scratch)
        var n: Int32 = 0
        for run in scratch.runs {
          var key = run.start
          for _ in 0..<run.count {
            if near.isFar(key, row: row) { keys.append(Int64(key)); n += 1 }
            key += run.stride
          }
        }
        counts[row - first] = n
      }
      shared.value[part] = (keys, counts)
    }
    var total = 0
    for part in 0..<parts { total += listed[part].keys.count }
    guard total > 0 else { return }

    // 2. Distinct keys in order, and each entry's slot among them.
    var unique = [Int64]()
    unique.reserveCapacity(total)
    for part in 0..<parts { unique += listed[part].keys }
    unique.sort()
    var distinct = 0
    for i in 0..<unique.count where i == 0 || unique[i] != unique[distinct - 1] {
      unique[distinct] = unique[i]
      distinct += 1
    }
    unique.removeLast(unique.count - distinct)
    let ahead = ReadAhead(rows: rows, entries: total, uniqueCount: distinct, heads: keyValueHeads,
                          keyRowBytes: keyRowBytes, valueRowBytes: valueRowBytes)
    var entry = 0
    for part in 0..<parts {
      for key in listed[part].keys {
        ahead.entryKeys[entry] = key
        entry += 1
      }
    }
    var start = 0, local = 0
    for part in 0..<parts {
      for count in listed[part].counts {
        ahead.rowStarts[local] = start
        start += Int(count)
        local += 1
      }
    }
    ahead.rowStarts[local] = start
    let entries = total, distinctCount = distinct
    unique.withUnsafeBufferPointer { sorted in
      let sortedKeys = UnsafeSendable(sorted.baseAddress!)
      DispatchQueue.concurrentPerform(iterations: parts) { part in
        let u = sortedKeys.value
        let first = part * entries / parts, last = (part + 1) * entries / parts
        for e in first..<last {
          let key = ahead.entryKeys[e]
          var lo = 0, hi = distinctCount
          while lo < hi {
            let mid = (lo + hi) / 2
            if u[mid] < key { lo = mid + 1 } else { hi = mid }
          }
          ahead.entrySlots[e] = Int32(lo)
        }
      }

      // 3. The sweep: rows copied in key order through the mapping, pages behind released.
      let keyDim = keyRowBytes / keys.type.byteCount, valueDim = valueRowBytes / values.type.byteCount
      let sweeps = keyValueHeads * parts
      DispatchQueue.concurrentPerform(iterations: sweeps) { item in
        let u = sortedKeys.value
        let head = item / parts, part = item % parts
        let first = part * distinctCount / parts, last = (part + 1) * distinctCount / parts
        guard first < last else { return }
        let headKeys = UnsafeRawPointer(keys.base) + head * keyCount * keyRowBytes
        let headValues = UnsafeRawPointer(values.base) + head * keyCount * valueRowBytes
        let releaseRows = max(1, ScatteredKeyReader.sweepReleaseBytes / max(keyRowBytes, valueRowBytes))
        var released = Int(u[first])
        for i in first..<last {
          let key = Int(u[i])
          let index = head * distinctCount + i
          (ahead.keyRows + index * keyRowBytes).copyMemory(from: headKeys + key * keyRowBytes, byteCount: keyRowBytes)
          (ahead.valueRows + index * valueRowBytes).copyMemory(from: headValues + key * valueRowBytes, byteCount: valueRowBytes)
          if key - released >= releaseRows {
            release(head: head, rows: released..<key, keyDim: keyDim, valueDim: valueDim)
            released = key
          }
        }
        release(head: head, rows: released..<Int(u[last - 1]) + 1, keyDim: keyDim, valueDim: valueDim)
      }
    }
    readAhead = ahead
  }

  /// Releases the mapped pages of key and value rows `rows` of `head` (a shared page at either end too:
  /// it simply faults back in if needed).
  private func release(head: Int, rows: Range<Int>, keyDim: Int, valueDim: Int) {
    guard !rows.isEmpty else { return }
    let base = head * keyCount
    keys.dropPages(elements: (base + rows.lowerBound) * keyDim..<(base + rows.upperBound) * keyDim)
    values.dropPages(elements: (base + rows.lowerBound) * valueDim..<(base + rows.upperBound) * valueDim)
  }
}

/// The far keys of a block of rows and their key and value rows, read ahead by `prepare`; read-only after it.
final class ReadAhead: @unchecked Sendable {
  let rows: Range<Int>
  /// Entries of row `rows.lowerBound + r` are `rowStarts[r] ..< rowStarts[r + 1]`.
  let rowStarts: UnsafeMutablePointer<Int>
  /// Each row's far keys, sorted within the row.
  let entryKeys: UnsafeMutablePointer<Int64>
  /// Each entry's position among the distinct keys.
  let entrySlots: UnsafeMutablePointer<Int32>
  /// Distinct far keys; the rows of head `h`, slot `s` are at index `h * uniqueCount + s`.
  let uniqueCount: Int
  let keyRows: UnsafeMutableRawPointer
  let valueRows: UnsafeMutableRawPointer

  init(rows: Range<Int>, entries: Int, uniqueCount: Int, heads: Int, keyRowBytes: Int, valueRowBytes: Int) {
    self.rows = rows
    self.uniqueCount = uniqueCount
    rowStarts = .allocate(capacity: rows.count + 1)
    entryKeys = .allocate(capacity: entries)
    entrySlots = .allocate(capacity: entries)
    keyRows = .allocate(byteCount: max(1, heads * uniqueCount * keyRowBytes), alignment: 64)
    valueRows = .allocate(byteCount: max(1, heads * uniqueCount * valueRowBytes), alignment: 64)
  }

  func deallocate() {
    rowStarts.deallocate()
    entryKeys.deallocate()
    entrySlots.deallocate()
    keyRows.deallocate()
    valueRows.deallocate()
  }

  /// The slot of far key `key` of row `row`, or nil if it was not read ahead.
  /// - Complexity: O(log(row's far keys)).
  @inline(__always)
  func slot(row: Int, key: Int) -> Int? {
    guard rows.contains(row) else { return nil }
    var lo = rowStarts[row - rows.lowerBound], hi = rowStarts[row - rows.lowerBound + 1]
    while lo < hi {
      let mid = (lo + hi) / 2
      if Int(entryKeys[mid]) < key { lo = mid + 1 } else { hi = mid }
    }
    return lo < rowStarts[row - rows.lowerBound + 1] && Int(entryKeys[lo]) == key ? Int(entrySlots[lo]) : nil
  }
}
