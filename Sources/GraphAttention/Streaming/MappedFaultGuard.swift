import _GraphAttentionSystem

/// Turns SIGBUS on the mapped files of a streamed job (an input truncated while it is read, an output
/// whose disk blocks vanish) into an error naming the file, instead of killing the process.
///
/// Why this design: the C handler (`FaultGuard.c`) maps an anonymous zero page over the faulting page and
/// records the address, so the interrupted kernel finishes its chunk on zeros; the job checks after each
/// chunk and throws before that chunk's rows are vouched for by a checkpoint. Nothing is added to the
/// kernels' loops (no `sigsetjmp` per access, no reads that cannot fault), so they run at the same speed.
enum MappedFaultGuard {
  /// The watched files of one job.
  struct Token {
    fileprivate let watched: [(slot: Int32, file: MappedFile)]
  }

  /// A fault recorded on a watched file.
  struct Fault: Error {
    let path: String
    let offset: Int

    /// The error a user sees; `resumable` names the progress record kept for `--resume`.
    func error(resumable record: String) -> GraphAttentionError {
      GraphAttentionError(
        .file, "\(path) changed during the run: reading or writing byte \(offset) failed (SIGBUS: the file was truncated, or the disk is full)",
        fix: "restore the file (or free disk space), then rerun with --resume to continue from \(record); or delete it to start over")
    }
  }

  /// Starts watching `files` (the handler is installed on first use).
  static func watch(_ files: [MappedFile]) -> Token {
    _ = ga_fault_guard_install()
    return Token(watched: files.map { (ga_fault_guard_watch($0.base, $0.byteCount), $0) })
  }

  /// Stops watching a job's files.
  static func unwatch(_ token: Token) {
    for (slot, _) in token.watched where slot >= 0 { ga_fault_guard_unwatch(slot) }
  }

  /// Throws `Fault` for the first watched file that faulted.
  static func check(_ token: Token) throws {
    for (slot, file) in token.watched where slot >= 0 {
      let address = ga_fault_guard_fault(slot)
      if address != 0 { throw Fault(path: file.path, offset: Int(address) - Int(bitPattern: file.base)) }
    }
  }
}
