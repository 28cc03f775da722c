import GraphAttention

#if canImport(Glibc)
import Glibc
#endif

/// `.npy` and safetensors files: the bytes are written to a per-process scratch file (the readers take
/// paths), then read through every public reader: `NPYArray`, `TensorFile.tensors(in:)` and
/// `TensorFile.open`, whose views are read element by element.
enum TensorFileTarget {
  /// A per-process directory, in memory (/dev/shm) where there is one: three times the executions per second.
  static let directory: String = {
    let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    return base + "/graph-attention-fuzz-\(getpid())"
  }()

  /// Removes the scratch files (at exit).
  static func removeDirectory() {
    unlink(directory + "/t.npy")
    unlink(directory + "/t.safetensors")
    rmdir(directory)
  }

  static func runNPY(_ data: UnsafeRawBufferPointer) {
    guard let path = write(data, name: "t.npy") else { return }
    if let array = try? NPYArray(contentsOf: path) {
      _ = try? array.integers(name: "fuzz")
      _ = array.count
    }
    readViews(path)
  }

  static func runSafetensors(_ data: UnsafeRawBufferPointer) {
    guard let path = write(data, name: "t.safetensors") else { return }
    readViews(path)
  }

  private static func readViews(_ path: String) {
    guard let descriptions = try? TensorFile.tensors(in: path) else {
      _ = try? TensorFile.open(path)
      return
    }
    for description in descriptions.prefix(4) {
      guard let view = try? TensorFile.open(path, name: description.name) else { continue }
      GraphOracle.require(view.shape.reduce(1, *) == view.count, "view count \(view.count) vs shape \(view.shape)")
      var sum: Float = 0
      for i in 0..<min(view.count, 4096) { sum += view.element(i) }
      if view.count > 0 { sum += view.element(view.count - 1) }
      _ = view.firstNonFinite(name: "fuzz")
      _ = sum
    }
  }

  /// Writes the input to `directory/name`, replacing the last input; nil if the file system refuses.
  private static func write(_ data: UnsafeRawBufferPointer, name: String) -> String? {
    mkdir(directory, 0o700)
    let path = directory + "/" + name
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var written = 0
    while written < data.count {
      let n = Glibc.write(fd, data.baseAddress! + written, data.count - written)
      if n <= 0 { return nil }
      written += n
    }
    return path
  }
}
