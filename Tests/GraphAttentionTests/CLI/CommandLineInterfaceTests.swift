import Foundation
import GraphAttention
import XCTest

/// The command line's surface: help texts (tested as swift-argument-parser's MathExampleTests does),
/// `--version`, unknown subcommands, repeated and negative options, storage spellings, bench's early
/// checks and the messages for outputs that cannot be written.
final class CommandLineInterfaceTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws {
    directory = try StorageScratchDirectory()
  }

  override func tearDown() {
    directory.remove()
  }

  /// Help is wrapped at the terminal's width: fix it at 80 columns.
  private func graphAttention(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try CommandLineRunner.run(arguments, environment: ["COLUMNS": "80"])
  }

  // MARK: - Help and version

  func testInspectHelp() throws {
    let helpText = """
      OVERVIEW: Edges, density, degrees and memory of a mask over L tokens (heads and
      d size the memory estimate).

      Edge counts are exact: in closed form for single implicit graphs (any length),
      row by row for unions and random graphs, with progress on stderr. Masks whose
      edge count cannot fit in 64 bits are refused.

      USAGE: graph-attention inspect --mask <mask> --tokens <tokens> [--heads <heads>] [--dim <dim>] [--key-tokens <key-tokens>] [--edges-out <edges-out>] [--json]

      OPTIONS:
        --mask <mask>           Mask specification, e.g. window:256+global:0 (see
                                graph-attention --help for the grammar).
        --tokens <tokens>       Tokens L (the sequence length).
        --heads <heads>         Heads H. (default: 1)
        --dim <dim>             Head dimension d (d_k = d_v). (default: 64)
        --key-tokens <key-tokens>
                                Key tokens (default: L; differ only for explicit
                                graphs, full, random and the causal kinds, aligned
                                bottom-right).
        --edges-out <edges-out> Also write the edges as an int64 [E, 2] (row, column)
                                .npy file (for cross-checks; small graphs).
        --json                  Print one JSON object.
        --version               Show the version.
        -h, --help              Show help information.


      """
    for command in [["inspect", "--help"], ["inspect", "-h"], ["help", "inspect"]] {
      let result = try graphAttention(command)
      XCTAssertEqual(result.status, 0, result.stderr)
      XCTAssertEqual(result.stdout, helpText, "\(command)")
    }
  }

  func testEveryHelpIsCompleteAndUsesOneStorageSpelling() throws {
    for command in ["demo", "run", "grad", "verify", "inspect", "bench", "time", "generate", "plan", "cuda-compile", "cuda-info"] {
      let result = try graphAttention([command, "--help"])
      XCTAssertEqual(result.status, 0, "\(command): \(result.stderr)")
      // Every option says what it is for (`run --help` listed --key-name and --value-name with nothing).
      let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
      let signature = try NSRegularExpression(pattern: #"^  (-\S+, )?--[a-z0-9-]+(/--[a-z0-9-]+)?( <[a-z0-9-]+>)?( \.\.\.)?"#)
      for (index, line) in lines.enumerated() where line.hasPrefix("  -") {
        let range = NSRange(line.startIndex..., in: line)
        let end = signature.firstMatch(in: line, range: range).map { $0.range.upperBound } ?? 0
        let rest = String(line.utf16.dropFirst(end)).map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        let next = index + 1 < lines.count ? lines[index + 1] : ""
        let helpOnNextLine = next.hasPrefix(String(repeating: " ", count: 26))
          && !next.trimmingCharacters(in: .whitespaces).hasPrefix("(default")
        XCTAssertTrue(!(rest.isEmpty || rest.hasPrefix("(default")) || helpOnNextLine, "\(command): option without help: \(line)")
      }
      XCTAssertFalse(result.stdout.contains("default: float32"), command)
      XCTAssertFalse(result.stdout.contains(" - \n"), "\(command): a value without a description")
    }
    let verify = try graphAttention(["verify", "--help"]).stdout
    XCTAssertTrue(verify.contains("(default: f32)"), verify)
    XCTAssertTrue(verify.contains("f16               - IEEE binary16; also fp16, float16, half"), verify)
  }

  func testVersion() throws {
    let result = try graphAttention(["--version"])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertEqual(result.stdout, "0.1.0\n")
  }

  func testUnknownSubcommandSaysSoInsteadOfTheDemosUsage() throws {
    for (word, suggestion) in [("nosuch", nil), ("rnu", "'run'"), ("verfy", "'verify'")] {
      let result = try graphAttention([word, "--tokens", "4"])
      XCTAssertEqual(result.status, 64)
      XCTAssertTrue(result.stderr.contains("unknown subcommand '\(word)'"), result.stderr)
      XCTAssertTrue(result.stderr.contains("demo, run, grad, verify"), result.stderr)
      if let suggestion { XCTAssertTrue(result.stderr.contains("did you mean \(suggestion)"), result.stderr) }
      XCTAssertFalse(result.stderr.contains("graph-attention demo ["), result.stderr)
    }
    XCTAssertEqual(try graphAttention(["help", "verify"]).status, 0)
  }

  // MARK: - Options

  func testARepeatedMaskIsRefusedNotSilentlyReplaced() throws {
    for command in [["verify", "--tokens", "8", "--mask", "causal", "--mask", "window:2"],
                    ["inspect", "--tokens", "8", "--mask=causal", "--mask", "window:2"],
                    ["run", "--query", "q.npy", "--key", "k.npy", "--value", "v.npy", "--output", "o.npy",
                     "--mask", "causal", "--mask", "window:2"]] {
      let result = try graphAttention(command)
      XCTAssertEqual(result.status, 64, "\(command)")
      XCTAssertTrue(result.stderr.contains("--mask was given 2 times (causal, window:2)"), result.stderr)
      XCTAssertTrue(result.stderr.contains("--mask causal+window:2"), result.stderr)
    }
  }

  func testTensorNamesWithNPYInputsAreRefusedNotIgnored() throws {
    for (option, input) in [("--query-name", "--query"), ("--key-name", "--key"), ("--value-name", "--value")] {
      var arguments = ["run", "--query", "q.npy", "--key", "k.npy", "--value", "v.npy", "--mask", "causal", "--output", "o.npy"]
      arguments += [option, "x"]
      let result = try graphAttention(arguments)
      XCTAssertEqual(result.status, 64, "\(arguments)")
      XCTAssertTrue(result.stderr.contains("\(option) x names a tensor inside a .safetensors file, but \(input)"), result.stderr)
      XCTAssertTrue(result.stderr.contains("would be ignored"), result.stderr)
    }
    // With .safetensors inputs the names are used: the error is about the missing file, not the name.
    let named = try graphAttention(["run", "--query", "qkv.safetensors", "--key", "qkv.safetensors", "--value", "qkv.safetensors",
                                    "--query-name", "q", "--mask", "causal", "--output", directory.path("o.npy")])
    XCTAssertFalse(named.stderr.contains("would be ignored"), named.stderr)
  }

  func testVerifyWritesPlainProgressLinesWhenStderrIsNotATerminal() throws {
    // stderr is a pipe here: no bar, plain lines (every 0 s asked for), ending at 100%.
    let result = try graphAttention(["verify", "--mask", "window:8", "--tokens", "3000", "--dim", "8", "--progress-seconds", "0"])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stderr.contains("attention: 100% after"), result.stderr)
    XCTAssertFalse(result.stderr.contains("\r"), "a terminal bar was drawn into a pipe")
    let quiet = try graphAttention(["verify", "--mask", "window:8", "--tokens", "3000", "--dim", "8"])
    XCTAssertFalse(quiet.stderr.contains("attention:"), "a short run printed progress: \(quiet.stderr)")
  }

  func testNegativeNumbersAfterAnOptionReachValidation() throws {
    // Each of these used to say "Missing value for '--option <value>'".
    let cases: [([String], String)] = [
      (["verify", "--mask", "causal", "--tokens", "-1"], "--tokens must be between 1"),
      (["verify", "--mask", "causal", "--tokens", "8", "--heads", "-2"], "--heads must be between 1"),
      (["verify", "--mask", "causal", "--tokens", "8", "--dim", "-3"], "--dim must be between 1"),
      (["verify", "--mask", "causal", "--tokens", "8", "--tolerance", "-1"], "--tolerance must be positive"),
      (["verify", "--mask", "causal", "--tokens", "8", "--sample", "-1"], "--sample must be between 1"),
      (["verify", "--mask", "causal", "--tokens", "8", "--threads", "-4"], "--threads must be between 1 and 4096"),
      (["verify", "--mask", "causal", "--tokens", "8", "--cuda-device", "-1"], "--cuda-device must be >= 0"),
      (["inspect", "--mask", "causal", "--tokens", "8", "--key-tokens", "-8"], "--key-tokens must be between 1"),
      (["generate", "--tokens", "-5", "--output", "x"], "--tokens must be between 1"),
      (["generate", "--tokens", "5", "--batch", "-1", "--output", "x"], "--batch must be between 1"),
      (["demo", "--tokens", "-1"], "--tokens must be between 1"),
      (["demo", "--sample", "-1"], "--sample must be between 1"),
      (["bench", "--repeats", "-1"], "--repeats must be at least 1"),
      (["bench", "--max-row-seconds", "-1"], "--max-row-seconds must be positive"),
      (["bench", "--memory-fraction", "-0.5"], "--memory-fraction must be in (0, 1]"),
      (["cuda-info", "--cuda-device", "-1"], "--cuda-device"),
      (["run", "--query", "q.npy", "--key", "k.npy", "--value", "v.npy", "--mask", "causal", "--output", "o.npy",
        "--check-rows", "-1"], "--check-rows must be >= 0"),
      (["run", "--query", "q.npy", "--key", "k.npy", "--value", "v.npy", "--mask", "causal", "--output", "o.npy",
        "--progress-seconds", "-2"], "--progress-seconds must be >= 0"),
      (["grad", "--query", "q.npy", "--key", "k.npy", "--value", "v.npy", "--grad-output", "d.npy", "--mask", "causal",
        "--output-directory", ".", "--threads", "-2"], "--threads must be between 1"),
      (["plan", "--mask", "causal", "--dim", "-3"], "--dim must be between 1"),
    ]
    for (arguments, message) in cases {
      let result = try graphAttention(arguments)
      XCTAssertNotEqual(result.status, 0, "\(arguments)")
      XCTAssertFalse(result.stderr.contains("Missing value"), "\(arguments): \(result.stderr)")
      XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
    }
    // A negative scale is a valid choice, and is used.
    let negative = try graphAttention(["verify", "--mask", "window:3", "--tokens", "32", "--dim", "8", "--scale", "-1"])
    XCTAssertEqual(negative.status, 0, negative.stderr)
    XCTAssertTrue(negative.stdout.hasPrefix("PASS"), negative.stdout)
  }

  func testStorageTypesHaveOneSpellingAndAcceptTheOldOnes() throws {
    for spelling in ["f16", "fp16", "float16", "half"] {
      let result = try graphAttention(["verify", "--mask", "causal", "--tokens", "8", "--storage", spelling])
      XCTAssertEqual(result.status, 64, spelling)
      XCTAssertTrue(result.stderr.contains("--storage f16 applies to --device cuda"), result.stderr)
    }
    let bad = try graphAttention(["verify", "--mask", "causal", "--tokens", "8", "--storage", "f64"])
    XCTAssertTrue(bad.stderr.contains("f32") && bad.stderr.contains("bf16"), bad.stderr)
  }

  /// Discussions are paragraphs the parser wraps, not text wrapped in the source: at a width no paragraph
  /// reaches, no line of any command's overview breaks before the sentence ends (a hard break shows there as a
  /// line ending mid-sentence followed by one that goes on in lower case, as "H" then "(grouped-query ...").
  func testHelpParagraphsAreNotWrappedInTheSource() throws {
    for command in ["", "demo", "run", "grad", "verify", "inspect", "bench", "time", "generate", "plan", "cuda-compile"] {
      let help = try CommandLineRunner.run((command.isEmpty ? [] : [command]) + ["--help"], environment: ["COLUMNS": "2000"]).stdout
      let overview = help.components(separatedBy: "USAGE:")[0].split(separator: "\n", omittingEmptySubsequences: false)
      for (line, next) in zip(overview, overview.dropFirst()) where !line.isEmpty && !next.isEmpty {
        let continues = next.first.map { $0.isLowercase || $0 == "(" } ?? false
        XCTAssertFalse(continues && !line.hasSuffix(":"), "\(command) --help breaks a paragraph: '\(line)' / '\(next)'")
      }
    }
  }

  // MARK: - Progress

  /// In a log (stderr not a terminal) the demo's attention says it is running after 2 s, not after the
  /// 10 s interval of later lines, which most runs never reach.
  func testDemoPrintsItsFirstProgressLineAfterTwoSeconds() throws {
    let demo = try graphAttention(["demo", "--tokens", "131072", "--heads", "2", "--dim", "16", "--sample", "2"])
    XCTAssertEqual(demo.status, 0, demo.stderr)
    let seconds = demo.stdout.split(separator: "\n").first { $0.hasPrefix("attention time") }
      .map { line -> Double in
        let value = Double(line.split(separator: " ").dropLast().last ?? "") ?? 0
        return line.hasSuffix(" ms") ? value / 1000 : value
      } ?? 0
    let lines = demo.stderr.split(separator: "\n").filter { $0.hasPrefix("attention: ") }
    if seconds >= 2.5 {
      XCTAssertTrue(lines.first?.contains("after 2.") ?? false, demo.stderr)
    } else if seconds < 1.9 {
      XCTAssertTrue(lines.isEmpty, "a run under 2 s prints no progress: \(demo.stderr)")
    }
  }

  // MARK: - bench checks before measuring

  func testBenchChecksItsOptionsBeforeMeasuring() throws {
    let file = try directory.write([1], to: "results")
    let cases: [([String], String)] = [
      (["bench", "--output-directory", file], "is not a directory"),
      (["bench", "--output-directory", file + "/sub/dir"], "\(file) is a file, not a directory"),
      (["bench", "--output-directory", file + "/sub/d/", "--masks", "nosuch"], "\(file) is a file, not a directory"),
      (["bench", "--output-directory", "r", "--masks", "nosuch"], "'nosuch' is neither a preset"),
      (["bench", "--masks", "window,nosuch"], "'nosuch' is neither a preset"),
      (["bench", "--peers", "--peer-python", directory.path("no-python")], "--peers needs Python with PyTorch"),
    ]
    for (arguments, message) in cases {
      let result = try graphAttention(arguments)
      XCTAssertNotEqual(result.status, 0, "\(arguments)")
      XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
      XCTAssertFalse(result.stderr.contains("measuring"), "measured before failing: \(result.stderr)")
      XCTAssertFalse(result.stderr.contains("NSCocoaErrorDomain"), result.stderr)
    }
    if FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
       (try? graphAttention(["bench", "--peers", "--peer-python", "/usr/bin/python3"]))?.stderr.contains("cannot import torch") == true {
      let result = try graphAttention(["bench", "--peers", "--peer-python", "/usr/bin/python3"])
      XCTAssertNotEqual(result.status, 0)
      XCTAssertTrue(result.stderr.contains("No module named 'torch'"), result.stderr)
    }
  }

  // MARK: - Outputs

  /// `generate --output g` (a one-letter relative name) crashed in Foundation's path splitting, and
  /// `--output dir/` must name the directory `dir`.
  func testGenerateOutputNamesOfEveryForm() throws {
    let process = Process()
    process.executableURL = CommandLineRunner.executable
    process.currentDirectoryURL = directory.url
    process.arguments = ["generate", "--tokens", "4", "--dim", "2", "--output", "g"]
    process.standardError = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    XCTAssertEqual(process.terminationStatus, 0)
    XCTAssertTrue(FileManager.default.fileExists(atPath: directory.path("g/q.npy")))
    for output in [directory.path("slash") + "/", directory.path("one.safetensors"), directory.path("x")] {
      let result = try graphAttention(["generate", "--tokens", "4", "--dim", "2", "--output", output])
      XCTAssertEqual(result.status, 0, "\(output): \(result.stderr)")
    }
    XCTAssertTrue(FileManager.default.fileExists(atPath: directory.path("slash/k.npy")))
    XCTAssertEqual(try AtomicFile.directory(of: "o.npy"), ".")
    XCTAssertEqual(try AtomicFile.directory(of: "/o.npy"), "/")
    XCTAssertEqual(try AtomicFile.directory(of: "a/b/o"), "a/b")
  }

  // MARK: - Outputs that cannot be written

  func testUnwritableOutputsSayWhy() throws {
    let q = try directory.write(storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2), }",
                                                    data: storageLittleEndianBytes([Float](repeating: 0.5, count: 8))), to: "q.npy")
    let inputs = ["run", "--query", q, "--key", q, "--value", q, "--mask", "causal"]
    var cases: [([String], [String])] = [
      (inputs + ["--output", q + "/o.npy"], ["\(q) is a file, not a directory"]),
      (inputs + ["--output", directory.path("nosuch/o.npy")], ["does not exist", "mkdir -p"]),
      (["inspect", "--mask", "causal", "--tokens", "4", "--edges-out", q + "/e.npy"], ["\(q) is a file"]),
    ]
    if FileManager.default.fileExists(atPath: "/proc/self") {
      cases.append((inputs + ["--output", "/proc/o.npy"], ["/proc/o.npy", "not writable"]))
      cases.append((["generate", "--tokens", "4", "--output", "/proc/qkv"], ["not writable"]))
      cases.append((["generate", "--tokens", "4", "--output", "/proc/qkv.safetensors"], ["not writable"]))
    }
    for (arguments, mentions) in cases {
      let result = try graphAttention(arguments)
      XCTAssertEqual(result.status, 1, "\(arguments): \(result.stderr)")
      for mention in mentions { XCTAssertTrue(result.stderr.contains(mention), "\(arguments): \(result.stderr)") }
      XCTAssertFalse(result.stderr.contains("GiB free"), result.stderr)
      XCTAssertFalse(result.stderr.contains("create its parent directory first"), result.stderr)
    }
  }

  /// A read-only file system is named as such (generate used to say "create its parent directory first").
  /// Needs permission to mount a tmpfs (root in a container); skipped elsewhere.
  func testReadOnlyFileSystemIsNamed() throws {
    let mountPoint = directory.path("ro")
    try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: false)
    let mount = Process()
    mount.executableURL = URL(fileURLWithPath: "/bin/mount")
    mount.arguments = ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", mountPoint]
    mount.standardError = FileHandle.nullDevice
    guard (try? mount.run()) != nil else { throw XCTSkip("cannot run mount") }
    mount.waitUntilExit()
    guard mount.terminationStatus == 0 else { throw XCTSkip("cannot mount a tmpfs here (not root?)") }
    defer {
      let unmount = Process()
      unmount.executableURL = URL(fileURLWithPath: "/bin/umount")
      unmount.arguments = [mountPoint]
      try? unmount.run()
      unmount.waitUntilExit()
    }
    let q = try directory.write(storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }",
                                                    data: storageLittleEndianBytes([Float](repeating: 0.5, count: 8))), to: "q.npy")
    for arguments in [["generate", "--tokens", "4", "--output", mountPoint + "/qkv"],
                      ["generate", "--tokens", "4", "--output", mountPoint],
                      ["generate", "--tokens", "4", "--output", mountPoint + "/qkv.safetensors"],
                      ["run", "--query", q, "--key", q, "--value", q, "--mask", "causal", "--output", mountPoint + "/o.npy"]] {
      let result = try graphAttention(arguments)
      XCTAssertEqual(result.status, 1, "\(arguments)")
      XCTAssertTrue(result.stderr.contains("read-only file system"), "\(arguments): \(result.stderr)")
      XCTAssertFalse(result.stderr.contains("create its parent directory"), result.stderr)
    }
  }

  /// `run` reads fp64 .npy inputs, rounding them to fp32 as it reads: the result equals the run on the
  /// same values stored as fp32.
  func testRunAcceptsFloat64Inputs() throws {
    var generator = SystemRandomNumberGenerator()
    let doubles = (0..<(2 * 16 * 8)).map { _ in Double.random(in: -1...1, using: &generator) }
    let header64 = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 16, 8), }"
    let header32 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 16, 8), }"
    var paths64: [String] = [], paths32: [String] = []
    for (index, name) in ["q", "k", "v"].enumerated() {
      let values = doubles.map { $0 * Double(index + 1) }
      paths64.append(try directory.write(storageNPYFileBytes(header: header64, data: storageLittleEndianBytes(values.map(\.bitPattern))), to: "\(name)64.npy"))
      paths32.append(try directory.write(storageNPYFileBytes(header: header32, data: storageLittleEndianBytes(values.map { Float($0) })), to: "\(name)32.npy"))
    }
    for (paths, output) in [(paths64, "o64.npy"), (paths32, "o32.npy")] {
      let result = try graphAttention(["run", "--query", paths[0], "--key", paths[1], "--value", paths[2], "--mask", "window:3",
                                       "--output", directory.path(output)])
      XCTAssertEqual(result.status, 0, result.stderr)
    }
    XCTAssertEqual(try directory.read("o64.npy"), try directory.read("o32.npy"))
  }
}
