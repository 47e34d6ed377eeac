/* The interactive application's autosave: after every change of the plan the application keeps a copy of it,
 * with the settings that made it, in the XDG state directory, so that a crash or a kill loses no tuning work;
 * when the same model is opened again the copy is offered back (tui/app_restore.c). This module is the file
 * alone: where it lives, its name, writing and reading it. No curses and no application state, so unit tests
 * link it (it lives in tui/app_autosave.c, a name the Makefile's unit-test list already takes in).
 *
 * One file per model: $XDG_STATE_HOME/moescope/ (an absolute XDG_STATE_HOME, else ~/.local/state/moescope/)
 * NAME-HASH.autosave, NAME the model directory's base name (for people; characters other than [A-Za-z0-9._-]
 * become '_') and HASH the 64-bit FNV-1a of its canonical path (realpath) in 16 hex digits. The file:
 *
 *   moescope-autosave 1
 *   model /abs/path/of/the/model          the realpath, which the hash names
 *   config 1234 1700000000 123456789      config.json's size, mtime seconds and nanoseconds: a different model
 *                                         copied to the same path is told apart
 *   calib /abs/calib.safetensors          the calibration set in use (empty without one)
 *   saved 1700000000                      Unix time of the write
 *   method msmoe                          grouping method, similarity base, merge weighting, alignment,
 *   base router-logits                    compression rank mode and the index of its threshold step
 *   weighting frequency                   (the names analysis/ gives them)
 *   align dominant
 *   rank_mode none
 *   rank_step 0
 *   layout compact                        the commit's layout, router and format (optional when reading)
 *   router lse-fit
 *   format dense
 *   groups 8 6 8                          per block: the G the user chose
 *   edited 0 0 1                          per block: 1 when the grouping was set by hand or imported
 *   plan 2345 89abcdef01234567            the bytes that follow and their FNV-1a
 *   layer,expert,group,...                the plan CSV (io/plan.h), exactly that many bytes, to the end
 *
 * The file is replaced atomically (PATH.PID.tmp, then rename), so a kill at any moment leaves the old copy or
 * the new one. Paths holding a newline cannot be written into this line-based header: such a model gets no
 * autosave (MS_ERR_ARG). */
#ifndef AUTOSAVE_AUTOSAVE_H
#define AUTOSAVE_AUTOSAVE_H

#include <stddef.h>
#include <stdint.h>

#include "analysis/align.h"
#include "analysis/compress.h"
#include "analysis/grouping.h"
#include "analysis/merge.h"
#include "analysis/similarity.h"
#include "io/error.h"
#include "io/plan.h"
#include "pipeline/merge_run.h"

#define AUTOSAVE_PATH_MAX 4096
/* FNV-1a, 64 bits (Fowler, Noll, Vo; the parameters of draft-eastlake-fnv): start from the offset basis, then
 * for every byte h = (h ^ byte) * prime. */
#define AUTOSAVE_FNV_BASIS 0xcbf29ce484222325ULL
#define AUTOSAVE_FNV_PRIME 0x100000001b3ULL

/* Which model an autosave belongs to. */
typedef struct {
	char model[AUTOSAVE_PATH_MAX];  /* realpath of the model directory */
	long long config_size;          /* config.json: bytes */
	long long config_mtime_s;       /* and modification time */
	long long config_mtime_ns;
} autosave_identity;

/* The settings that, with the statistics, make the plan. */
typedef struct {
	grp_method method;
	sim_base base;
	merge_weighting weighting;
	align_ref align;
	cmp_rank_mode rank_mode;
	int rank_step;                  /* index into the threshold steps of rank_mode (tui/app.h) */
	pipe_layout layout;             /* the commit's layout, router and compressed-matrix format: they decide the */
	rfit_method router;             /* error as much as the plan (lines an older file lacks take the defaults: */
	mrun_format format;             /* compact, auto, dense) */
} autosave_settings;

typedef struct {
	autosave_identity id;
	char calib[AUTOSAVE_PATH_MAX];  /* "" without a calibration set */
	long long saved;                /* Unix time */
	autosave_settings s;
	int *groups;                    /* [p.n_blocks]: G per block, 1..n_experts */
	unsigned char *edited;          /* [p.n_blocks]: 0 or 1 */
	plan p;
} autosave_record;

/* Continues a 64-bit FNV-1a hash h (AUTOSAVE_FNV_BASIS to start) over n bytes. */
uint64_t autosave_fnv1a(uint64_t h, const void *data, size_t n);

/* The directory autosaves go in (not created): $XDG_STATE_HOME/moescope when that is an absolute path, else
 * $HOME/.local/state/moescope. MS_ERR_ARG when neither is usable or the result does not fit len. */
ms_status autosave_state_dir(char *buf, size_t len, ms_error *err);

/* The file for the model whose realpath is model_real, inside dir: "dir/NAME-HASH.autosave". MS_ERR_ARG when
 * it does not fit len. */
ms_status autosave_file_name(const char *dir, const char *model_real, char *buf, size_t len, ms_error *err);

/* The identity of the model in model_dir: its realpath and config.json's size and mtime. MS_ERR_IO naming the
 * path when either cannot be read, MS_ERR_ARG for a path with a newline. */
ms_status autosave_identify(const char *model_dir, autosave_identity *id, ms_error *err);

/* Everything an application needs to start: the identity of model_dir, the state directory (created, mode 0700,
 * with its parents) and the file's path in it. */
ms_status autosave_locate(const char *model_dir, autosave_identity *id, char *path, size_t len, ms_error *err);

/* Writes r as the file at path, atomically (header and plan CSV into PATH.PID.tmp, then renamed over path);
 * r->p must be valid. Leaves nothing behind on failure. MS_ERR_IO naming the file, MS_ERR_ARG for a calibration
 * path with a newline, MS_ERR_NOMEM. */
ms_status autosave_write(const char *path, const autosave_record *r, ms_error *err);

/* Reads the file at path for a model with these blocks and experts. Every problem is an error naming the file
 * and the line: MS_ERR_IO when it cannot be read, is no autosave, or its header is malformed, truncated or its
 * plan's checksum is wrong; MS_ERR_ARG when it belongs to another model than `expect` (another path, or
 * config.json changed) or has another number of blocks; the plan's own errors from plan_read_csv, their line
 * counted in the whole file. On success out holds allocations for autosave_record_free. */
ms_status autosave_read(const char *path, const autosave_identity *expect, int n_blocks, int n_experts,
			const char *const *labels, autosave_record *out, ms_error *err);

/* Frees what autosave_read allocated (not for a record whose arrays the caller lent to autosave_write). */
void autosave_record_free(autosave_record *r);

/* The settings beside an exported plan: PATH.settings for the plan CSV at PATH, "moescope-settings 1" then the
 * settings lines of the autosave header. The CSV stays a plain table (pandas.read_csv reads it as before). */
ms_status autosave_settings_write(const char *path, const autosave_settings *s, ms_error *err);
/* Reads it: *found 0 (and MS_OK) when there is none; an error names the file and the line. */
ms_status autosave_settings_read(const char *path, autosave_settings *s, int *found, ms_error *err);
/* "PATH.settings" for PATH; MS_ERR_ARG when it does not fit len. */
ms_status autosave_settings_path(const char *csv_path, char *buf, size_t len, ms_error *err);

/* Two instances on one model: the first holds an exclusive flock on PATH.lock (its pid written in it) for as long
 * as it runs; a second one finds it held and runs without an autosave, so it can neither discard nor overwrite
 * the first one's live file. Returns the lock's descriptor; -1 when another process holds it (*holder its pid, 0
 * when unreadable); -2 when the lock file cannot be used (errno set). A lock taken on a file that was unlinked
 * meanwhile (by its holder's autosave_unlock) is taken again on the new one. */
int autosave_lock(const char *path, long *holder);
/* Removes PATH.lock and releases the lock (on a clean exit or not: a killed process's lock is released by the
 * kernel and the file left behind is taken over by the next one). */
void autosave_unlock(const char *path, int fd);

/* Removes the file; 0 also when there was none, -1 (errno set) when it could not be removed. */
int autosave_remove(const char *path);

/* "2024-05-01 14:03" in local time. */
void autosave_format_time(long long t, char *buf, size_t len);

#endif
