// `graph-attention-fuzz TARGET [libFuzzer options] [CORPUS...]`: one libFuzzer driver, five targets.
//
// Each target feeds bytes to a public parser and, when the input is accepted, checks what it built against
// an independent oracle (a crash is a finding): thrown `GraphAttentionError`s are the expected outcome of
// bad input; a trap, an ASan report, a leak or a timeout is a bug.
import _FuzzShims
import GraphAttention

#if canImport(Glibc)
import Glibc
#endif

@main
enum FuzzMain {
  /// The targets, by name.
  static let targets: [(name: String, run: @Sendable (UnsafeRawBufferPointer) -> Void)] = [
    ("mask", MaskTarget.run),
    ("npy", TensorFileTarget.runNPY),
    ("safetensors", TensorFileTarget.runSafetensors),
    ("mtx", MatrixMarketTarget.run),
    ("arrays", ArraysTarget.run),
  ]

  /// The target the C callback runs; set once before the driver starts.
  nonisolated(unsafe) static var selected: ((UnsafeRawBufferPointer) -> Void)?

  static func main() {
    let arguments = CommandLine.arguments
    guard arguments.count >= 2, let target = targets.first(where: { $0.name == arguments[1] }) else {
      let names = targets.map(\.name).joined(separator: "|")
      print("usage: graph-attention-fuzz \(names) [libFuzzer options] [CORPUS...]")
      exit(2)
    }
    selected = target.run
    atexit { TensorFileTarget.removeDirectory() }
    // libFuzzer sees argv without the target name.
    var driverArguments: [UnsafeMutablePointer<CChar>?] = ([arguments[0]] + arguments.dropFirst(2)).map { strdup($0) } + [nil]
    var argc = Int32(driverArguments.count - 1)
    let status = driverArguments.withUnsafeMutableBufferPointer { buffer -> Int32 in
      var argv = buffer.baseAddress
      return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        FuzzMain.selected?(UnsafeRawBufferPointer(start: data, count: size))
        return 0
      }
    }
    exit(status)
  }
}
