// SIGBUS on watched mappings becomes a recorded fault; see include/GraphAttentionFaultGuard.h.
#define _GNU_SOURCE
#include "GraphAttentionFaultGuard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GA_FAULT_SLOTS 64

typedef struct {
  _Atomic uintptr_t base;    // 0: free
  _Atomic uintptr_t length;
  _Atomic uintptr_t fault;   // first faulting address, 0: none
} ga_fault_slot;

static ga_fault_slot slots[GA_FAULT_SLOTS];
static struct sigaction previous;
static pthread_once_t installed = PTHREAD_ONCE_INIT;
static int install_result = 0;
static long page_size = 4096;

static void ga_fault_handler(int signal, siginfo_t *info, void *context) {
  uintptr_t address = (uintptr_t)info->si_addr;
  if (info->si_code <= 0) {  // sent (kill, raise), not a fault: the previous action, now
    sigaction(signal, &previous, NULL);
    raise(signal);
    return;
  }
  for (int i = 0; i < GA_FAULT_SLOTS; i++) {
    uintptr_t base = atomic_load_explicit(&slots[i].base, memory_order_acquire);
    uintptr_t length = atomic_load_explicit(&slots[i].length, memory_order_acquire);
    if (base == 0 || address < base || address - base >= length) continue;
    uintptr_t page = address & ~((uintptr_t)page_size - 1);
    // mmap is async-signal-safe in practice (a system call); errno is preserved for the interrupted code.
    int saved = errno;
    void *zero = mmap((void *)page, (size_t)page_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    errno = saved;
    if (zero == MAP_FAILED) break;
    uintptr_t none = 0;
    atomic_compare_exchange_strong(&slots[i].fault, &none, address);
    return;
  }
  // Not ours: the previous action, by faulting again once it is restored.
  (void)context;
  sigaction(signal, &previous, NULL);
}

static void ga_fault_install_once(void) {
  long size = sysconf(_SC_PAGESIZE);
  if (size > 0) page_size = size;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = ga_fault_handler;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  install_result = sigaction(SIGBUS, &action, &previous);
}

int ga_fault_guard_install(void) {
  pthread_once(&installed, ga_fault_install_once);
  return install_result;
}

int ga_fault_guard_watch(void *base, size_t length) {
  for (int i = 0; i < GA_FAULT_SLOTS; i++) {
    uintptr_t free_slot = 0;
    // Claim with a placeholder base of 1, which matches nothing: a free slot's length is 0.
    if (atomic_compare_exchange_strong(&slots[i].base, &free_slot, (uintptr_t)1)) {
      atomic_store_explicit(&slots[i].fault, 0, memory_order_relaxed);
      atomic_store_explicit(&slots[i].length, (uintptr_t)length, memory_order_release);
      atomic_store_explicit(&slots[i].base, (uintptr_t)base, memory_order_release);
      return i;
    }
  }
  return -1;
}

void ga_fault_guard_unwatch(int slot) {
  if (slot < 0 || slot >= GA_FAULT_SLOTS) return;
  atomic_store_explicit(&slots[slot].length, 0, memory_order_release);
  atomic_store_explicit(&slots[slot].base, 0, memory_order_release);
}

uintptr_t ga_fault_guard_fault(int slot) {
  if (slot < 0 || slot >= GA_FAULT_SLOTS) return 0;
  return atomic_load_explicit(&slots[slot].fault, memory_order_acquire);
}
