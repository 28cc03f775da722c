import Foundation

/// Ctrl-C as a request to stop after the current chunk, instead of killing the process mid-write.
enum Interrupt {
  nonisolated(unsafe) static var requested = false

  static func install() {
    signal(SIGINT) { _ in
      if Interrupt.requested { _exit(130) }  // a second Ctrl-C stops at once; --resume still works
      Interrupt.requested = true
    }
  }
}
