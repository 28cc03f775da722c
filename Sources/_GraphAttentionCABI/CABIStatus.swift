#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import GraphAttention

/// Status codes every `ga_*` function returns: 0 for success, else the class of the problem, whose
/// text `ga_last_error` then gives. The first nine follow `GraphAttentionError.Kind`.
enum CABIStatus: Int32 {
  case ok = 0
  case file = 1
  case shape = 2
  case dtype = 3
  case mask = 4
  case index = 5
  case option = 6
  case value = 7
  case resource = 8
  case device = 9
  /// The caller broke the C contract (a null pointer, an unknown dtype code): a bug in the binding.
  case argument = 10
  /// An error the engine did not classify.
  case internalError = 11

  init(_ kind: GraphAttentionError.Kind) {
    switch kind {
    case .file: self = .file
    case .shape: self = .shape
    case .dtype: self = .dtype
    case .mask: self = .mask
    case .index: self = .index
    case .option: self = .option
    case .value: self = .value
    case .resource: self = .resource
    case .device: self = .device
    }
  }
}

/// A failure of a C call before or inside the engine, carried to the boundary and turned into a status.
struct CABIFailure: Error {
  var status: CABIStatus
  var message: String
}

/// The per-thread key of the last error text: a `strdup`ed C string freed on the next error or at thread exit,
/// so two Python threads calling at once each read their own message.
private let lastErrorKey: pthread_key_t = {
  var key = pthread_key_t()
  let created = pthread_key_create(&key) { pointer in free(pointer) }
  precondition(created == 0, "pthread_key_create failed")
  return key
}()

/// Replaces this thread's last error text (nil clears it).
func setLastError(_ text: String?) {
  free(pthread_getspecific(lastErrorKey))
  pthread_setspecific(lastErrorKey, text.map { strdup($0) })
}

/// Runs `body` and converts every thrown error into a status and this thread's last error text; nothing
/// thrown crosses the C boundary. Clears the text on success.
func withStatus(_ body: () throws -> Void) -> Int32 {
  do {
    try body()
    setLastError(nil)
    return CABIStatus.ok.rawValue
  } catch let error as GraphAttentionError {
    setLastError(error.description)
    return CABIStatus(error.kind).rawValue
  } catch let failure as CABIFailure {
    setLastError(failure.message)
    return failure.status.rawValue
  } catch {
    setLastError("internal: \(error)")
    return CABIStatus.internalError.rawValue
  }
}

/// The text of the last failed call on this thread, or NULL after a success. Owned by the library: valid
/// until the next `ga_*` call on the same thread; copy it before then.
@_cdecl("ga_last_error")
public func ga_last_error() -> UnsafePointer<CChar>? {
  pthread_getspecific(lastErrorKey).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) }
}

/// The version of the library and of its C ABI, "MAJOR.MINOR.PATCH"; a static string.
@_cdecl("ga_version")
public func ga_version() -> UnsafePointer<CChar> {
  UnsafeRawPointer(graphAttentionVersion.utf8Start).assumingMemoryBound(to: CChar.self)
}

