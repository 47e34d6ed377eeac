/* Durability (io/durable.h): through the helper's test hook, the order in which every writer syncs and renames.
 * A real merge of mixtral-tiny must sync each of its files once, then the temporary directory, then rename it
 * into place, then sync the parent; a plan export, a JSON report and the autosave must go file sync, rename,
 * directory sync. An fsync failure injected through the hook (on a shard, on a plan, report or autosave, on the
 * temporary directory, or a failed rename into place) must fail the write with one error naming the file and
 * leave neither a partial output nor a temporary file behind, and an older output as it was. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io/durable.h"
#include "io/jsonfile.h"
#include "io/model.h"
#include "io/outdir.h"
#include "io/plan.h"
#include "samples/samples.h"
#include "tests/test.h"
#include "tui/autosave.h"
#include "pipeline/merge_run.h"

/* ---- the recorder behind the hook ---- */

enum { MAX_EVENTS = 512 };
typedef struct {
	dur_op op;
	char *path, *to;        /* to: the rename's destination, NULL otherwise */
} event;

static event events[MAX_EVENTS];
static int n_events, overflow;
static dur_op fail_op;
static const char *fail_match;  /* when set: the fail_nth fail_op whose path (a rename's destination) contains
				 * it answers EIO */
static int fail_nth, matched;
static int failures;            /* how many were injected */

static int record(void *ctx, dur_op op, const char *path, const char *to)
{
	(void)ctx;
	if (fail_match && op == fail_op && strstr(to ? to : path, fail_match) && ++matched == fail_nth) {
		failures++;
		return EIO;
	}
	if (n_events == MAX_EVENTS) {
		overflow = 1;
		return 0;
	}
	events[n_events++] = (event){op, strdup(path), to ? strdup(to) : NULL};
	return 0;
}

static void recording_start_nth(dur_op op, const char *match, int nth)
{
	for (int i = 0; i < n_events; i++) {
		free(events[i].path);
		free(events[i].to);
	}
	n_events = overflow = failures = matched = 0;
	fail_op = op;
	fail_match = match;
	fail_nth = nth;
	dur_set_hook(record, NULL);
}

static void recording_start(dur_op op, const char *match)
{
	recording_start_nth(op, match, 1);
}

static void recording_stop(void)
{
	dur_set_hook(NULL, NULL);
	CHECK(!overflow, "more than %d durable operations", MAX_EVENTS);
}

/* Index of the first event at or after `from` with this op and path (and destination, when to is not NULL). */
static int find_event(int from, dur_op op, const char *path, const char *to)
{
	for (int i = from < 0 ? 0 : from; i < n_events; i++)
		if (events[i].op == op && (!path || !strcmp(events[i].path, path)) &&
		    (!to || (events[i].to && !strcmp(events[i].to, to))))
			return i;
	return -1;
}

/* Index of the last such event before `before`, -1 when none. */
static int find_last(int before, dur_op op, const char *path)
{
	for (int i = before - 1; i >= 0; i--)
		if (events[i].op == op && !strcmp(events[i].path, path))
			return i;
	return -1;
}

/* Where the file that ends up as `name` became durable: its own sync, or the sync of a temporary renamed onto it
 * (then the rename's index). -1 when it never was. */
static int durable_at(const char *name)
{
	int i = find_event(0, DUR_SYNC_FILE, name, NULL);
	if (i >= 0)
		return i;
	for (int r = 0; (r = find_event(r, DUR_RENAME, NULL, name)) >= 0; r++) {
		int s = find_last(r, DUR_SYNC_FILE, events[r].path);
		if (s >= 0)
			return r;
	}
	return -1;
}

/* No file was synced twice: one fsync per file, not per write. */
static void check_one_sync_per_file(void)
{
	for (int i = 0; i < n_events; i++)
		if (events[i].op == DUR_SYNC_FILE)
			CHECK(find_event(i + 1, DUR_SYNC_FILE, events[i].path, NULL) < 0, "%s synced twice", events[i].path);
}

/* ---- files and directories ---- */

static char base[256];          /* the test's temporary root */
static mdl_model *model;
static plan pairs;              /* mixtral-tiny's experts merged in pairs, the even one dominant */
static int tmp_dir_syncs;       /* syncs of the merge's temporary directory, the last one before its rename */

static int exists(const char *path)
{
	struct stat sb;
	return lstat(path, &sb) == 0;
}

/* Entries of dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	int n = 0;
	for (struct dirent *e; d && (e = readdir(d));)
		n += !strncmp(e->d_name, prefix, strlen(prefix));
	if (d)
		closedir(d);
	return n;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static int has_text(const char *path, const char *text)
{
	char buf[256] = "";
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return !strcmp(buf, text);
}

static void setup(void)
{
	ms_error err = {0};
	const char *tmp = getenv("TMPDIR");
	snprintf(base, sizeof base, "%s/moescope-durable-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	CHECK(mkdtemp(base) != NULL);
	CHECK(samples_write(base, "mixtral-tiny", &err) == MS_OK, "%s", err.msg);
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/mixtral-tiny", base);
	CHECK(mdl_open(path, &model, &err) == MS_OK, "%s", err.msg);
	if (!model)
		return;
	const char **labels = calloc((size_t)model->n_blocks, sizeof *labels);
	for (int b = 0; b < model->n_blocks; b++)
		labels[b] = model->blocks[b].label;
	CHECK(plan_init(&pairs, model->n_blocks, model->n_experts, labels) == 0);
	free(labels);
	for (int b = 0; b < model->n_blocks; b++)
		for (int e = 0; e < model->n_experts; e++) {
			pairs.group[b * model->n_experts + e] = e / 2;
			pairs.dominant[b * model->n_experts + e] = e % 2 == 0;
		}
}

/* Merges mixtral-tiny by pairs into out with small shards (so that there are several and an index), no
 * calibration set, under the recorder. */
static ms_status merge_to(const char *out, int force, dur_op op, const char *match, int nth, ms_error *err)
{
	mrun_request req = mrun_request_defaults();
	req.out_dir = out;
	req.plan = &pairs;
	req.opts.router = RFIT_MEAN;
	req.max_shard_bytes = 1 << 20;
	req.force = force;
	recording_start_nth(op, match, nth);
	ms_status st = mrun_run(model, NULL, &req, NULL, NULL, NULL, NULL, err);
	recording_stop();
	return st;
}

/* ---- the tests ---- */

static void test_merge_syncs_every_file_then_directory_then_parent(void)
{
	if (!model)
		return;
	char out[PATH_MAX];
	snprintf(out, sizeof out, "%s/merged", base);
	ms_error err = {0};
	CHECK(merge_to(out, 0, DUR_SYNC_FILE, NULL, 0, &err) == MS_OK, "%s", err.msg);
	int r = find_event(0, DUR_RENAME, NULL, out);
	CHECK(r >= 0, "the output directory was not renamed into place through io/durable");
	if (r < 0)
		return;
	const char *tmp = events[r].path;
	CHECK(find_event(r + 1, DUR_RENAME, NULL, out) < 0, "renamed into place twice");
	int dir_sync = find_last(r, DUR_SYNC_DIR, tmp);
	CHECK(dir_sync >= 0 && dir_sync == r - 1, "the temporary directory %s was not synced just before its rename "
	      "(event %d, rename %d)", tmp, dir_sync, r);
	for (int i = 0; i <= dir_sync; i++)
		tmp_dir_syncs += events[i].op == DUR_SYNC_DIR && !strcmp(events[i].path, tmp);
	CHECK(find_event(r + 1, DUR_SYNC_DIR, base, NULL) > r, "the parent %s was not synced after the rename", base);
	/* every file of the final output, under its temporary name */
	DIR *d = opendir(out);
	CHECK(d != NULL, "%s", out);
	int files = 0, shards = 0;
	for (struct dirent *e; d && (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char name[PATH_MAX * 2];
		snprintf(name, sizeof name, "%s/%s", tmp, e->d_name);
		int at = durable_at(name);
		CHECK(at >= 0, "%s was never synced", e->d_name);
		CHECK(at < dir_sync, "%s was synced (event %d) after its directory (event %d)", e->d_name, at, dir_sync);
		files++;
		shards += strstr(e->d_name, "-of-") != NULL;
	}
	if (d)
		closedir(d);
	CHECK(shards >= 2, "%d shards: the test wants a sharded output", shards);
	CHECK(files >= shards + 4, "%d files: shards, index, config, plan and report expected", files);
	check_one_sync_per_file();
}

static void test_merge_fsync_failure_leaves_nothing(void)
{
	if (!model)
		return;
	char out[PATH_MAX];
	snprintf(out, sizeof out, "%s/failed", base);
	ms_error err = {0};
	ms_status st = merge_to(out, 0, DUR_SYNC_FILE, "model-00002-of-", 1, &err);
	CHECK(failures == 1, "the second shard was never synced");
	CHECK(st == MS_ERR_IO, "%s: %s", ms_status_name(st), err.msg);
	char want[256];
	snprintf(want, sizeof want, ".safetensors: fsync failed: %s", strerror(EIO));
	CHECK(strstr(err.msg, "model-00002-of-") && strstr(err.msg, want) && !strchr(err.msg, '\n'), "%s", err.msg);
	CHECK(find_event(0, DUR_RENAME, NULL, out) < 0, "renamed into place after a failed sync");
	CHECK(!exists(out), "a partial output is left at %s", out);
	CHECK(count_prefixed(base, ".failed.") == 0, "a temporary directory is left in %s", base);
}

/* The last sync of the temporary directory (outdir_commit's, after all its files), or the rename itself, fails
 * while an older output exists: that one stays as it was, and no temporary or moved-aside directory is left. */
static void check_commit_failure(dur_op op, const char *match, int nth, const char *what)
{
	char out[PATH_MAX], marker[PATH_MAX + 16];
	snprintf(out, sizeof out, "%s/kept", base);
	snprintf(marker, sizeof marker, "%s/old.txt", out);
	mkdir(out, 0700);
	write_text(marker, "old output");
	ms_error err = {0};
	ms_status st = merge_to(out, 1, op, match ? match : out, nth, &err);
	CHECK(failures == 1, "%s: no failure injected", what);
	CHECK(st == MS_ERR_IO && strstr(err.msg, "kept") && strstr(err.msg, what), "%s: %s", ms_status_name(st),
	      err.msg);
	CHECK(has_text(marker, "old output"), "%s: the old output was touched", what);
	CHECK(count_prefixed(base, ".kept.") == 0, "%s: a temporary or moved-aside directory is left in %s", what, base);
}

static void test_merge_commit_failure_keeps_old_output(void)
{
	if (!model)
		return;
	CHECK(tmp_dir_syncs >= 1);
	check_commit_failure(DUR_SYNC_DIR, "/.kept.moescope-", tmp_dir_syncs, "fsync failed");
	check_commit_failure(DUR_RENAME, NULL, 1, "cannot rename");
}

/* A single file written through a temporary: file sync, then the rename, then the directory sync, nothing else. */
static void check_single_file_order(const char *what, const char *path)
{
	char tmp_prefix[PATH_MAX];
	snprintf(tmp_prefix, sizeof tmp_prefix, "%s.", path);
	int r = find_event(0, DUR_RENAME, NULL, path);
	CHECK(r >= 0, "%s: not renamed into place through io/durable", what);
	if (r < 0)
		return;
	const char *tmp = events[r].path;
	CHECK(!strncmp(tmp, tmp_prefix, strlen(tmp_prefix)), "%s: renamed from %s", what, tmp);
	int s = find_last(r, DUR_SYNC_FILE, tmp);
	CHECK(s >= 0, "%s: %s not synced before its rename", what, tmp);
	CHECK(find_event(r + 1, DUR_SYNC_DIR, base, NULL) > r, "%s: %s not synced after the rename", what, base);
	CHECK(find_event(0, DUR_SYNC_FILE, path, NULL) < 0, "%s: synced under its final name (after the rename)", what);
	check_one_sync_per_file();
}

static void test_plan_export_order_and_failure(void)
{
	if (!model)
		return;
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	snprintf(path, sizeof path, "%s/export.csv", base);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	write_text(path, "old plan");
	ms_error err = {0};
	/* the sync fails: the old file stays whole, the temporary goes */
	recording_start(DUR_SYNC_FILE, "export.csv");
	ms_status st = plan_write_csv(path, &pairs, &err);
	recording_stop();
	CHECK(failures == 1, "the plan was never synced");
	char want[PATH_MAX + 64];
	snprintf(want, sizeof want, "%s: fsync failed: %s", tmp, strerror(EIO));
	CHECK(st == MS_ERR_IO && !strcmp(err.msg, want), "%s: %s", ms_status_name(st), err.msg);
	CHECK(has_text(path, "old plan") && !exists(tmp), "the old plan was replaced or the temporary left");
	CHECK(find_event(0, DUR_RENAME, NULL, path) < 0, "renamed after a failed sync");
	/* it succeeds: sync, rename, directory */
	recording_start(DUR_SYNC_FILE, NULL);
	st = plan_write_csv(path, &pairs, &err);
	recording_stop();
	CHECK(st == MS_OK, "%s", err.msg);
	check_single_file_order("plan export", path);
	CHECK(n_events == 3, "%d durable operations for one file, 3 expected", n_events);
}

static void test_json_report_order(void)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/report.json", base);
	cJSON *doc = cJSON_CreateObject();
	cJSON_AddNumberToObject(doc, "blocks", 4);
	ms_error err = {0};
	recording_start(DUR_SYNC_FILE, NULL);
	ms_status st = jsonf_write(path, doc, &err);
	recording_stop();
	CHECK(st == MS_OK, "%s", err.msg);
	check_single_file_order("JSON report", path);
	/* an injected failure: no report, no temporary */
	char other[PATH_MAX];
	snprintf(other, sizeof other, "%s/report-failed.json", base);
	recording_start(DUR_SYNC_FILE, "report-failed.json");
	st = jsonf_write(other, doc, &err);
	recording_stop();
	CHECK(st == MS_ERR_IO && strstr(err.msg, "report-failed.json.tmp: fsync failed"), "%s", err.msg);
	CHECK(count_prefixed(base, "report-failed") == 0, "something is left of the failed report");
	cJSON_Delete(doc);
}

static void test_autosave_order(void)
{
	if (!model)
		return;
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/m.autosave", base);
	autosave_record r;
	memset(&r, 0, sizeof r);
	snprintf(r.id.model, sizeof r.id.model, "%s/mixtral-tiny", base);
	int groups[64];
	unsigned char edited[64] = {0};
	for (int b = 0; b < model->n_blocks && b < 64; b++)
		groups[b] = plan_groups(&pairs, b);
	r.groups = groups;
	r.edited = edited;
	r.p = pairs;
	ms_error err = {0};
	recording_start(DUR_SYNC_FILE, NULL);
	ms_status st = autosave_write(path, &r, &err);
	recording_stop();
	CHECK(st == MS_OK, "%s", err.msg);
	check_single_file_order("autosave", path);
	recording_start(DUR_SYNC_FILE, "m.autosave");
	st = autosave_write(path, &r, &err);
	recording_stop();
	CHECK(st == MS_ERR_IO && strstr(err.msg, "m.autosave") && strstr(err.msg, "fsync failed"), "%s", err.msg);
	CHECK(count_prefixed(base, "m.autosave") == 1, "a temporary or scratch file of the autosave is left");
}

int main(void)
{
	setup();
	RUN(test_merge_syncs_every_file_then_directory_then_parent);
	RUN(test_merge_fsync_failure_leaves_nothing);
	RUN(test_merge_commit_failure_keeps_old_output);
	RUN(test_plan_export_order_and_failure);
	RUN(test_json_report_order);
	RUN(test_autosave_order);
	recording_start(DUR_SYNC_FILE, NULL);  /* frees the last recording */
	dur_set_hook(NULL, NULL);
	plan_free(&pairs);
	mdl_close(model);
	outdir_remove_tree(base);
	return test_summary();
}
