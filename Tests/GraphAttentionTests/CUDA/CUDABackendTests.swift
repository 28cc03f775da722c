#if canImport(Glibc)
import Glibc
#endif
@testable import GraphAttention
import XCTest

/// The CUDA backend's host side over mock libraries: loading, typed errors, ownership, the kernel
/// cache, the memory check and the arguments handed to the kernel. No GPU is needed or used.
final class CUDABackendTests: XCTestCase {
  let q = Tensor.random(shape: [2, 40, 8], seed: 1)
  let k = Tensor.random(shape: [1, 40, 8], seed: 2)
  let v = Tensor.random(shape: [1, 40, 4], seed: 3)
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws {
    MockCUDA.reset()
    directory = try StorageScratchDirectory()
  }

  override func tearDown() {
    directory.remove()
  }

  private func run(_ runtime: CUDARuntime, graph: Graph = .causal, storage: StorageType = .float32,
                   options: AttentionOptions = AttentionOptions()) throws -> Tensor {
    try cudaAttention(runtime: runtime, ordinal: 0, storage: storage, query: q, key: k, value: v, graph: graph, options: options).output
  }

  private func assertDeviceError(_ body: () throws -> Void, contains texts: [String], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
      guard let error = error as? GraphAttentionError else {
        return XCTFail("expected a GraphAttentionError, got \(error)", file: file, line: line)
      }
      XCTAssertEqual(error.kind, .device, file: file, line: line)
      for text in texts {
        XCTAssertTrue(error.description.contains(text), "\(error) lacks '\(text)'", file: file, line: line)
      }
    }
  }

  // MARK: - Libraries and symbols

  func testMissingDriverIsAClearDeviceError() {
    let runtime = MockCUDA.runtime(missingDriver: true)
    assertDeviceError({ _ = try self.run(runtime) }, contains: ["no CUDA driver found (libcuda.so.1); --device cpu works here"])
    assertDeviceError({ _ = try CUDABackend.device(0, runtime: runtime) }, contains: ["no CUDA driver found"])
  }

  func testMissingDriverSymbolIsNamed() {
    let runtime = MockCUDA.runtime(missingSymbols: ["cuMemAlloc_v2"])
    assertDeviceError({ _ = try self.run(runtime) }, contains: ["mock/libcuda.so.1 has no symbol cuMemAlloc_v2"])
  }

  func testMissingNVRTCIsAClearDeviceErrorAndCompileNeedsNoDriver() {
    let runtime = MockCUDA.runtime(missingNVRTC: true)
    assertDeviceError({ _ = try self.run(runtime) }, contains: ["no NVRTC found", "pip install nvidia-cuda-nvrtc", "GRAPH_ATTENTION_NVRTC"])
    // Compiling needs NVRTC only: with the driver missing it still works.
    let compileOnly = MockCUDA.runtime(missingDriver: true)
    XCTAssertNoThrow(try CUDABackend.compileKernels(architectures: ["sm_80"], runtime: compileOnly))
  }

  func testMissingNVRTCSymbolIsNamed() {
    let runtime = MockCUDA.runtime(missingSymbols: ["nvrtcCompileProgram"])
    assertDeviceError({ _ = try self.run(runtime) }, contains: ["has no symbol nvrtcCompileProgram"])
  }

  func testNVRTCNewerThanTheDriverIsPassedOverForAnOlderOne() throws {
    // The driver supports CUDA 12.8 (12080); an NVRTC 13.0 would emit images it cannot load.
    var newer = MockCUDA.nvrtcSymbols
    newer["nvrtcVersion"] = MockCUDA.pointer({ major, minor in
      major?.pointee = 13
      minor?.pointee = 0
      return 0
    } as NVRTCSymbols.Version)
    let tooNew = MockLibrary(path: "mock/libnvrtc.so.13", symbols: newer)
    let fitting = MockLibrary(path: "mock/libnvrtc.so.12", symbols: MockCUDA.nvrtcSymbols)
    let driver = MockLibrary(path: "mock/libcuda.so.1", symbols: MockCUDA.driverSymbols)
    let loader = CUDALibraryLoader(
      openDriver: { (driver, []) },
      openNVRTC: { accept in
        for library in [tooNew, fitting] where accept(library) { return (library, ["13", "12"]) }
        return (tooNew, ["13", "12"])
      })
    let runtime = CUDARuntime(loader: loader, cache: KernelCache(directory: nil))
    _ = try run(runtime)
    XCTAssertEqual(runtime.locked { runtime.builds[0] }, "CUBIN sm_90, NVRTC 12.8")
  }

  // MARK: - Failing calls

  func testLaunchFailureIsACUDAErrorNamedByTheDriverAndFreesEverything() throws {
    mockCUDA.launchResult = 719
    let runtime = MockCUDA.runtime()
    XCTAssertThrowsError(try run(runtime)) { error in
      guard let error = error as? CUDAError else { return XCTFail("expected a CUDAError, got \(error)") }
      XCTAssertEqual(error.library, .driver)
      XCTAssertEqual(error.call, "cuLaunchKernel")
      XCTAssertEqual(error.code, 719)
      XCTAssertEqual(error.name, "CUDA_ERROR_LAUNCH_FAILED")
      XCTAssertEqual(error.message, "unspecified launch failure")
      XCTAssertTrue(error.description.hasPrefix("device: cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED (719), unspecified launch failure"),
                    error.description)
    }
    // Every device buffer of the failed call was freed by its owner's deinit.
    XCTAssertEqual(mockCUDA.liveAllocations, 0)
  }

  func testCompileErrorCarriesTheCompilerLog() {
    mockCUDA.compileResult = 6
    mockCUDA.compileLog = "graph_attention_kernels.cu(12): error: identifier \"x\" is undefined"
    XCTAssertThrowsError(try run(MockCUDA.runtime())) { error in
      guard let error = error as? CUDAError else { return XCTFail("expected a CUDAError, got \(error)") }
      XCTAssertEqual(error.library, .nvrtc)
      XCTAssertEqual(error.name, "NVRTC_ERROR_COMPILATION")
      XCTAssertTrue(error.detail.contains("identifier \"x\" is undefined"), error.detail)
    }
    // CUBIN for sm_90 first, then the PTX fallback, both failed.
    XCTAssertEqual(mockCUDA.compileOptions.map { $0.last! }, ["--gpu-architecture=sm_90", "--gpu-architecture=compute_90"])
  }

  func testContextsAndModulesAreReleasedWithTheirOwners() throws {
    do {
      let runtime = MockCUDA.runtime()
      _ = try run(runtime)
      XCTAssertEqual(mockCUDA.contextsRetained, 1)
      XCTAssertEqual(mockCUDA.modulesLoaded, 1)
      _ = try run(runtime)
      XCTAssertEqual(mockCUDA.modulesLoaded, 1, "the module is loaded once per device")
    }
    XCTAssertEqual(mockCUDA.modulesUnloaded, 1)
    XCTAssertEqual(mockCUDA.contextsReleased, 1)
    XCTAssertEqual(mockCUDA.liveAllocations, 0)
  }

  // MARK: - Kernel cache

  func testCompiledKernelsAreCachedOnDiskByArchitectureAndCompiler() throws {
    let cache = directory.path("cache/cuda")
    _ = try run(MockCUDA.runtime(cacheDirectory: cache))
    XCTAssertEqual(mockCUDA.compiles, 1)
    let files = try FileManager.default.contentsOfDirectory(atPath: cache)
    XCTAssertEqual(files.count, 1)
    XCTAssertTrue(files[0].hasPrefix("kernels-") && files[0].hasSuffix("-sm_90.cubin"), files[0])

    // A new process (runtime) finds the image and does not compile.
    _ = try run(MockCUDA.runtime(cacheDirectory: cache))
    XCTAssertEqual(mockCUDA.compiles, 1)

    // Another architecture or NVRTC version is another entry.
    mockCUDA.computeCapability = (8, 0)
    _ = try run(MockCUDA.runtime(cacheDirectory: cache))
    mockCUDA.nvrtcVersion = (12, 6)
    _ = try run(MockCUDA.runtime(cacheDirectory: cache))
    XCTAssertEqual(mockCUDA.compiles, 3)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache).filter { !$0.hasPrefix(".") }.count, 3)
  }

  func testCacheKeyCoversSourceArchitectureOptionsAndVersion() {
    let base = KernelCache.fileName(source: "s", architecture: "sm_90", options: ["a"], compilerVersion: "13.0", cubin: true)
    XCTAssertEqual(base, KernelCache.fileName(source: "s", architecture: "sm_90", options: ["a"], compilerVersion: "13.0", cubin: true))
    for other in [
      KernelCache.fileName(source: "t", architecture: "sm_90", options: ["a"], compilerVersion: "13.0", cubin: true),
      KernelCache.fileName(source: "s", architecture: "sm_80", options: ["a"], compilerVersion: "13.0", cubin: true),
      KernelCache.fileName(source: "s", architecture: "sm_90", options: ["b"], compilerVersion: "13.0", cubin: true),
      KernelCache.fileName(source: "s", architecture: "sm_90", options: ["a"], compilerVersion: "12.8", cubin: true),
      KernelCache.fileName(source: "s", architecture: "sm_90", options: ["a"], compilerVersion: "13.0", cubin: false),
    ] {
      XCTAssertNotEqual(base, other)
    }
    // Stable across runs and platforms (unlike Hasher): a fixed value.
    XCTAssertEqual(KernelCache.stableHash(""), "cbf29ce4842223256c62272e07bb0142")
  }

  // MARK: - Memory and launch arguments

  func testTooLittleDeviceMemorySaysHowManyTokensFit() {
    mockCUDA.freeMemory = (256 << 20) + 1000
    assertDeviceError({ _ = try self.run(MockCUDA.runtime()) }, contains: ["tokens would fit", "GiB free of"])
    XCTAssertEqual(mockCUDA.liveAllocations, 0)
    XCTAssertTrue(mockCUDA.launches.isEmpty)
  }

  func testKernelArgumentsAndLaunchShape() throws {
    let graph = try Graph(parsing: "random:0.1:9+window:3+global:0,7")
    _ = try run(MockCUDA.runtime(), graph: graph, storage: .bfloat16, options: AttentionOptions(scale: 0.25, emptyRows: .nan))
    let launch = try XCTUnwrap(mockCUDA.launches.first)
    XCTAssertEqual(launch.grid.0, 10, "40 rows, 4 rows (warps) per block")
    XCTAssertEqual(launch.grid.1, 2, "batch * query heads")
    XCTAssertEqual(launch.block, 128)
    XCTAssertEqual(launch.shared, 4 * 4 * (8 + 4))
    let a = launch.arguments
    XCTAssertEqual(a[7].load(as: Int32.self), 3, "components")
    XCTAssertEqual(a[8].load(as: Int32.self), 0, "first new component")
    XCTAssertEqual([9, 10, 11, 12, 13, 14, 15].map { a[$0].load(as: Int64.self) }, [2, 2, 1, 40, 40, 8, 4])
    XCTAssertEqual(a[16].load(as: Float.self), 0.25)
    XCTAssertEqual(a[17].load(as: Int32.self), 1, "NaN for empty rows")
    // Implicit kinds first, random last; the global tokens' array address is patched into word 3.
    let words = mockCUDA.lastGraphWords
    XCTAssertEqual([words[0], words[8], words[16]], [2, 5, 6])
    XCTAssertEqual(words[1], 3)
    XCTAssertEqual(words[9], 2)
    XCTAssertNotEqual(words[8 + 3], 0)
    XCTAssertEqual(words[16 + 5], 9)
    XCTAssertEqual(Double(bitPattern: words[16 + 6]), 0.1)
    XCTAssertEqual(Double(bitPattern: words[16 + 7]), RandomGraph(probability: 0.1, seed: 9).logOneMinusP)
  }

  func testStateAccumulationExcludesVisitedGraphsFirst() throws {
    let runtime = MockCUDA.runtime()
    var state = try AttentionState(query: q, value: v)
    try state.cudaAccumulate(runtime: runtime, ordinal: 0, storage: .float32, query: q, key: k, value: v,
                             graph: try .window(2), options: AttentionOptions())
    try state.cudaAccumulate(runtime: runtime, ordinal: 0, storage: .float32, query: q, key: k, value: v,
                             graph: try Graph(parsing: "random:0.2:1+causal"), options: AttentionOptions())
    let launch = try XCTUnwrap(mockCUDA.launches.last)
    XCTAssertEqual(launch.arguments[7].load(as: Int32.self), 3)
    XCTAssertEqual(launch.arguments[8].load(as: Int32.self), 1, "the window, accumulated before, is excluded")
    XCTAssertEqual(launch.arguments[17].load(as: Int32.self), 6, "state in and out")
    XCTAssertEqual([mockCUDA.lastGraphWords[0], mockCUDA.lastGraphWords[8], mockCUDA.lastGraphWords[16]], [2, 1, 6])
    XCTAssertEqual(state.visited?.description, "window:2+random:0.2:1+causal")
    // The mock kernel does nothing, so the state round-trips the device unchanged.
    XCTAssertEqual(state.maxima, [Float](repeating: -.infinity, count: 80))
  }

  func testExplicitGraphsUploadCanonicalCSR() throws {
    let csr = try ExplicitGraph(rowOffsets: [0, 2, 2, 3], columns: [5, 1, 1], source: "csr:test")
    let encoding = CUDAGraphEncoding(graph: .explicit(csr) + .full, excluding: nil)
    XCTAssertEqual(encoding.words[0], 0, "full first")
    XCTAssertEqual(encoding.words[8], 7)
    XCTAssertEqual(encoding.words[9], 3, "row count")
    XCTAssertEqual(encoding.arrays.map(\.word), [3, 4])
    XCTAssertEqual(encoding.arrays[0].bytes, CUDAGraphEncoding.bytes([Int64(0), 2, 2, 3]))
    XCTAssertEqual(encoding.arrays[1].bytes, CUDAGraphEncoding.bytes([UInt32(1), 5, 1]))
  }

  // MARK: - Storage types

  /// Device uploads use the storage layer's one conversion (ties to even, one NaN rule), and refuse
  /// finite values that would become infinite.
  func testDeviceEncodingRoundsAsTheStorageLayerAndRejectsOverflow() throws {
    let ties: [Float] = [1, Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x3F80_8001),
                         -2.5, .nan, -.nan, .infinity, 1 + 0x1p-11, 0x1p-24, 65504]
    let tensor = Tensor(shape: [ties.count], scalars: ties)
    for type in [StorageType.float16, .bfloat16] {
      let bytes = try type.encode(tensor, name: "q")
      let halves = (0..<ties.count).map { UInt16(bytes[2 * $0]) | UInt16(bytes[2 * $0 + 1]) << 8 }
      for (x, h) in zip(ties, halves) {
        let back = type == .bfloat16 ? Float(bitPattern: UInt32(h) << 16) : Float(Float16(bitPattern: h))
        if x.isNaN {
          XCTAssertTrue(back.isNaN)
          XCTAssertEqual(back.sign, x.sign, "NaN keeps its sign on \(type)")
        } else {
          XCTAssertEqual(back, TensorView.rounded(x, to: type), "\(x) on \(type)")
        }
      }
    }
    XCTAssertEqual(try StorageType.bfloat16.encode(Tensor(shape: [3], scalars: ties[1...3].map { $0 }), name: "q"),
                   [0x80, 0x3F, 0x82, 0x3F, 0x81, 0x3F], "ties to even")
    let big = Tensor(shape: [1, 2], scalars: [1, 70000])
    XCTAssertThrowsError(try StorageType.float16.encode(big, name: "query")) { error in
      XCTAssertEqual((error as? GraphAttentionError)?.kind, .value)
      XCTAssertTrue("\(error)".contains("query element 1 is 70000.0"), "\(error)")
    }
    let small = Tensor(shape: [1, 2], scalars: [1, -0.5])
    XCTAssertEqual(try StorageType.float16.encode(small, name: "q"), [0x00, 0x3C, 0x00, 0xB8])
    XCTAssertEqual(try StorageType.bfloat16.encode(small, name: "q"), [0x80, 0x3F, 0x00, 0xBF])
  }
}
