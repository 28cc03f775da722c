#ifndef GRAPH_ATTENTION_FILE_SYSTEM_H
#define GRAPH_ATTENTION_FILE_SYSTEM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Reserves the disk blocks of bytes [0, length) of the file open at `fd` (Linux `fallocate(fd, 0, ...)`,
/// which Swift's Glibc module does not expose). Returns 0, or -1 with errno set (the caller retries EINTR,
/// as every system call of the library, through `valueOrErrno`): ENOSPC, EDQUOT or EFBIG when the space is
/// not there; EOPNOTSUPP (or ENOSYS) when the file system cannot reserve (the file then stays sparse).
/// Never writes data.
int ga_reserve_file_blocks(int fd, int64_t length);

/// Starts writing the dirty pages of bytes [offset, offset + length) of `fd` to disk without waiting
/// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`; `msync(MS_ASYNC)` does nothing on Linux). Returns 0,
/// or -1 with errno set; elsewhere a no-op returning 0.
int ga_start_writeback(int fd, int64_t offset, int64_t length);

#ifdef __cplusplus
}
#endif

#endif
