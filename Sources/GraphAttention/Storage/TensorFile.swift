#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import _GraphAttentionSystem

import Synchronization

/// Opening and creating tensors in `.npy` and `.safetensors` files through memory mappings.
///
/// Nothing is loaded: `open` maps the file and validates its header, `create` sizes a sparse file
/// and maps it read-write, so tensors far larger than RAM can be read and written with 64-bit offsets.
///
/// ```swift
/// let q = try TensorFile.open("q.npy")                         // fp32 or fp16 .npy
/// let k = try TensorFile.open("qkv.safetensors", name: "k")    // F32, F16 or BF16
/// let output = try TensorFile.create("o.npy", shape: q.shape, type: .float16)
/// // ... write output.view, dropping pages behind ...
/// try output.commit()                                           // o.npy appears, complete
/// ```
///
/// Formats: `.npy` versions 1.0-3.0, C order, little-endian `<f4` or `<f2`; `.safetensors` with
/// `F32`, `F16` or `BF16` tensors. bfloat16 exists only in `.safetensors` (numpy has no such type).
public enum TensorFile {
  /// One tensor of a file to create.
  public struct Entry: Sendable, Equatable {
    /// The safetensors name (ignored for `.npy`).
    public var name: String
    /// Extents, outermost first.
    public var shape: [Int]
    /// Element type.
    public var type: StorageType

    /// Describes a tensor to create.
    public init(name: String, shape: [Int], type: StorageType) {
      self.name = name
      self.shape = shape
      self.type = type
    }
  }

  /// A tensor found in a file, as `tensors(in:)` lists them.
  public struct Description: Sendable, Equatable {
    /// The tensor's name (`""` for `.npy`).
    public var name: String
    /// Extents, outermost first.
    public var shape: [Int]
    /// The dtype as the file writes it (`"<f2"`, `"BF16"`, `"I64"`...).
    public var dtype: String
    /// The storage type, or nil when the dtype is not one GraphAttention maps.
    public var type: StorageType?
    /// Absolute byte offset of the first element in the file.
    public var offset: Int
    /// Bytes of data.
    public var byteCount: Int
  }

  /// Maps a .npy (fp32/fp16) or .safetensors (F32/F16/BF16) tensor; `name` selects the safetensors tensor
  /// (errors list the names present). Validates header, dtype, shape and that the file is long enough.
  ///
  /// The format is recognised from the file's first bytes, not its name. For `.npy`, `name` is
  /// ignored. For `.safetensors`, `name` may be omitted when the file holds a single tensor.
  ///
  /// - Returns: a read-only view whose owner is the `MappedFile`.
  /// fp64 tensors (`<f8`, safetensors `F64`) are rounded to fp32 into memory (4 bytes per element, not
  /// mapped), and so are tensors whose data is not aligned to their element size (a safetensors header
  /// not padded to it) copied; everything else stays mapped.
  ///
  /// - Throws: `GraphAttentionError` `.file` (missing, unreadable, empty, truncated or malformed file;
  ///   unknown tensor name, with the names present) or `.dtype` (integers, complex or other types,
  ///   with the conversion to use).
  /// - Complexity: O(header size); no data is read.
  public static func open(_ path: String, name: String? = nil) throws -> TensorView {
    let file = try MappedFile(path: path)
    let layouts = try tensorLayouts(file, path: path)
    let chosen = try select(layouts, name: name, path: path)
    let source = UnsafeRawPointer(file.base + chosen.offset)
    guard let type = chosen.type else {
      guard chosen.dtype == NPYElementType.float64.rawValue || chosen.dtype == "F64" else {
        throw unsupportedType(chosen, path: path)
      }
      return widenedFloat64(source, shape: chosen.shape)
    }
    guard Int(bitPattern: source) % type.byteCount == 0 else {
      // safetensors writers need not pad the header to the element size (MLX does not): copy the
      // tensor to aligned memory rather than hand the kernels misaligned elements.
      let copy = MutableTensorView(allocating: chosen.shape, type: type)
      copy.base.copyMemory(from: source, byteCount: chosen.byteCount)
      return copy.readOnly
    }
    return TensorView(shape: chosen.shape, type: type, base: source, owner: file)
  }

  /// fp64 elements (`<f8`, `F64`) rounded to fp32 (nearest, ties to even) into a heap tensor: the
  /// engine computes in fp32, so the rounding happens once, here, as the README promises.
  /// - Complexity: O(elements) time, 4 bytes per element of memory.
  private static func widenedFloat64(_ source: UnsafeRawPointer, shape: [Int]) -> TensorView {
    let output = MutableTensorView(allocating: shape, type: .float32)
    let destination = output.base.assumingMemoryBound(to: Float.self)
    for i in 0..<output.count {
      destination[i] = Float(Double(bitPattern: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self))))
    }
    return output.readOnly
  }

  /// The tensors in a `.npy` (one, named `""`) or `.safetensors` file, in file order.
  /// - Throws: `GraphAttentionError(.file)` for missing or malformed files.
  /// - Complexity: O(header size).
  public static func tensors(in path: String) throws -> [Description] {
    let file = try MappedFile(path: path)
    return try tensorLayouts(file, path: path).map {
      Description(name: $0.name, shape: $0.shape, dtype: $0.dtype, type: $0.type, offset: $0.offset, byteCount: $0.byteCount)
    }
  }

  /// Creates a file for an output of `shape` and `type` (.npy for f32/f16, .safetensors for any, chosen by extension;
  /// bf16 to .npy is an error saying to use .safetensors), sized and with its header written, mapped read-write.
  ///
  /// The data is written at `temporaryPath`, renamed to `path` by `commit()`; `abandon()` (or deinit without commit)
  /// removes it, so a failed run leaves an existing file untouched. Checks free disk space first (statvfs) and
  /// fails with "needs X GiB, Y GiB free on <fs>" before creating anything. The file is sized with `ftruncate` and,
  /// with `reservingBlocks`, its disk blocks are reserved (`fallocate`), so a disk filled later by another writer
  /// is an error here rather than a SIGBUS on a mapped page mid-run; elements never written read as zero.
  ///
  /// - Parameters:
  ///   - path: the final file; its extension (`.npy` or `.safetensors`, any case) picks the format. Its
  ///     directory must exist. An existing file there is replaced only by `commit()`.
  ///   - shape: extents, outermost first.
  ///   - type: the element type.
  ///   - name: the tensor's name in a `.safetensors` file (ignored for `.npy`).
  ///   - resumable: when true the temporary file is `resumePath(for: path)` (replacing any file there)
  ///     and is kept if the `OutputTensorFile` goes away without `commit()` or `abandon()`, so that
  ///     `reopenForResume` can continue it.
  ///   - reservingBlocks: reserve the file's disk blocks now (the default); false keeps it sparse, for
  ///     outputs mostly left unwritten. File systems without `fallocate` keep it sparse either way.
  /// - Throws: `GraphAttentionError` `.resource` (not enough disk space, also when reserving), `.dtype` (bf16 to `.npy`),
  ///   `.shape` (a negative extent or a byte size overflowing 64 bits), `.file` (unknown extension,
  ///   missing or unwritable directory, `path` is a directory, a failed system call with its `errno`).
  /// - Complexity: O(header size); the data is not touched.
  public static func create(_ path: String, shape: [Int], type: StorageType, name: String = "o",
                            resumable: Bool = false, reservingBlocks: Bool = true) throws -> OutputTensorFile {
    try create(path, tensors: [Entry(name: name, shape: shape, type: type)], resumable: resumable, reservingBlocks: reservingBlocks)
  }

  /// Creates a `.safetensors` file holding several tensors (back to back, in the order given), or a
  /// `.npy` file from a single entry; otherwise as `create(_:shape:type:name:resumable:)`.
  ///
  /// - Throws: as the single-tensor form, and `GraphAttentionError(.option)` for an empty list, several
  ///   tensors for `.npy`, or empty, duplicate or reserved (`__metadata__`) names.
  public static func create(_ path: String, tensors: [Entry], resumable: Bool = false,
                            reservingBlocks: Bool = true) throws -> OutputTensorFile {
    try create(path, tensors: tensors, resumable: resumable, reservingBlocks: reservingBlocks, checked: nil)
  }

  /// `create(_:tensors:resumable:reservingBlocks:)` onto a destination checked earlier (`checked`, whose path is
  /// `path`), or checked now when nil.
  static func create(_ path: String, tensors: [Entry], resumable: Bool, reservingBlocks: Bool,
                     checked: CheckedOutputPath?) throws -> OutputTensorFile {
    let format = try TensorFileFormat(path: path)
    guard !tensors.isEmpty else {
      throw GraphAttentionError(.option, "no tensors to write to \(path)", fix: "pass at least one tensor")
    }
    for tensor in tensors {
      guard let count = npyElementCount(tensor.shape),
            !count.multipliedReportingOverflow(by: tensor.type.byteCount).overflow else {
        throw GraphAttentionError(.shape, "tensor shape \(tensor.shape) has a negative extent or more than 2^63 bytes",
                                  fix: "pass non-negative extents whose product fits in 64 bits")
      }
    }
    let (header, offsets) = try headerBytes(format, tensors, path: path)
    var total = header.count
    for tensor in tensors {
      let (sum, overflow) = total.addingReportingOverflow(tensor.shape.reduce(1, *) * tensor.type.byteCount)
      guard !overflow else {
        throw GraphAttentionError(.shape, "the tensors for \(path) total more than 2^63 bytes", fix: "use smaller shapes")
      }
      total = sum
    }

    let destination = try checked ?? OutputPath(path).checked()
    let output = destination.location, existingMode = destination.existingMode
    let directory = output.directory
    try DiskSpace.require(total, at: directory, for: "creating \(path)",
                          advice: "or write a 16-bit output (run: --output-dtype f16 or bf16)")

    // The temporary file: created exclusively (or, when resumable, at a fixed name, replaced).
    let temporary: String
    let fd: Int32
    if resumable {
      temporary = output.partialPath
      fd = try output.createFixedTemporary(temporary, flags: O_RDWR)
    } else {
      (fd, temporary) = try output.createTemporary(flags: O_RDWR)
    }
    var keep = false
    defer {
      if !keep { unlink(temporary) }
    }
    if let existingMode { fchmod(fd, existingMode) }
    if case .failure(let code) = nothingOrErrno({ ftruncate(fd, off_t(total)) }) {
      close(fd)
      throw GraphAttentionError(
        .file, "cannot size \(temporary) to \(total) bytes: \(code)",
        fix: code == .fileTooLarge ? "the file system limits file sizes; write to another file system (ext4 allows 16 TiB, xfs more)"
          : "check free disk space and permissions", errno: code)
    }
    // Reserve the blocks now, so a disk filled later (by this job or another writer) is an error here,
    // before any work, not a SIGBUS on a mapped page half-way. File systems without fallocate keep the
    // sparse file (the up-front free-space check above still applies).
    var code: Int32 = 0
    if reservingBlocks, case .failure(let failure) = nothingOrErrno({ ga_reserve_file_blocks(fd, Int64(total)) }) {
      code = failure.rawValue
    }
    if code == ENOSPC || code == EDQUOT || code == EFBIG {
      close(fd)
      throw GraphAttentionError(.resource, "cannot reserve \(storageGiB(total)) GiB on disk for \(path): \(Errno(rawValue: code))",
                                fix: "free disk space, write to a larger file system, or use a smaller shape or a 16-bit output (run: --output-dtype f16 or bf16)",
                                errno: Errno(rawValue: code))
    }
    do {
      try header.withUnsafeBytes { try storageWriteAll(fd, $0, path: temporary) }
    } catch {
      close(fd)
      throw error
    }
    let mapping = try MappedFile(adopting: fd, path: temporary, access: .readWrite)
    let views = zip(tensors, offsets).map { tensor, offset in
      MutableTensorView(shape: tensor.shape, type: tensor.type, base: mapping.base + offset, owner: mapping)
    }
    keep = true
    return OutputTensorFile(path: path, temporaryPath: temporary, names: tensors.map(\.name),
                            views: views, mapping: mapping, keepsTemporaryFile: resumable)
  }

  /// The temporary path `create(..., resumable: true)` uses for `path`: `.<name>.partial` in the same directory.
  public static func resumePath(for path: String) -> String {
    (try? OutputPath(path))?.partialPath ?? path + ".partial"
  }

  /// Opens an existing, partially written output for resume: maps `temporaryPath` read-write after
  /// checking that its header describes exactly `shape`, `type` (and, for `.safetensors`, `name`).
  ///
  /// The data already written is kept; which rows are complete is the caller's record to keep.
  /// The returned file keeps `temporaryPath` if it goes away uncommitted (`abandon()` removes it).
  ///
  /// - Parameters:
  ///   - temporaryPath: the file to continue, e.g. `TensorFile.resumePath(for: "o.npy")`.
  ///   - path: where `commit()` renames it; by default derived from `temporaryPath`
  ///     (`dir/.o.npy.partial` and `dir/.o.npy.tmp-<pid>-<random>` both give `dir/o.npy`).
  /// - Throws: `GraphAttentionError(.file)` when the file is missing, malformed, or was created for
  ///   another shape, type or name (the message says which), or `path` cannot be derived.
  /// - Complexity: O(header size).
  public static func reopenForResume(temporaryPath: String, shape: [Int], type: StorageType, name: String = "o",
                                     path: String? = nil) throws -> OutputTensorFile {
    let temporary = try OutputPath(temporaryPath)
    let finalPath: String
    if let path {
      finalPath = path
    } else if let derived = OutputPath.outputName(ofTemporary: temporary.name) {
      finalPath = temporary.sibling(derived)
    } else {
      throw GraphAttentionError(
        .option, "cannot tell where \(temporaryPath) should be renamed to: it is not named .<name>.partial or .<name>.tmp-...",
        fix: "pass the final path explicitly (path:)")
    }
    let format = try TensorFileFormat(path: finalPath)
    let mapping = try MappedFile(path: temporaryPath, access: .readWrite)
    let layouts = try tensorLayouts(mapping, path: temporaryPath)
    let chosen = try select(layouts, name: format == .npy ? nil : name, path: temporaryPath)
    guard chosen.type == type, chosen.shape == shape else {
      throw GraphAttentionError(
        .file, "\(temporaryPath) holds \(chosen.label) of shape \(chosen.shape) and dtype \(chosen.dtype), but shape \(shape) of \(type.shortName) is being resumed",
        fix: "delete \(temporaryPath) to start the output over, or resume with the original shape and dtype")
    }
    let view = MutableTensorView(shape: shape, type: type, base: mapping.base + chosen.offset, owner: mapping)
    return OutputTensorFile(path: finalPath, temporaryPath: temporaryPath, names: [chosen.name],
                            views: [view], mapping: mapping, keepsTemporaryFile: true)
  }

  // MARK: - Implementation

  /// A tensor's place in a mapped file.
  struct Layout {
    var name: String
    var shape: [Int]
    var dtype: String
    var type: StorageType?
    var offset: Int
    var byteCount: Int
    var isNPY: Bool

    var label: String { isNPY ? "the array" : "tensor '\(name)'" }
  }

  /// Every tensor in a mapped `.npy` or `.safetensors` file, validated against the file's length.
  static func tensorLayouts(_ file: MappedFile, path: String) throws -> [Layout] {
    let bytes = UnsafeRawBufferPointer(start: file.base, count: file.byteCount)
    let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
    if bytes.count >= 6, bytes.prefix(6).elementsEqual(magic) {
      return [try npyLayout(bytes, path: path)]
    }
    if bytes.count >= 9, bytes[8] == UInt8(ascii: "{") {
      let header = try SafetensorsHeader.parse(bytes, path: path)
      return header.entries.map { entry in
        Layout(name: entry.name, shape: entry.shape, dtype: entry.dtype, type: StorageType(safetensorsName: entry.dtype),
               offset: header.dataStart + entry.begin, byteCount: entry.end - entry.begin, isNPY: false)
      }
    }
    throw GraphAttentionError(
      .file, "\(path) is neither a .npy file (it does not start with \\x93NUMPY) nor a .safetensors file (no JSON header after 8 bytes)",
      fix: "pass a file written by np.save or safetensors' save_file")
  }

  /// The single array of a mapped `.npy` file.
  private static func npyLayout(_ bytes: UnsafeRawBufferPointer, path: String) throws -> Layout {
    let preamble = try NPYPreamble(bytes, path: path)
    let headerStart = preamble.headerStart, headerLength = preamble.headerLength
    guard headerStart + headerLength <= bytes.count else { throw npyTruncatedHeader(path) }
    var parser = NPYHeaderParser(bytes: Array(bytes[headerStart..<(headerStart + headerLength)]), path: path)
    let fields = try parser.parse()
    let needed = try fields.dataByteCount(path: path)
    let dataStart = headerStart + headerLength
    guard bytes.count - dataStart >= needed else {
      throw GraphAttentionError(
        .file, "\(path) is truncated: shape \(npyShapeText(fields.shape)) of '\(fields.elementType.rawValue)' needs \(needed) bytes of data, but only \(bytes.count - dataStart) bytes follow the header",
        fix: "the file is incomplete; re-create it")
    }
    let type: StorageType? = fields.elementType == .float32 ? .float32 : (fields.elementType == .float16 ? .float16 : nil)
    return Layout(name: "", shape: fields.shape, dtype: fields.elementType.rawValue, type: type, offset: dataStart,
                  byteCount: needed, isNPY: true)
  }

  /// The tensor `name` selects (any for `.npy`; the only one when `name` is nil).
  private static func select(_ layouts: [Layout], name: String?, path: String) throws -> Layout {
    if layouts.count == 1, layouts[0].isNPY { return layouts[0] }
    let listing = layouts.prefix(20).map { "\($0.name) \($0.shape) \($0.dtype)" }.joined(separator: ", ")
      + (layouts.count > 20 ? ", ... (\(layouts.count) in all)" : "")
    guard let name else {
      guard layouts.count == 1 else {
        throw GraphAttentionError(
          .option, layouts.isEmpty ? "\(path) holds no tensors" : "\(path) holds \(layouts.count) tensors (\(listing)); which one is meant is not said",
          fix: layouts.isEmpty ? "pass a file that holds the tensor" : "name one, e.g. FILE.safetensors:\(layouts[0].name) or name: \"\(layouts[0].name)\"")
      }
      return layouts[0]
    }
    guard let found = layouts.first(where: { $0.name == name }) else {
      throw GraphAttentionError(
        .file, "\(path) has no tensor named '\(name)'; it holds \(layouts.isEmpty ? "none" : listing)",
        fix: "use one of the names present")
    }
    return found
  }

  private static func unsupportedType(_ layout: Layout, path: String) -> GraphAttentionError {
    let complex = layout.dtype.hasPrefix("<c") || layout.dtype.hasPrefix("C")
    let conversion = layout.isNPY
      ? (complex ? "keep the real part, np.save(path, a.real.astype('<f4'))" : "np.save(path, a.astype('<f4')) or a.astype('<f2')")
      : "store it as F32, F16, BF16 or F64"
    return GraphAttentionError(
      .dtype, "\(path): \(layout.label) has dtype \(layout.dtype)\(complex ? " (complex numbers)" : ""); tensors must be real: fp32, fp16, bf16 or fp64",
      fix: "convert it: \(conversion)")
  }

  /// The header for `tensors` in `format`, and each tensor's absolute data offset.
  private static func headerBytes(_ format: TensorFileFormat, _ tensors: [Entry], path: String) throws -> ([UInt8], [Int]) {
    switch format {
    case .npy:
      guard tensors.count == 1 else {
        throw GraphAttentionError(.option, "a .npy file holds one array, but \(tensors.count) tensors were to be written to \(path)",
                                  fix: "write them to a .safetensors file, or to one .npy file each")
      }
      guard let descriptor = tensors[0].type.npyDescriptor else {
        throw GraphAttentionError(.dtype, "\(path): .npy files cannot hold bfloat16 (numpy has no such type)",
                                  fix: "write a .safetensors file instead (e.g. \(storageReplacingExtension(path, with: "safetensors"))), or use f16 or f32")
      }
      let header = npyHeader(descr: descriptor, shape: tensors[0].shape)
      return (header, [header.count])
    case .safetensors:
      var names = Set<String>()
      for tensor in tensors {
        guard !tensor.name.isEmpty, tensor.name != "__metadata__", names.insert(tensor.name).inserted else {
          throw GraphAttentionError(.option, "tensor name '\(tensor.name)' for \(path) is empty, reserved or repeated",
                                    fix: "give every tensor a distinct, non-empty name other than __metadata__")
        }
      }
      return SafetensorsHeader.encode(tensors.map { ($0.name, $0.shape, $0.type) })
    }
  }
}

/// An output being written through a read-write mapping of a temporary file, made visible at
/// `path` by `commit()`.
///
/// Writers store through `view` (or `views` for several tensors) from any number of threads, on
/// disjoint elements, and may call `view.dropPages(elements:)` behind them to keep memory bounded.
/// `commit()` writes everything to disk and renames the file into place; `abandon()` deletes it.
/// Going away uncommitted deletes it too, except for resumable outputs. The views stay valid after
/// either (they keep the mapping alive).
public final class OutputTensorFile: @unchecked Sendable {
  /// The first (usually only) tensor.
  public let view: MutableTensorView
  /// Every tensor, in the order they were created.
  public let views: [MutableTensorView]
  /// The tensors' names, parallel to `views` (`.npy` files have one).
  public let names: [String]
  /// Where `commit()` puts the file.
  public let path: String
  /// Where the data is written until then.
  public let temporaryPath: String
  /// The read-write mapping of the temporary file.
  public let mapping: MappedFile

  private let keepsTemporaryFile: Bool
  private enum State { case open, committed, abandoned }
  private let state = Mutex(State.open)

  init(path: String, temporaryPath: String, names: [String], views: [MutableTensorView],
       mapping: MappedFile, keepsTemporaryFile: Bool) {
    self.path = path
    self.temporaryPath = temporaryPath
    self.names = names
    self.views = views
    self.view = views[0]
    self.mapping = mapping
    self.keepsTemporaryFile = keepsTemporaryFile
  }

  deinit {
    if state.withLock({ $0 }) == .open && !keepsTemporaryFile { unlink(temporaryPath) }
  }

  /// The view of the tensor called `name`, or nil.
  public func view(named name: String) -> MutableTensorView? {
    names.firstIndex(of: name).map { views[$0] }
  }

  /// Writes every page to disk (`msync`, `fsync`), then renames the temporary file to `path`
  /// (atomically replacing any file there) and syncs the directory. Calling it again does nothing.
  ///
  /// - Throws: `GraphAttentionError(.file)` with the `errno` text when writing or renaming fails (the
  ///   previous file at `path`, if any, is then unchanged), or when the output was abandoned.
  /// - Complexity: O(dirty pages): bounded by the disk's write speed.
  public func commit() throws {
    try state.withLock { state in
      switch state {
      case .committed: return
      case .abandoned:
        throw GraphAttentionError(.file, "\(path) cannot be committed: it was abandoned and its temporary file removed",
                                  fix: "create the output again")
      case .open: break
      }
      try mapping.sync()
      try OutputPath(path).commit(descriptor: mapping.descriptor, temporary: temporaryPath)
      state = .committed
    }
  }

  /// Deletes the temporary file (unless already committed); `path` is left as it was.
  /// Views stay readable and writable, but nothing written reaches any file. Idempotent.
  public func abandon() {
    state.withLock { state in
      guard state == .open else { return }
      unlink(temporaryPath)
      state = .abandoned
    }
  }

  /// Whether `commit()` has succeeded.
  public var isCommitted: Bool { state.withLock { $0 == .committed } }
}

// MARK: - Helpers

/// The two container formats, chosen by file extension when creating.
enum TensorFileFormat: Equatable {
  case npy, safetensors

  init(path: String) throws {
    let lower = path.lowercased()
    if lower.hasSuffix(".npy") {
      self = .npy
    } else if lower.hasSuffix(".safetensors") {
      self = .safetensors
    } else {
      throw GraphAttentionError(.file, "cannot tell the format of \(path) from its name",
                                fix: "end the file name in .npy (fp32, fp16) or .safetensors (fp32, fp16, bf16)")
    }
  }

  var fileExtension: String { self == .npy ? "npy" : "safetensors" }
}

/// `path` with its extension replaced (`o.npy` -> `o.safetensors`).
func storageReplacingExtension(_ path: String, with newExtension: String) -> String {
  guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return path + "." + newExtension }
  return String(path[..<dot]) + "." + newExtension
}

