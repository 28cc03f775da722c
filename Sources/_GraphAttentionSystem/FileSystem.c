// File-system calls Swift's Glibc module does not expose; see include/GraphAttentionFileSystem.h.
#define _GNU_SOURCE
#include "GraphAttentionFileSystem.h"

#include <errno.h>
#include <fcntl.h>

int ga_reserve_file_blocks(int fd, int64_t length) {
#ifdef __linux__
  return fallocate(fd, 0, 0, (off_t)length);
#else
  (void)fd; (void)length;
  errno = EOPNOTSUPP;
  return -1;
#endif
}

int ga_start_writeback(int fd, int64_t offset, int64_t length) {
#ifdef __linux__
  return sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
#else
  (void)fd; (void)offset; (void)length;
  return 0;
#endif
}
