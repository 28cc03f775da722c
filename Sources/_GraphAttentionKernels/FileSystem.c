// File-system calls Swift's Glibc module does not expose; see include/GraphAttentionFileSystem.h.
#define _GNU_SOURCE
#include "GraphAttentionFileSystem.h"

#include <errno.h>
#include <fcntl.h>

int ga_reserve_file_blocks(int fd, int64_t length) {
#ifdef __linux__
  int status;
  do { status = fallocate(fd, 0, 0, (off_t)length); } while (status != 0 && errno == EINTR);
  return status == 0 ? 0 : errno;
#else
  (void)fd; (void)length;
  return EOPNOTSUPP;
#endif
}
