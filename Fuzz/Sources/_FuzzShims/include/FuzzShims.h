#ifndef GRAPH_ATTENTION_FUZZ_SHIMS_H
#define GRAPH_ATTENTION_FUZZ_SHIMS_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt FuzzerInterface.h): runs `callback` on generated inputs as libFuzzer's
/// own main would, parsing libFuzzer options from argv. SwiftPM renames an executable's `main`, so the
/// Swift entry point calls this instead of relying on libFuzzer's main.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
