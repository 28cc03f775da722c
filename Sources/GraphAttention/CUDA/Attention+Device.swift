/// Where attention is computed: `AttentionOptions.device`.
///
/// On `.cuda`, the same semantics hold: the same graphs and unions (each edge visited once), scale,
/// empty-row policy, grouped-query heads and `d_v != d_k`, with fp32 accumulation. Results agree with
/// the CPU to fp32 rounding (about 1e-6 relative) for fp32 storage; fp16 and bf16 storage round the
/// inputs first. The kernels are compiled by NVRTC for the GPU at first use and cached on disk
/// (`~/.cache/graph-attention/cuda`), so the first call takes a few seconds longer. A call on `.cuda`
/// throws `GraphAttentionError(.device)` when there is no CUDA driver ("no CUDA driver found
/// (libcuda.so.1); --device cpu works here"), no NVRTC, no such GPU, or too little free device memory
/// (saying how many tokens would fit), and `CUDAError` when a driver or NVRTC call fails.
///
/// ```swift
/// let o = try attention(query: q, key: k, value: v, graph: bigBird, options: .init(device: .cuda()))   // GPU 0, fp32
/// let h = try attention(query: q, key: k, value: v, graph: bigBird,
///                       options: .init(device: .cuda(storage: .bfloat16)))
/// ```
public enum AttentionDevice: Sendable, Equatable, CustomStringConvertible {
  /// The CPU engine, on all cores (the default everywhere).
  case cpu
  /// An NVIDIA GPU through the CUDA driver, loaded at run time: device `ordinal` (as the driver numbers
  /// them, after `CUDA_VISIBLE_DEVICES`), with Q, K and V stored as `storage` on the device.
  ///
  /// With fp16/bf16 storage and `d_k == d_v` of 32, 64 or 128, `tensorCores` runs the contiguous part
  /// of the graph (full, causal, window, blocked and dilated without dilation) as dense 16 x 16 tiles
  /// on the tensor cores (mma.sync, fp32 accumulation, the softmax weights rounded to the storage
  /// type for the second product); `false` keeps every edge on the fp32 CUDA-core kernel.
  case cuda(ordinal: Int = 0, storage: StorageType = .float32, tensorCores: Bool = true)

  /// `cpu`, or `cuda:ORDINAL (STORAGE)`.
  public var description: String {
    switch self {
    case .cpu: return "cpu"
    case let .cuda(ordinal, storage, tensorCores):
      return "cuda:\(ordinal) (\(storage.shortName)\(tensorCores || storage == .float32 ? "" : ", no tensor cores"))"
    }
  }
}

/// `attention` on a CUDA runtime (the shared one, or a test's runtime over mock libraries), with its work:
/// edges (exact, counted on the host) and the kernel time.
func cudaAttention(runtime: CUDARuntime, ordinal: Int, storage: StorageType, tensorCores: Bool = true,
                   query: Tensor, key: Tensor, value: Tensor, graph: Graph,
                   options: AttentionOptions) throws -> (output: Tensor, work: AttentionWork) {
  let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
  let call = try AttentionCall(shape: shape, graph: graph, options: options)
  if options.checksFiniteInputs { try AttentionCall.checkFinite(query: query, key: key, value: value) }
  let result = try CUDAExecutor.run(runtime: runtime, ordinal: ordinal, storage: storage, tensorCores: tensorCores,
                                    call: call, excluding: nil,
                                    query: query, key: key, value: value, mode: .output(options.emptyRows))
  options.progress?(1)
  let edges = graph.edgeCount(queryCount: shape.queryCount, keyCount: shape.keyCount) * shape.batch * shape.queryHeads
  return (Tensor(shape: shape.outputShape, scalars: result.values),
          AttentionWork(edges: edges, scoresComputed: edges, kernelSeconds: result.kernelSeconds))
}

extension AttentionState {
  mutating func cudaAccumulate(runtime: CUDARuntime, ordinal: Int, storage: StorageType, tensorCores: Bool = true,
                               query: Tensor, key: Tensor, value: Tensor, graph: Graph, options: AttentionOptions) throws {
    let call = try accumulationCall(query: query, key: key, value: value, graph: graph, options: options)
    let result = try CUDAExecutor.run(runtime: runtime, ordinal: ordinal, storage: storage, tensorCores: tensorCores,
                                      call: call, excluding: visited,
                                      query: query, key: key, value: value,
                                      mode: .state(maxima: maxima, sums: sums, accumulator: accumulator))
    accumulator = result.values
    maxima = result.maxima ?? maxima
    sums = result.sums ?? sums
    visited = visited.map { $0 + graph } ?? graph
    options.progress?(1)
  }
}
