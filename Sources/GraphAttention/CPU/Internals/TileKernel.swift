import _GraphAttentionKernels

/// The C tile kernel (`ga_tile_attend`), seen from Swift: one reusable call record per worker, filled in
/// place for each tile so that a tile costs no allocation.
///
/// Ownership: every pointer belongs to the caller and must stay valid during `attend`; the kernel keeps none.
struct TileKernel {
  /// Rows a tile may hold.
  static let maxRows = Int(GA_MAX_ROWS)
  /// Floats of score scratch a tile needs (32-byte aligned).
  static let scratchFloats = Int(GA_GROUP_ROWS) * Int(GA_KEY_BLOCK)

  /// Whether the AVX2/FMA kernel runs on this CPU (else the portable one).
  static var usesAVX2: Bool { ga_uses_avx2() != 0 }

  private var call = ga_tile()

  /// A call record for one head's keys and values, run by `kernel` (`.automatic`: the widest).
  ///
  /// For the AVX2 and AVX-512 kernels it owns a pack buffer (`ga_pack_floats`: (144 d_k + 128 d_v + 2048)
  /// floats, 76 KiB at d = 64; only the first 16 d_k + 2048 are touched for fp32 K and V), which runs tiles of several rows with the rows in the lanes: free it with
  /// `deallocate()`.
  init(keyDim: Int, valueDim: Int, scale: Float, scratch: UnsafeMutablePointer<Float>, kernel: CPUKernel) {
    call.key_dim = Int32(keyDim)
    call.value_dim = Int32(valueDim)
    call.scale = scale
    call.scratch = scratch
    call.force_portable = kernel == .portable ? 1 : 0
    call.isa = kernel.isa
    let packs = kernel != .portable && kernel.isSupported && CPUKernel.widest != .portable
    if packs {
      let floats = Int(ga_pack_floats(Int32(keyDim), Int32(valueDim)))
      call.pack = UnsafeMutableRawPointer.allocate(byteCount: floats * 4, alignment: 64).bindMemory(to: Float.self, capacity: floats)
    }
  }

  /// Frees the pack buffer; the kernel must not be used afterwards.
  func deallocate() {
    call.pack?.deallocate()
  }

  /// Points the call at a head's key and value rows, stored as `elementType`.
  mutating func setHead(key: UnsafeRawPointer, value: UnsafeRawPointer, elementType: StorageType = .float32) {
    call.key = key
    call.value = value
    switch elementType {
    case .float32: call.kv_type = Int32(GA_FLOAT32)
    case .float16: call.kv_type = Int32(GA_FLOAT16)
    case .bfloat16: call.kv_type = Int32(GA_BFLOAT16)
    }
  }

  /// Sets the head's score modifiers (softcap, ALiBi; all zero for none).
  mutating func setModifiers(_ modifiers: ga_score_mods) {
    call.mods = modifiers
  }

  /// Sets row `slot` of the tile: its query position (for ALiBi), its query and its `(m, l, acc)` state.
  mutating func setRow(_ slot: Int, position: Int, query: UnsafePointer<Float>, maximum: UnsafeMutablePointer<Float>,
                       sum: UnsafeMutablePointer<Float>, accumulator: UnsafeMutablePointer<Float>) {
    withUnsafeMutableBytes(of: &call.row_position) {
      $0.storeBytes(of: Int32(truncatingIfNeeded: position), toByteOffset: slot * 4, as: Int32.self)
    }
    // The C struct's fixed arrays import as tuples: store element `slot` at its byte offset.
    let offset = slot * MemoryLayout<UnsafeRawPointer>.stride
    withUnsafeMutableBytes(of: &call.query) { $0.storeBytes(of: query, toByteOffset: offset, as: UnsafePointer<Float>.self) }
    withUnsafeMutableBytes(of: &call.m) { $0.storeBytes(of: maximum, toByteOffset: offset, as: UnsafeMutablePointer<Float>.self) }
    withUnsafeMutableBytes(of: &call.l) { $0.storeBytes(of: sum, toByteOffset: offset, as: UnsafeMutablePointer<Float>.self) }
    withUnsafeMutableBytes(of: &call.acc) { $0.storeBytes(of: accumulator, toByteOffset: offset, as: UnsafeMutablePointer<Float>.self) }
  }

  /// Sets the key positions group `group` (rows `4g..<4g+4`) visits.
  mutating func setGroup(_ group: Int, range: Range<Int>) {
    withUnsafeMutableBytes(of: &call.group_begin) { $0.storeBytes(of: Int64(range.lowerBound), toByteOffset: group * 8, as: Int64.self) }
    withUnsafeMutableBytes(of: &call.group_end) { $0.storeBytes(of: Int64(range.upperBound), toByteOffset: group * 8, as: Int64.self) }
  }

  /// Whether tiles may carry row spans instead of masks (`QueryTiler.spansSuffice`): only the kernels with rows
  /// in the lanes (AVX2, AVX-512) read them, and they run every tile of several rows given a pack buffer.
  var readsRowSpans: Bool { call.pack != nil && call.force_portable == 0 }

  /// Folds `keyCount` keys into the first `rows` rows' states; row r attends to the keys its `mask` bytes
  /// mark, or with `spans` (and no mask), to positions `spans[r]` and the first `sharedKeys`, or with neither, to
  /// all of them.
  /// `keyPositions` gives the keys' positions when `keys` index a buffer of gathered rows.
  mutating func attend(rows: Int, keys: UnsafePointer<Int64>, keyCount: Int, mask: UnsafePointer<UInt8>?,
                       spans: UnsafePointer<Range<Int>>? = nil, sharedKeys: Int = 0, keyPositions: UnsafePointer<Int64>? = nil) {
    call.rows = Int32(rows)
    call.keys = keys
    call.key_positions = keyPositions
    call.n = Int64(keyCount)
    call.mask = mask
    call.has_row_spans = spans == nil ? 0 : 1
    call.shared_keys = spans == nil ? 0 : Int64(sharedKeys)
    if let spans {
      withUnsafeMutableBytes(of: &call.row_begin) { begin in
        withUnsafeMutableBytes(of: &call.row_end) { end in
          for r in 0..<rows {
            begin.storeBytes(of: Int32(truncatingIfNeeded: spans[r].lowerBound), toByteOffset: r * 4, as: Int32.self)
            end.storeBytes(of: Int32(truncatingIfNeeded: spans[r].upperBound), toByteOffset: r * 4, as: Int32.self)
          }
        }
      }
    }
    ga_tile_attend(&call)
  }

  /// Folds a chunk of a stored pattern's rows into their states, key block by key block (`ga_gather_rows`), with
  /// this head's keys, values, scale, modifiers and kernel; `gather` names the rows, their columns and states.
  mutating func gather(_ gather: inout ga_gather) {
    ga_gather_rows(&call, &gather)
  }
}
