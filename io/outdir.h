/* A new output directory written safely (docs/design.md §4.3): everything goes into a temporary sibling directory
 * (".NAME.moescope-XXXXXX" beside NAME), which is renamed into place only when complete and validated. An
 * existing NAME is replaced only with force, and never when it is the input itself. On failure the temporary
 * directory is removed and NAME is as it was. */
#ifndef OUTDIR_OUTDIR_H
#define OUTDIR_OUTDIR_H

#include "io/error.h"

typedef struct outdir outdir;

/* Checks final_dir against input_dir (the same directory is refused, as is an output inside the input), checks it
 * does not exist unless force, and creates the temporary directory. */
ms_status outdir_begin(const char *final_dir, const char *input_dir, int force, outdir **out, ms_error *err);
/* The temporary directory to write into. */
const char *outdir_tmp_path(const outdir *o);
/* tmp path + "/" + name into buf; -1 when it does not fit. */
int outdir_file(const outdir *o, const char *name, char *buf, size_t len);
/* Copies src (a regular file) into the temporary directory as name, checking every write and fclose. */
ms_status outdir_copy_file(const outdir *o, const char *src, const char *name, ms_error *err);
/* Renames the temporary directory to the final name (an existing one, with force, is moved aside and removed
 * after the rename) and frees o. */
ms_status outdir_commit(outdir *o, ms_error *err);
/* Removes the temporary directory and everything in it, and frees o. */
void outdir_abort(outdir *o);

/* Removes a directory tree (no symlinks followed). 0 on success. */
int outdir_remove_tree(const char *path);

/* mkdir -p: creates dir and its missing parents with `mode` (before the umask); MS_OK when dir ends up a
 * directory. Messages name the component that could not be made. */
ms_status outdir_make_dirs(const char *dir, unsigned mode, ms_error *err);

#endif
