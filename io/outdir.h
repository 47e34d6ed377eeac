/* A new output directory written safely (docs/design.md §4.3): everything goes into a temporary sibling directory
 * (".NAME.moescope-XXXXXX" beside NAME), which is renamed into place only when complete and validated, and
 * durably (io/durable.h): its files synced as they are closed, then the directory, then the parent after the
 * rename. An
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
/* Copies src (a regular file) into the temporary directory as name, checking every write, syncing and closing. */
ms_status outdir_copy_file(const outdir *o, const char *src, const char *name, ms_error *err);
/* Copies the files beside a checkpoint's weights (tokenizer, generation config, ...) from in_dir into the temporary
 * directory, so the output is as usable as the input: regular files up to 256 MB, not hidden, not config.json
 * (the writer makes its own) and not weights in any format (stale after a rewrite); with skip_reports, not
 * moescope_plan.csv and moescope_report.json either (a new merge writes its own). */
ms_status outdir_copy_aux(const outdir *o, const char *in_dir, int skip_reports, ms_error *err);
/* Syncs the temporary directory, renames it to the final name (an existing one, with force, is moved aside and
 * removed after the rename), syncs the parent directory and frees o. Every file written into the temporary
 * directory must have been closed with dur_fclose. On a failure before the rename the temporary directory is
 * removed and the old output is back; a failure of the parent's sync is reported with the output in place. */
ms_status outdir_commit(outdir *o, ms_error *err);
/* Removes the temporary directory and everything in it, and frees o. */
void outdir_abort(outdir *o);

/* Removes a directory tree (no symlinks followed). 0 on success. */
int outdir_remove_tree(const char *path);

/* mkdir -p: creates dir and its missing parents with `mode` (before the umask); MS_OK when dir ends up a
 * directory. Messages name the component that could not be made. */
ms_status outdir_make_dirs(const char *dir, unsigned mode, ms_error *err);

#endif
