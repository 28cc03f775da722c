#ifndef GRAPH_ATTENTION_FAULT_GUARD_H
#define GRAPH_ATTENTION_FAULT_GUARD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// SIGBUS on watched memory mappings, turned into a recorded fault instead of a crash.
//
// A shared file mapping raises SIGBUS when a page beyond the file's end is touched (the file was
// truncated under the process) or when a sparse page cannot get a disk block. The handler, installed
// once, looks the faulting address up among the watched ranges; if found, it maps an anonymous zero page
// over the faulting page (MAP_FIXED), records the address in the range's slot and returns, so the
// interrupted load or store completes on the zero page. The caller checks `ga_fault_guard_take` after
// its work and reports the file. Faults outside watched ranges restore the previous action and fault
// again (the usual crash). Nothing runs on the fast path: no cost unless a fault happens.

/// Installs the SIGBUS handler (idempotent, thread-safe). Returns 0, or -1 with errno set.
int ga_fault_guard_install(void);
/// Watches `[base, base + length)`; returns a slot index, or -1 when all slots are in use.
int ga_fault_guard_watch(void *base, size_t length);
/// Stops watching a slot from `ga_fault_guard_watch`.
void ga_fault_guard_unwatch(int slot);
/// The first faulting address recorded for a slot since it was watched, or 0 when none.
uintptr_t ga_fault_guard_fault(int slot);

#ifdef __cplusplus
}
#endif

#endif
