#ifndef GRAPH_ATTENTION_FILE_SYSTEM_H
#define GRAPH_ATTENTION_FILE_SYSTEM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Reserves the disk blocks of bytes [0, length) of the file open at `fd` (Linux `fallocate(fd, 0, ...)`,
/// which Swift's Glibc module does not expose), retrying on EINTR. Returns 0, or the errno: ENOSPC,
/// EDQUOT or EFBIG when the space is not there; EOPNOTSUPP (or ENOSYS) when the file system cannot
/// reserve (the file then stays sparse). Never writes data.
int ga_reserve_file_blocks(int fd, int64_t length);

#ifdef __cplusplus
}
#endif

#endif
