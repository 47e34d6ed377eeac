/* Durable writes: the one place where moescope asks the kernel to put written files on disk.
 *
 * fclose and rename only reach the page cache. After a power cut the file system may hold a rename whose file
 * has no data yet (ext4 and xfs write a rename's directory entry without waiting for the file's delayed blocks),
 * so a checkpoint reported "written" could come back as empty shards under the final name. Hence the rule every
 * writer follows, for a single file and for the merge's output directory alike:
 *   write the temporary, fsync it (dur_fclose), [fsync the temporary directory after its files (dur_sync_dir)],
 *   rename it into place and fsync the directory that holds the new name (dur_rename).
 * One fsync per file, after its last write, never one per write. */
#ifndef DUR_DURABLE_H
#define DUR_DURABLE_H

#include <stdio.h>

#include "io/error.h"

/* Flushes f, fsyncs it and closes it; f is closed whatever happens. A failure of any step (an earlier write
 * error left on the stream included) is MS_ERR_IO with "PATH: write failed|fsync failed|close failed: why". */
ms_status dur_fclose(FILE *f, const char *path, ms_error *err);

/* fsyncs the directory dir, so that the names created, removed or renamed in it are on disk. */
ms_status dur_sync_dir(const char *dir, ms_error *err);

/* Renames from over to (both in one directory, from already synced), then fsyncs the directory holding to.
 * *renamed (when not NULL) tells a failed directory sync, after which to already holds the new file, from a
 * failed rename, after which nothing moved. */
ms_status dur_rename(const char *from, const char *to, int *renamed, ms_error *err);

/* The test seam. When a hook is set, every durable operation first calls it with the path (for DUR_RENAME the
 * source, with the destination in to; to is NULL otherwise). A zero return lets the operation go ahead; a
 * nonzero one is taken as the errno of that operation failing, and the operation is not performed. Set it only
 * while no writer runs; NULL removes it. */
typedef enum { DUR_SYNC_FILE, DUR_SYNC_DIR, DUR_RENAME } dur_op;
typedef int (*dur_hook_fn)(void *ctx, dur_op op, const char *path, const char *to);
void dur_set_hook(dur_hook_fn hook, void *ctx);

#endif
