/// An error in user input or the environment, reported with what is wrong and how to fix it.
///
/// Every problem that user input can cause (files, shapes, dtypes, graph specifications, indices,
/// options, non-finite values, unwritable outputs) is reported with this type instead of a trap.
/// Programmer errors at the Swift API (such as passing a negative thread count) are still
/// `precondition` failures.
///
/// ```swift
/// do { _ = try Graph(parsing: "window:-3") }
/// catch let error as GraphAttentionError { print(error) }
/// // mask: window radius must be >= 0, got -3. Fix: use window:W with W a non-negative integer, e.g. window:256.
/// ```
public struct GraphAttentionError: Error, Equatable, CustomStringConvertible, Sendable {
  /// The broad class of a problem, useful for tests and for choosing an exit code.
  public enum Kind: String, Equatable, Sendable {
    /// A file is missing, unreadable, malformed or cannot be written.
    case file
    /// Tensor shapes do not fit together.
    case shape
    /// An element type is not supported where it was used.
    case dtype
    /// A graph specification is malformed or its parameters are out of range.
    case mask
    /// An explicit graph names a row or column outside the tensors.
    case index
    /// An option has an invalid value.
    case option
    /// An input holds NaN or infinity.
    case value
    /// The engine could not get memory or threads it needs.
    case resource
    /// A compute device is missing or unusable: no CUDA driver or NVRTC, no GPU, too little device memory.
    case device
  }

  /// The class of the problem.
  public var kind: Kind
  /// What is wrong, naming the offending file, option or value.
  public var problem: String
  /// What the user can do about it.
  public var fix: String
  /// The system error behind the problem, when a system call failed (`.noSpace` for a full disk,
  /// `.permissionDenied`, `.readOnlyFileSystem`...); nil otherwise.
  public var errno: Errno?

  /// Creates an error from its class, what is wrong, how to fix it and, when a system call failed, its errno.
  public init(_ kind: Kind, _ problem: String, fix: String, errno: Errno? = nil) {
    self.kind = kind
    self.problem = problem
    self.fix = fix
    self.errno = errno
  }

  /// `"<kind>: <problem>. Fix: <fix>."`, one line, suitable for a command-line error message.
  public var description: String {
    let p = problem.hasSuffix(".") ? String(problem.dropLast()) : problem
    let f = fix.hasSuffix(".") ? String(fix.dropLast()) : fix
    return "\(kind.rawValue): \(p). Fix: \(f)."
  }
}
