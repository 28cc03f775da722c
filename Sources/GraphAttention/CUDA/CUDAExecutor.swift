#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs one attention call on a GPU: checks device memory, uploads Q, K, V (in the storage type), the
/// graph and the carried state, launches the row kernel, and downloads the result.
///
/// All device memory comes from `cuMemAlloc` through `CUDADeviceBuffer`s owned by this call and
/// freed when it returns (also on errors).
enum CUDAExecutor {
  /// What the kernel writes.
  enum Mode {
    /// The normalised output; rows without edges get zeros or NaN.
    case output(EmptyRowPolicy)
    /// The carried state `(m, l, acc)`, read and written in place (AttentionState).
    case state(maxima: [Float], sums: [Float], accumulator: [Float])
  }

  /// The kernel's result: the output (or updated accumulator), and the updated `m`, `l` for `.state`.
  struct Result {
    var values: [Float]
    var maxima: [Float]?
    var sums: [Float]?
    /// Seconds from the first launch to the synchronisation after the last kernel.
    var kernelSeconds: Double = 0
  }

  /// Warps (query rows) per block; each warp needs `(d_k + d_v) * 4` bytes of shared memory.
  static let preferredWarpsPerBlock = 4
  /// Device memory left free for the driver, the module and fragmentation.
  static let reservedBytes = 256 << 20

  /// Computes `call` (minus the edges of `excluding`) on device `ordinal`.
  ///
  /// With fp16/bf16 storage, `d_k == d_v` in `KernelSource.tileDimensions` and `tensorCores`, the
  /// graph's contiguous components run on the tensor-core tile kernel; the other components (global,
  /// dilated, explicit, random) then run on the row kernel, which starts from the tile kernel's state
  /// and skips the edges it computed. Otherwise the row kernel does everything.
  static func run(runtime: CUDARuntime, ordinal: Int, storage: StorageType, tensorCores: Bool = true, call: AttentionCall,
                  excluding: Graph?, query: Tensor, key: Tensor, value: Tensor, mode: Mode) throws -> Result {
    let shape = call.shape
    if let problem = CUDAGraphEncoding.unsupported(call.graph, queryCount: shape.queryCount, keyCount: shape.keyCount)
      ?? CUDAGraphEncoding.unsupported(excluding, queryCount: shape.queryCount, keyCount: shape.keyCount) {
      throw GraphAttentionError(.device, problem, fix: "run this mask on the CPU (--device cpu)")
    }
    if !call.modifiers.isIdentity {
      throw GraphAttentionError(.device, "softcap, ALiBi and sinks are not in the CUDA kernels yet",
                                fix: "run score modifiers on the CPU (--device cpu)")
    }
    let encoding = CUDAGraphEncoding(graph: call.graph, excluding: excluding)
    let tileKernel = tensorCores && encoding.contiguousCount > 0
      ? KernelSource.tileKernel(for: storage, keyDim: shape.keyDim, valueDim: shape.valueDim) : nil
    let restCount = encoding.componentCount - encoding.firstNew - encoding.contiguousCount
    let split = tileKernel != nil && restCount > 0
    let width = storage.byteCount
    let queryRows = shape.batch * shape.queryHeads * shape.queryCount
    let kvRows = shape.batch * shape.keyValueHeads * shape.keyCount
    let inputBytes = width * (queryRows * shape.keyDim + kvRows * (shape.keyDim + shape.valueDim))
    var outputBytes = 4 * queryRows * shape.valueDim
    if case .state = mode { outputBytes += 8 * queryRows } else if split { outputBytes += 8 * queryRows }
    let totalBytes = inputBytes + outputBytes + encoding.deviceBytes

    return try runtime.locked {
      let module = try runtime.module(ordinal)
      let context = module.context
      let driver = context.driver

      // Memory: say how many tokens would fit rather than fail inside cuMemAlloc.
      let (free, total) = try context.memoryInfo()
      if totalBytes > free - reservedBytes {
        let tokens = max(shape.queryCount, shape.keyCount)
        let perToken = Double(totalBytes) / Double(tokens)
        let fit = max(0, Int(Double(free - reservedBytes) / perToken))
        throw GraphAttentionError(
          .device, "this call needs \(gibibytes(totalBytes)) of GPU memory (Q, K, V, output and graph) but CUDA device "
            + "\(ordinal) has \(gibibytes(free)) free of \(gibibytes(total)): about \(fit) tokens would fit "
            + "with this batch, heads and head dimensions",
          fix: "use at most about \(fit) tokens, fewer heads or a smaller batch, fp16/bf16 storage, or free GPU memory")
      }

      // Launch shape: one warp per query row, row tiles on grid x, (batch, head) on grid y.
      let perWarp = 4 * (shape.keyDim + shape.valueDim)
      let maxShared = try driver.attribute(.maxSharedMemoryPerBlock, of: context.device)
      let warps = min(preferredWarpsPerBlock, maxShared / perWarp)
      guard warps >= 1 else {
        throw GraphAttentionError(
          .device, "head dimensions d_k + d_v = \(shape.keyDim + shape.valueDim) need \(perWarp) bytes of shared memory per row, "
            + "more than the \(maxShared) a block of CUDA device \(ordinal) has",
          fix: "use d_k + d_v <= \(maxShared / 4) on CUDA, or run with --device cpu")
      }
      let gridX = (shape.queryCount + warps - 1) / warps
      guard gridX <= Int(Int32.max) else {
        throw GraphAttentionError(.device, "\(shape.queryCount) query tokens exceed the CUDA grid limit",
                                  fix: "split the query into parts of at most \(Int(Int32.max) * warps) tokens")
      }
      let heads = shape.batch * shape.queryHeads
      let gridY = min(heads, 65_535)

      // Buffers.
      let q = try upload(context, try storage.encode(query, name: "query"))
      let k = try upload(context, try storage.encode(key, name: "key"))
      let v = try upload(context, try storage.encode(value, name: "value"))
      var arrays: [CUDADeviceBuffer] = []
      for array in encoding.arrays { arrays.append(try upload(context, array.bytes)) }
      let graph = try upload(context, CUDAGraphEncoding.bytes(encoding.patched(addresses: arrays.map(\.address))))
      let out: CUDADeviceBuffer
      var maxima: CUDADeviceBuffer?
      var sums: CUDADeviceBuffer?
      // Mode bits of the kernels: 1 NaN for empty rows, 2 read the state, 4 write the state.
      let finalMode: Int32
      switch mode {
      case let .output(emptyRows):
        out = try CUDADeviceBuffer(context: context, byteCount: 4 * queryRows * shape.valueDim)
        finalMode = emptyRows == .nan ? 1 : 0
        if split {
          // The tile kernel's state goes to the row kernel: m and l buffers, `out` as the accumulator.
          maxima = try CUDADeviceBuffer(context: context, byteCount: 4 * queryRows)
          sums = try CUDADeviceBuffer(context: context, byteCount: 4 * queryRows)
        }
      case let .state(m, l, acc):
        out = try upload(context, CUDAGraphEncoding.bytes(acc))
        maxima = try upload(context, CUDAGraphEncoding.bytes(m))
        sums = try upload(context, CUDAGraphEncoding.bytes(l))
        finalMode = 6
      }

      func arguments(componentCount: Int, firstNew: Int, mode: Int32) -> KernelArguments {
        let arguments = KernelArguments()
        arguments.append(q.address)
        arguments.append(k.address)
        arguments.append(v.address)
        arguments.append(out.address)
        arguments.append(maxima?.address ?? 0)
        arguments.append(sums?.address ?? 0)
        arguments.append(graph.address)
        arguments.append(Int32(componentCount))
        arguments.append(Int32(firstNew))
        arguments.append(Int64(heads))
        arguments.append(Int64(shape.queryHeads))
        arguments.append(Int64(shape.keyValueHeads))
        arguments.append(Int64(shape.queryCount))
        arguments.append(Int64(shape.keyCount))
        arguments.append(Int64(shape.keyDim))
        arguments.append(Int64(shape.valueDim))
        arguments.append(call.scale)
        arguments.append(mode)
        return arguments
      }

      func launch(_ name: String, grid: (Int, Int), block: Int, shared: Int, _ arguments: KernelArguments) throws {
        let function = try module.function(name)
        let launched = arguments.withPointers { pointers in
          driver.symbols.cuLaunchKernel(function, UInt32(grid.0), UInt32(grid.1), 1, UInt32(block), 1, 1,
                                        UInt32(shared), nil, pointers, nil)
        }
        try driver.check(launched, "cuLaunchKernel", detail: "\(name) grid (\(grid.0), \(grid.1)) block \(block)")
      }

      let started = monotonicSeconds()
      let rowsAfterTile = encoding.firstNew + encoding.contiguousCount
      if let tileKernel {
        let rowsPerBlock = KernelSource.tileRows * preferredWarpsPerBlock
        let tileMode: Int32 = split ? (finalMode & 2) | 4 : finalMode
        try launch(tileKernel, grid: ((shape.queryCount + rowsPerBlock - 1) / rowsPerBlock, gridY),
                   block: 32 * preferredWarpsPerBlock, shared: 0,
                   arguments(componentCount: rowsAfterTile, firstNew: encoding.firstNew, mode: tileMode))
      }
      if tileKernel == nil || split {
        let rowMode: Int32 = split ? finalMode | 2 : finalMode
        try launch(KernelSource.rowsKernel(for: storage), grid: (gridX, gridY), block: 32 * warps, shared: warps * perWarp,
                   arguments(componentCount: encoding.componentCount,
                             firstNew: split ? rowsAfterTile : encoding.firstNew, mode: rowMode))
      }
      try context.synchronize()
      let kernelSeconds = monotonicSeconds() - started

      var result = Result(values: try download(out, count: queryRows * shape.valueDim), kernelSeconds: kernelSeconds)
      if case .state = mode, let maxima, let sums {
        result.maxima = try download(maxima, count: queryRows)
        result.sums = try download(sums, count: queryRows)
      }
      return result
    }
  }

  private static func upload(_ context: CUDAContext, _ bytes: [UInt8]) throws -> CUDADeviceBuffer {
    let buffer = try CUDADeviceBuffer(context: context, byteCount: bytes.count)
    try bytes.withUnsafeBytes { try buffer.upload($0) }
    return buffer
  }

  private static func download(_ buffer: CUDADeviceBuffer, count: Int) throws -> [Float] {
    var values = [Float](repeating: 0, count: count)
    try values.withUnsafeMutableBytes { try buffer.download(into: $0) }
    return values
  }

  static func gibibytes(_ bytes: Int) -> String {
    let g = Double(bytes) / Double(1 << 30)
    let rounded = (g * 100).rounded() / 100
    return "\(rounded) GiB"
  }
}

/// Kernel arguments for `cuLaunchKernel`: each value in its own allocation, and the array of their addresses.
///
/// Every slot is at least 8 bytes, zero-padded, so a reader that does not know the kernel's signature
/// (the tests' mock driver) can copy each argument as 8 bytes.
final class KernelArguments {
  private var values: [UnsafeMutableRawPointer] = []

  func append<T: BitwiseCopyable>(_ value: T) {
    let size = max(8, MemoryLayout<T>.size)
    let pointer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: max(8, MemoryLayout<T>.alignment))
    pointer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    pointer.storeBytes(of: value, as: T.self)
    values.append(pointer)
  }

  func withPointers<R>(_ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>) throws -> R) rethrows -> R {
    var pointers: [UnsafeMutableRawPointer?] = values
    return try pointers.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
  }

  deinit {
    values.forEach { $0.deallocate() }
  }
}
