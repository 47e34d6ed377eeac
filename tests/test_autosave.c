/* The autosave (tui/autosave.h, tui/app_restore.c): the hash against published FNV-1a vectors, the state
 * directory from the environment, file names, model identity through symlinks, the file's round trip, every
 * header error with its line, every truncation and every byte overwritten, and the application writing,
 * removing and restoring it on the golden model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "tests/app_fixture.h"
#include "tests/test.h"
#include "tui/app.h"
#include "tui/autosave.h"


static char tmp_root[256];

/* A fresh directory under the test's temporary root. */
static void fresh_dir(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmp_root, name);
	mkdir(buf, 0700);
}

static void write_text(const char *path, const char *text, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (f) {
		fwrite(text, 1, n, f);
		fclose(f);
	}
}

/* The whole file, NUL-terminated; the caller frees it. */
static char *read_text(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *s = malloc(1 << 20);
	*n = s ? fread(s, 1, (1 << 20) - 1, f) : 0;
	if (s)
		s[*n] = '\0';
	fclose(f);
	return s;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	for (struct dirent *e; d && (e = readdir(d));)
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static int exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

/* ---- the hash and the names ---- */

static void test_fnv1a_vectors(void)
{
	/* published FNV-1a 64 test vectors (draft-eastlake-fnv, and Noll's list) */
	CHECK(autosave_fnv1a(AUTOSAVE_FNV_BASIS, "", 0) == 0xcbf29ce484222325ULL);
	CHECK(autosave_fnv1a(AUTOSAVE_FNV_BASIS, "a", 1) == 0xaf63dc4c8601ec8cULL);
	CHECK(autosave_fnv1a(AUTOSAVE_FNV_BASIS, "foobar", 6) == 0x85944171f73967e8ULL);
	/* continuing a hash is hashing the concatenation */
	CHECK(autosave_fnv1a(autosave_fnv1a(AUTOSAVE_FNV_BASIS, "foo", 3), "bar", 3) == 0x85944171f73967e8ULL);
}

static void test_state_dir(void)
{
	char *old_xdg = getenv("XDG_STATE_HOME") ? strdup(getenv("XDG_STATE_HOME")) : NULL;
	char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	char buf[256];
	ms_error err = {0};
	setenv("XDG_STATE_HOME", "/x/state", 1);
	setenv("HOME", "/home/u", 1);
	CHECK(autosave_state_dir(buf, sizeof buf, &err) == MS_OK && !strcmp(buf, "/x/state/moescope"), "%s", buf);
	setenv("XDG_STATE_HOME", "relative/state", 1);  /* the specification says to ignore it */
	CHECK(autosave_state_dir(buf, sizeof buf, &err) == MS_OK && !strcmp(buf, "/home/u/.local/state/moescope"),
	      "%s", buf);
	setenv("XDG_STATE_HOME", "", 1);
	CHECK(autosave_state_dir(buf, sizeof buf, &err) == MS_OK && !strcmp(buf, "/home/u/.local/state/moescope"));
	CHECK(autosave_state_dir(buf, 10, &err) == MS_ERR_ARG && strstr(err.msg, "too long"), "%s", err.msg);
	unsetenv("XDG_STATE_HOME");
	unsetenv("HOME");
	CHECK(autosave_state_dir(buf, sizeof buf, &err) == MS_ERR_ARG && strstr(err.msg, "HOME"), "%s", err.msg);
	if (old_xdg)
		setenv("XDG_STATE_HOME", old_xdg, 1);
	if (old_home)
		setenv("HOME", old_home, 1);
	free(old_xdg);
	free(old_home);
}

static void test_file_name(void)
{
	char buf[512], want[512];
	ms_error err = {0};
	const char *model = "/data/models/Mixtral 8x7B+v0.1";
	CHECK(autosave_file_name("/s", model, buf, sizeof buf, &err) == MS_OK);
	snprintf(want, sizeof want, "/s/Mixtral_8x7B_v0.1-%016llx.autosave",
		 (unsigned long long)autosave_fnv1a(AUTOSAVE_FNV_BASIS, model, strlen(model)));
	CHECK(!strcmp(buf, want), "%s vs %s", buf, want);
	CHECK(strlen(buf) == strlen("/s/Mixtral_8x7B_v0.1-") + 16 + strlen(".autosave"));
	/* same base name elsewhere: another file */
	char other[512];
	CHECK(autosave_file_name("/s", "/other/Mixtral 8x7B+v0.1", other, sizeof other, &err) == MS_OK);
	CHECK(strcmp(buf, other) != 0);
	CHECK(autosave_file_name("/s", "/", buf, sizeof buf, &err) == MS_OK && !strncmp(buf, "/s/model-", 9), "%s", buf);
	char longname[200];
	memset(longname, 'a', sizeof longname);
	longname[0] = '/';
	longname[sizeof longname - 1] = '\0';
	CHECK(autosave_file_name("/s", longname, buf, sizeof buf, &err) == MS_OK);
	CHECK(strlen(buf) == 3 + 48 + 1 + 16 + 9, "%zu", strlen(buf));  /* the base name is cut to 48 bytes */
	CHECK(autosave_file_name("/s", model, buf, 20, &err) == MS_ERR_ARG && strstr(err.msg, "too long"));
}

static void make_model_dir(const char *dir, const char *config)
{
	char p[512];
	mkdir(dir, 0700);
	snprintf(p, sizeof p, "%s/config.json", dir);
	write_text(p, config, strlen(config));
}

static void test_identify(void)
{
	char dir[512], link[512], name1[1024], name2[1024], cfg[600];
	ms_error err = {0};
	fresh_dir(dir, sizeof dir, "model-a");
	make_model_dir(dir, "{\"model_type\": \"mixtral\"}");
	snprintf(link, sizeof link, "%s/link-to-a", tmp_root);
	CHECK(symlink(dir, link) == 0, "%s", strerror(errno));
	autosave_identity a, b;
	CHECK(autosave_identify(dir, &a, &err) == MS_OK, "%s", err.msg);
	CHECK(autosave_identify(link, &b, &err) == MS_OK, "%s", err.msg);
	CHECK(!strcmp(a.model, b.model) && a.model[0] == '/', "%s vs %s", a.model, b.model);
	CHECK(a.config_size == 25 && a.config_size == b.config_size && a.config_mtime_s == b.config_mtime_s &&
	      a.config_mtime_ns == b.config_mtime_ns);
	autosave_file_name("/s", a.model, name1, sizeof name1, &err);
	autosave_file_name("/s", b.model, name2, sizeof name2, &err);
	CHECK(!strcmp(name1, name2), "the symlink names the same file");
	/* another model copied over the same path: config.json differs */
	snprintf(cfg, sizeof cfg, "%s/config.json", dir);
	write_text(cfg, "{\"model_type\": \"olmoe\", \"x\": 1}", 31);
	CHECK(autosave_identify(dir, &b, &err) == MS_OK && b.config_size == 31 && !strcmp(a.model, b.model));
	/* no config.json, no directory, a line break */
	remove(cfg);
	CHECK(autosave_identify(dir, &b, &err) == MS_ERR_IO && strstr(err.msg, "config.json"), "%s", err.msg);
	CHECK(autosave_identify("/nonexistent/model", &b, &err) == MS_ERR_IO && strstr(err.msg, "/nonexistent/model"));
	char nl[512];
	snprintf(nl, sizeof nl, "%s/two\nlines", tmp_root);
	make_model_dir(nl, "{}");
	CHECK(autosave_identify(nl, &b, &err) == MS_ERR_ARG && strstr(err.msg, "line break"), "%s", err.msg);
}

static void test_locate_creates_private_dir(void)
{
	char model[512], state[512], path[1024], file[512];
	ms_error err = {0};
	fresh_dir(model, sizeof model, "model-b");
	make_model_dir(model, "{}");
	snprintf(state, sizeof state, "%s/deep/er/state", tmp_root);
	char *old = getenv("XDG_STATE_HOME") ? strdup(getenv("XDG_STATE_HOME")) : NULL;
	setenv("XDG_STATE_HOME", state, 1);
	autosave_identity id;
	CHECK(autosave_locate(model, &id, path, sizeof path, &err) == MS_OK, "%s", err.msg);
	char dir[600];
	snprintf(dir, sizeof dir, "%s/moescope", state);
	struct stat sb;
	CHECK(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == 0700);
	CHECK(!strncmp(path, dir, strlen(dir)) && strstr(path, "/model-b-"), "%s", path);
	/* a file where the directory should be */
	snprintf(file, sizeof file, "%s/plain-file", tmp_root);
	write_text(file, "x", 1);
	setenv("XDG_STATE_HOME", file, 1);
	CHECK(autosave_locate(model, &id, path, sizeof path, &err) == MS_ERR_IO && strstr(err.msg, "plain-file"), "%s",
	      err.msg);
	if (old)
		setenv("XDG_STATE_HOME", old, 1);
	else
		unsetenv("XDG_STATE_HOME");
	free(old);
}

/* ---- the file ---- */

enum { NB = 3, NE = 4 };
static const char *const labels[NB] = {"0", "1", "enc,2"};  /* a label the CSV must quote */

/* A record with a plan: block 1 merged into 2 groups, block 2 pruned one expert, settings off their defaults. */
static void make_record(autosave_record *r, int *groups, unsigned char *edited)
{
	memset(r, 0, sizeof *r);
	snprintf(r->id.model, sizeof r->id.model, "/models/with space/m");
	r->id.config_size = 1234;
	r->id.config_mtime_s = 1700000000;
	r->id.config_mtime_ns = 987654321;
	snprintf(r->calib, sizeof r->calib, "/data/calib.safetensors");
	r->saved = 1700000123;
	r->s = (autosave_settings){GRP_HC, SIM_WEIGHT, MERGE_UNIFORM, ALIGN_FIRST, CMP_RANK_ENERGY, 3,
				   PIPE_LAYOUT_ALIASED, RFIT_DOMINANT, MRUN_FORMAT_FACTORS};
	plan_init(&r->p, NB, NE, labels);
	static const int g1[NE] = {0, 1, 1, 0}, g2[NE] = {0, 1, 2, -1};
	static const unsigned char d1[NE] = {1, 0, 1, 0}, d2[NE] = {1, 1, 1, 0};
	memcpy(r->p.group + NE, g1, sizeof g1);
	memcpy(r->p.dominant + NE, d1, sizeof d1);
	memcpy(r->p.group + 2 * NE, g2, sizeof g2);
	memcpy(r->p.dominant + 2 * NE, d2, sizeof d2);
	for (int i = 0; i < NB * NE; i++)
		r->p.frequency[i] = 0.125 * (i % 5);
	groups[0] = 4, groups[1] = 2, groups[2] = 3;
	edited[0] = 0, edited[1] = 1, edited[2] = 0;
	r->groups = groups;
	r->edited = edited;
}

static void write_sample(const char *path)
{
	autosave_record r;
	int groups[NB];
	unsigned char edited[NB];
	make_record(&r, groups, edited);
	ms_error err = {0};
	CHECK(autosave_write(path, &r, &err) == MS_OK, "%s", err.msg);
	plan_free(&r.p);
}

static void test_round_trip(void)
{
	char dir[512], path[600];
	fresh_dir(dir, sizeof dir, "round");
	snprintf(path, sizeof path, "%s/m.autosave", dir);
	autosave_record w, r;
	int groups[NB];
	unsigned char edited[NB];
	make_record(&w, groups, edited);
	ms_error err = {0};
	CHECK(autosave_write(path, &w, &err) == MS_OK, "%s", err.msg);
	CHECK(autosave_write(path, &w, &err) == MS_OK, "replacing: %s", err.msg);
	CHECK(count_entries(dir) == 1, "no scratch or temporary file is left: %d entries", count_entries(dir));
	size_t n;
	char *text = read_text(path, &n);
	const char *head = "moescope-autosave 1\nmodel /models/with space/m\nconfig 1234 1700000000 987654321\n"
			   "calib /data/calib.safetensors\nsaved 1700000123\nmethod hc\nbase weight\nweighting uniform\n"
			   "align first\nrank_mode energy\nrank_step 3\nlayout aliased\nrouter dominant\nformat factors\n"
			   "groups 4 2 3\nedited 0 1 0\nplan ";
	CHECK(text && !strncmp(text, head, strlen(head)), "header:\n%.400s", text ? text : "");
	const char *csv = text ? strstr(text, "\nlayer,") : NULL;
	CHECK(csv && strstr(csv, "\n\"enc,2\",3,-1,0,"), "the plan CSV follows, labels quoted");
	free(text);

	CHECK(autosave_read(path, &w.id, NB, NE, labels, &r, &err) == MS_OK, "%s", err.msg);
	CHECK(!strcmp(r.id.model, w.id.model) && r.id.config_size == 1234 && r.id.config_mtime_s == 1700000000 &&
	      r.id.config_mtime_ns == 987654321);
	CHECK(!strcmp(r.calib, w.calib) && r.saved == 1700000123);
	CHECK(r.s.method == GRP_HC && r.s.base == SIM_WEIGHT && r.s.weighting == MERGE_UNIFORM &&
	      r.s.align == ALIGN_FIRST && r.s.rank_mode == CMP_RANK_ENERGY && r.s.rank_step == 3);
	CHECK(r.s.layout == PIPE_LAYOUT_ALIASED && r.s.router == RFIT_DOMINANT && r.s.format == MRUN_FORMAT_FACTORS,
	      "layout, router and format come back");
	CHECK(r.groups && !memcmp(r.groups, groups, sizeof groups) && r.edited && !memcmp(r.edited, edited, NB));
	CHECK(r.p.n_blocks == NB && r.p.n_experts == NE);
	CHECK(!memcmp(r.p.group, w.p.group, NB * NE * sizeof *r.p.group));
	CHECK(!memcmp(r.p.dominant, w.p.dominant, NB * NE));
	for (int i = 0; i < NB * NE; i++)
		CHECK_CLOSE(r.p.frequency[i], w.p.frequency[i], 1e-9);
	CHECK(count_entries(dir) == 1, "reading leaves no scratch file");
	autosave_record_free(&r);

	/* an empty calibration path and no identity to check */
	w.calib[0] = '\0';
	CHECK(autosave_write(path, &w, &err) == MS_OK);
	CHECK(autosave_read(path, NULL, NB, NE, labels, &r, &err) == MS_OK && r.calib[0] == '\0', "%s", err.msg);
	autosave_record_free(&r);
	plan_free(&w.p);
}

/* The sample file with `from` replaced by `to` (first occurrence) read back: its status and message. */
static ms_status read_edited(const char *path, const char *from, const char *to, const autosave_identity *expect,
			     ms_error *err)
{
	write_sample(path);
	size_t n;
	char *text = read_text(path, &n);
	char *at = text ? strstr(text, from) : NULL;
	if (!at) {
		free(text);
		return ms_fail(err, MS_OK, "test: '%s' not in the file", from);
	}
	char *out = malloc(n + strlen(to) + 1);
	const size_t pre = (size_t)(at - text);
	memcpy(out, text, pre);
	strcpy(out + pre, to);
	strcat(out + pre, at + strlen(from));
	write_text(path, out, strlen(out));
	free(out);
	free(text);
	autosave_record r;
	ms_status st = autosave_read(path, expect, NB, NE, labels, &r, err);
	if (st == MS_OK)
		autosave_record_free(&r);
	return st;
}

static void test_header_errors(void)
{
	char dir[512], path[600];
	fresh_dir(dir, sizeof dir, "errors");
	snprintf(path, sizeof path, "%s/e.autosave", dir);
	autosave_record w;
	int groups[NB];
	unsigned char edited[NB];
	make_record(&w, groups, edited);
	plan_free(&w.p);
	static const struct {
		const char *from, *to;
		ms_status want;
		const char *says;
	} cases[] = {
		{"moescope-autosave 1", "moescope-autosave 2", MS_ERR_IO, ": line 1: version '2'"},
		{"moescope-autosave 1", "mixtral", MS_ERR_IO, ": line 1: not a moescope autosave"},
		{"\nmodel ", "\nmodle ", MS_ERR_IO, ": line 2: expected 'model', found 'modle /models"},
		{"config 1234 1700000000", "config 1234 17x0000000", MS_ERR_IO, ": line 3: config: value 2 is missing"},
		{"987654321\n", "987654321 5\n", MS_ERR_IO, ": line 3: config: more than 3 values"},
		{"saved 1700000123", "saved 99999999999999999999999", MS_ERR_IO, ": line 5: saved"},
		{"method hc", "method kmeans", MS_ERR_IO, ": line 6: unknown method 'kmeans'"},
		{"base weight", "base", MS_ERR_IO, ": line 7: unknown base ''"},
		{"align first", "align\001first", MS_ERR_IO, ": line 9: expected 'align', found 'align?first'"},
		{"rank_step 3", "rank_step -1", MS_ERR_IO, ": line 11: rank_step"},
		{"layout aliased", "layout diagonal", MS_ERR_IO, ": line 12: unknown layout 'diagonal'"},
		{"router dominant", "router best", MS_ERR_IO, ": line 13: unknown router 'best'"},
		{"format factors", "format zip", MS_ERR_IO, ": line 14: unknown format 'zip'"},
		{"groups 4 2 3", "groups 4 2", MS_ERR_ARG, ": line 15: groups: 2 blocks, the model has 3"},
		{"groups 4 2 3", "groups 4 0 3", MS_ERR_IO, ": line 15: groups: value 2"},
		{"groups 4 2 3", "groups 4 5 3", MS_ERR_IO, ": line 15: groups: value 2"},
		{"edited 0 1 0", "edited 0 2 0", MS_ERR_IO, ": line 16: edited: value 2"},
		{"edited 0 1 0", "edited 0 1 x", MS_ERR_IO, ": line 16: edited: value 3"},
		{"edited 0 1 0", "edited 0 1  0", MS_ERR_ARG, ": line 16: edited: 4 blocks"},
		{"\nplan ", "\nplan 1", MS_ERR_IO, ": line 17: plan: "},
		{"\nplan ", "\nplan x", MS_ERR_IO, ": line 17: plan: expected its byte count"},
		{"\nlayer,", "\nlayer;", MS_ERR_IO, ": line 17: plan: checksum does not match"},
		{"\nedited", "\0edited", MS_ERR_IO, ": line 15: a NUL byte"},
		{"/models/with space/m", "/models/with space/n", MS_ERR_ARG, "the autosave of /models/with space/n, not of"},
		{"1700000000 987654321", "1700000000 987654320", MS_ERR_ARG, "config.json changed"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ms_error err = {0};
		/* "\0edited": strstr/strcpy stop at the NUL, so that case writes the NUL through a second step */
		ms_status st;
		if (cases[i].to[0] == '\0' && cases[i].from[0] == '\n') {
			write_sample(path);
			size_t n;
			char *text = read_text(path, &n);
			char *at = strstr(text, "\nedited");
			*at = '\0';
			write_text(path, text, n);
			free(text);
			autosave_record r;
			st = autosave_read(path, &w.id, NB, NE, labels, &r, &err);
		} else {
			st = read_edited(path, cases[i].from, cases[i].to, &w.id, &err);
		}
		CHECK(st == cases[i].want, "case %zu (%s): %s, wanted %s: %s", i, cases[i].to, ms_status_name(st),
		      ms_status_name(cases[i].want), err.msg);
		CHECK(strstr(err.msg, cases[i].says) && !strncmp(err.msg, path, strlen(path)), "case %zu: '%s' not in '%s'",
		      i, cases[i].says, err.msg);
	}
	CHECK(count_entries(dir) == 1, "no scratch file left");
	ms_error err = {0};
	autosave_record r;
	CHECK(autosave_read("/nonexistent/x.autosave", NULL, NB, NE, labels, &r, &err) == MS_ERR_IO &&
	      strstr(err.msg, "/nonexistent/x.autosave: cannot open"), "%s", err.msg);
	CHECK(autosave_read(dir, NULL, NB, NE, labels, &r, &err) == MS_ERR_IO && strstr(err.msg, "not a regular file"),
	      "%s", err.msg);
}

/* A header that passes with a plan CSV that does not: the error is plan_read_csv's, its line counted in the
 * whole file (14 header lines before the CSV). */
static void test_plan_errors_name_the_file_line(void)
{
	char dir[512], path[600];
	fresh_dir(dir, sizeof dir, "planerr");
	snprintf(path, sizeof path, "%s/p.autosave", dir);
	static const struct {
		const char *csv;
		ms_status want;
		const char *says;
	} cases[] = {
		{"layer,expert,group,dominant,frequency\n0,0,0,1,0.5\n9,0,0,1,0.5\n", MS_ERR_PLAN_LAYER, ": line 17, column 1:"},
		{"layer,expert,group\n", MS_ERR_PLAN_HEADER, ": line 15, column "},
		{"", MS_ERR_PLAN_HEADER, ": line 15, column 1: empty file"},
		{"layer,expert,group,dominant,frequency\n0,0,0,1,0.5\n", MS_ERR_PLAN_MISSING, "has no row for expert 1"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const size_t n = strlen(cases[i].csv);
		char text[1024];
		snprintf(text, sizeof text,
			 "moescope-autosave 1\nmodel /m\nconfig 1 2 3\ncalib \nsaved 4\nmethod msmoe\nbase weight\n"
			 "weighting frequency\nalign dominant\nrank_mode none\nrank_step 0\ngroups 4 4 4\nedited 0 0 0\n"
			 "plan %zu %016llx\n%s",
			 n, (unsigned long long)autosave_fnv1a(AUTOSAVE_FNV_BASIS, cases[i].csv, n), cases[i].csv);
		write_text(path, text, strlen(text));
		autosave_record r;
		ms_error err = {0};
		ms_status st = autosave_read(path, NULL, NB, NE, labels, &r, &err);
		CHECK(st == cases[i].want, "case %zu: %s: %s", i, ms_status_name(st), err.msg);
		CHECK(!strncmp(err.msg, path, strlen(path)) && strstr(err.msg, cases[i].says), "case %zu: '%s' not in '%s'", i,
		      cases[i].says, err.msg);
		CHECK(!strstr(err.msg, ".read.csv"), "the scratch file is not named: %s", err.msg);
	}
	CHECK(count_entries(dir) == 1, "no scratch file left");
}

/* Every proper prefix of a good file is refused; every byte overwritten is refused or lands in a field the
 * reader cannot check (the calibration path, a name for people). Nothing crashes or leaks (ASan). */
static void test_truncated_and_overwritten(void)
{
	char dir[512], path[600], good[600];
	fresh_dir(dir, sizeof dir, "damage");
	snprintf(path, sizeof path, "%s/d.autosave", dir);
	snprintf(good, sizeof good, "%s/good", dir);
	write_sample(good);
	autosave_record id;
	int groups[NB];
	unsigned char edited[NB];
	make_record(&id, groups, edited);
	plan_free(&id.p);
	size_t n;
	char *text = read_text(good, &n);
	CHECK(text && n > 300);
	if (!text)
		return;
	autosave_record r;
	ms_error err;
	int accepted = 0;
	for (size_t k = 0; k < n; k++) {
		write_text(path, text, k);
		if (autosave_read(path, NULL, NB, NE, labels, &r, &err) == MS_OK) {
			accepted++;
			autosave_record_free(&r);
		}
	}
	CHECK(accepted == 0, "%d truncated files accepted", accepted);
	const char *cal = strstr(text, "\ncalib ") + 7, *cal_end = strchr(cal, '\n');
	int wrong = 0;
	for (size_t k = 0; k < n; k++) {
		const char saved = text[k];
		text[k] = saved == 'X' ? 'Y' : 'X';
		write_text(path, text, n);
		text[k] = saved;
		if (autosave_read(path, &id.id, NB, NE, labels, &r, &err) != MS_OK)
			continue;
		autosave_record_free(&r);
		if (!(text + k >= cal && text + k < cal_end))
			wrong++;
	}
	CHECK(wrong == 0, "%d overwritten bytes outside the calibration path accepted", wrong);
	free(text);
	CHECK(count_entries(dir) == 2, "no scratch file left");
}

static void test_write_errors(void)
{
	char dir[512], path[600];
	fresh_dir(dir, sizeof dir, "werr");
	autosave_record w;
	int groups[NB];
	unsigned char edited[NB];
	make_record(&w, groups, edited);
	ms_error err = {0};
	CHECK(autosave_write("/nonexistent/dir/x.autosave", &w, &err) == MS_ERR_IO && strstr(err.msg, "/nonexistent/dir"),
	      "%s", err.msg);
	snprintf(path, sizeof path, "%s/w.autosave", dir);
	snprintf(w.calib, sizeof w.calib, "/two\nlines");
	CHECK(autosave_write(path, &w, &err) == MS_ERR_ARG && strstr(err.msg, "line break"), "%s", err.msg);
	w.calib[0] = '\0';
	groups[1] = 9;
	CHECK(autosave_write(path, &w, &err) == MS_ERR_ARG && strstr(err.msg, "block 1"), "%s", err.msg);
	groups[1] = 2;
	w.s.method = GRP_METHOD_COUNT;
	CHECK(autosave_write(path, &w, &err) == MS_ERR_ARG, "%s", err.msg);
	w.s.method = GRP_MSMOE;
	w.p.group[NE + 3] = 5;  /* a hole in block 1's numbering */
	CHECK(autosave_write(path, &w, &err) == MS_ERR_PLAN_GROUP, "%s: %s", ms_status_name(err.code), err.msg);
	CHECK(count_entries(dir) == 0, "nothing left behind");
	CHECK(autosave_remove(path) == 0, "removing nothing is fine");
	plan_free(&w.p);
}

static void test_format_time(void)
{
	char buf[64];
	setenv("TZ", "UTC", 1);
	tzset();
	autosave_format_time(1700000000, buf, sizeof buf);
	CHECK(!strcmp(buf, "2023-11-14 22:13:20"), "%s", buf);
}

/* ---- the application ---- */

static void press(app *a, const char *keys)
{
	for (const char *k = keys; *k; k++) {
		app_key(a, *k);
		app_wait_idle(a);
	}
}

static int file_has(const char *path, const char *text)
{
	size_t n;
	char *s = read_text(path, &n);
	int has = s && strstr(s, text);
	free(s);
	return has;
}

/* A fresh state directory `name` as XDG_STATE_HOME and the golden model opened in the application with autosave
 * on; nonzero (a failed check) when the model does not open. */
static int open_autosaving(golden_app *ga, char *state, size_t len, const char *name)
{
	fresh_dir(state, len, name);
	setenv("XDG_STATE_HOME", state, 1);
	if (golden_app_open(ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 64, .autosave = 1}) != 0) {
		CHECK(0, "golden model");
		return -1;
	}
	return 0;
}

static void test_app_writes_and_removes(void)
{
	char state[512];
	golden_app ga;
	if (open_autosaving(&ga, state, sizeof state, "app-state") != 0)
		return;
	app *a = &ga.a;
	char path[AUTOSAVE_PATH_MAX];  /* app_free clears the application's copy */
	snprintf(path, sizeof path, "%s", a->autosave_path);
	CHECK(path[0] && !strncmp(path, state, strlen(state)), "%s", path);
	CHECK(a->mode == APP_MODE_NORMAL && !exists(path), "opening writes nothing");
	press(a, "2l1j");  /* moving around (to block 1): nothing */
	CHECK(!exists(path));
	press(a, "-");
	CHECK(file_has(path, "\ngroups 8 7 8\n"), "G 7 in block 1 autosaved");
	press(a, "w");
	CHECK(file_has(path, "\nweighting uniform\n") && file_has(path, "\ngroups 8 7 8\n"),
	      "a merge setting is autosaved");
	press(a, "ww");  /* uniform, dominant, back to frequency */
	CHECK(file_has(path, "\nweighting frequency\n"));
	press(a, "uuuu"); /* the three w (each an undo step), then G 8 everywhere: the opening state, nothing unsaved */
	CHECK(!exists(path), "undone to the opening state: the file goes");
	press(a, "U");
	CHECK(file_has(path, "\ngroups 8 7 8\n"), "redo writes it again");
	/* export through the dialog: a clean point */
	char csv[600];
	snprintf(csv, sizeof csv, "%s/exported.csv", state);
	press(a, "e");
	app_key(a, KEYS_CTRL('u'));
	press(a, csv);
	app_key(a, KEYS_ENTER);
	CHECK(exists(csv) && !exists(path), "export removes the autosave");
	press(a, "-");
	CHECK(file_has(path, "\ngroups 8 6 8\n"));
	golden_app_close(&ga);  /* no quit: as after a kill */
	CHECK(exists(path), "the file outlives the application");
	unsetenv("XDG_STATE_HOME");
}

/* Layout, router and format (L, R, F) are steps of the same undo history as plan edits: u takes them back one at a
 * time, in order with the plan's, U brings them again, and the autosave follows each step (gone when undone to the
 * opening state). */
static void test_app_undoes_settings(void)
{
	char state[512];
	golden_app ga;
	if (open_autosaving(&ga, state, sizeof state, "app-state-undo") != 0)
		return;
	app *a = &ga.a;
	char path[AUTOSAVE_PATH_MAX];
	snprintf(path, sizeof path, "%s", a->autosave_path);
	const pipe_layout layout0 = a->mo.layout;
	const rfit_method router0 = a->mo.router;
	const mrun_format format0 = a->format;
	CHECK(layout0 == PIPE_LAYOUT_COMPACT && format0 == MRUN_FORMAT_DENSE, "the defaults this test starts from");
	press(a, "-");  /* block 0 at G 7: a merged block whose evaluation depends on layout and router */
	const app_totals t0 = app_plan_totals(a);
	const double err0 = a->eval[0].r.rel_error;
	press(a, "LRF");
	CHECK(a->mo.layout == PIPE_LAYOUT_ALIASED && a->mo.router != router0 && a->format == MRUN_FORMAT_FACTORS);
	CHECK(file_has(path, "\nlayout aliased\n") && file_has(path, "\nformat factors\n"), "the settings autosaved");
	press(a, "u");
	CHECK(a->format == format0 && a->mo.layout == PIPE_LAYOUT_ALIASED && a->mo.router != router0,
	      "u takes back the format alone");
	CHECK(file_has(path, "\nformat dense\n") && file_has(path, "\nlayout aliased\n"), "the autosave follows");
	press(a, "u");
	CHECK(a->mo.router == router0 && a->mo.layout == PIPE_LAYOUT_ALIASED, "then the router");
	press(a, "u");
	CHECK(a->mo.layout == layout0 && a->cur.groups[0] == 7, "then the layout, the plan edit still there");
	CHECK(file_has(path, "\nlayout compact\n") && file_has(path, "\ngroups 7 8 8\n"));
	/* the block is evaluated again under the layout and router that came back: the same error and totals */
	const app_totals t1 = app_plan_totals(a);
	CHECK(a->eval[0].state == APP_EVAL_DONE && a->eval[0].r.rel_error == err0, "error %g, before %g",
	      a->eval[0].r.rel_error, err0);
	CHECK(t1.size.bytes_after == t0.size.bytes_after && t1.evaluated == t0.evaluated);
	press(a, "u");
	CHECK(a->cur.groups[0] == 8 && !exists(path), "undone to the opening state: the file goes");
	press(a, "UU");
	CHECK(a->cur.groups[0] == 7 && a->mo.layout == PIPE_LAYOUT_ALIASED && a->mo.router == router0,
	      "redo brings the plan edit, then the layout");
	CHECK(file_has(path, "\nlayout aliased\n"), "and the autosave with them");
	press(a, "-");  /* a new change clears what was left to redo */
	press(a, "U");
	CHECK(a->mo.router == router0 && strstr(a->message, "nothing to redo"), "%s", a->message);
	golden_app_close(&ga);
	unsetenv("XDG_STATE_HOME");
}

/* Weighting, alignment and compression (w, a, r, ]) are undo steps as L, R and F are: u takes each back in turn,
 * and the block evaluated again under the settings that came back gives the same error and totals, bit for bit. */
static void test_app_undoes_merge_settings(void)
{
	char state[512];
	golden_app ga;
	if (open_autosaving(&ga, state, sizeof state, "app-state-undo-merge") != 0)
		return;
	app *a = &ga.a;
	press(a, "-");  /* block 0 at G 7: merged, so its evaluation depends on every merge setting */
	const pipe_merge_options mo0 = a->mo;
	const int step0 = a->rank_step;
	const app_totals t0 = app_plan_totals(a);
	const double err0 = a->eval[0].r.rel_error;
	CHECK(a->eval[0].state == APP_EVAL_DONE && mo0.compress.mode == CMP_RANK_NONE, "the state this test starts from");
	press(a, "w");
	const merge_weighting w1 = a->mo.weighting;
	press(a, "a");
	const align_ref al1 = a->mo.align;
	press(a, "r");
	const cmp_options c1 = a->mo.compress;
	const int step1 = a->rank_step;
	press(a, "]");
	CHECK(w1 != mo0.weighting && al1 != mo0.align && c1.mode != CMP_RANK_NONE && a->rank_step == step1 + 1,
	      "each key changed its setting");
	CHECK(a->n_undo >= 5, "%d undo steps", a->n_undo);
	press(a, "u");
	CHECK(a->rank_step == step1 && a->mo.compress.mode == c1.mode && a->mo.compress.energy == c1.energy &&
	      a->mo.compress.stable_k == c1.stable_k && a->mo.compress.rank == c1.rank, "u takes back ] alone");
	press(a, "u");
	CHECK(a->mo.compress.mode == CMP_RANK_NONE && a->rank_step == step0 && a->mo.align == al1, "then r");
	press(a, "u");
	CHECK(a->mo.align == mo0.align && a->mo.weighting == w1, "then a");
	press(a, "u");
	CHECK(a->mo.weighting == mo0.weighting && a->cur.groups[0] == 7, "then w, the plan edit still there");
	const app_totals t1 = app_plan_totals(a);
	CHECK(a->eval[0].state == APP_EVAL_DONE && a->eval[0].r.rel_error == err0, "error %g, before %g",
	      a->eval[0].r.rel_error, err0);
	CHECK(t1.size.bytes_after == t0.size.bytes_after && t1.evaluated == t0.evaluated);
	press(a, "UU");
	CHECK(a->mo.weighting == w1 && a->mo.align == al1 && a->mo.compress.mode == CMP_RANK_NONE, "redo: w, then a");
	golden_app_close(&ga);
	unsetenv("XDG_STATE_HOME");
}

/* G lowered before the block's statistics are in: the file first holds the new G with the old grouping, then,
 * once the statistics land and remake the block, the new grouping. (When the statistics win the race the file
 * has it at once; either way it ends up with it.) */
static void test_app_rewrites_when_statistics_land(void)
{
	char state[512];
	fresh_dir(state, sizeof state, "app-state3");
	setenv("XDG_STATE_HOME", state, 1);
	ms_error err = {0};
	golden_app ga;
	memset(&ga, 0, sizeof ga);
	CHECK(mdl_open(GOLDEN "/model", &ga.m, &err) == MS_OK && calib_open(GOLDEN "/calib.safetensors", ga.m, &ga.cal,
									&err) == MS_OK, "%s", err.msg);
	app_config cfg = {.width = 100, .height = 30, .eval_tokens = 64, .autosave = 1};
	if (!ga.cal || app_init(&ga.a, ga.m, ga.cal, &cfg, &err) != 0) {
		CHECK(0, "%s", err.msg);
		golden_app_close(&ga);
		return;
	}
	app_key(&ga.a, '-');  /* no waiting */
	CHECK(file_has(ga.a.autosave_path, "\ngroups 7 8 8\n"));
	app_wait_idle(&ga.a);
	autosave_record r;
	const char *lab[3] = {"0", "1", "2"};
	CHECK(autosave_read(ga.a.autosave_path, &ga.a.autosave_id, 3, 8, lab, &r, &err) == MS_OK, "%s", err.msg);
	CHECK(plan_groups(&r.p, 0) == 7 && plan_groups(&r.p, 1) == 8, "block 0 has %d groups in the file",
	      plan_groups(&r.p, 0));
	autosave_record_free(&r);
	golden_app_close(&ga);
	unsetenv("XDG_STATE_HOME");
}

static void test_app_restores(void)
{
	char state[512];
	golden_app ga;
	if (open_autosaving(&ga, state, sizeof state, "app-state2") != 0)
		return;
	app *a = &ga.a;
	char path[AUTOSAVE_PATH_MAX];
	snprintf(path, sizeof path, "%s", a->autosave_path);
	const rfit_method router0 = a->mo.router;
	press(a, "j--maLR");  /* block 1 at G 6, method hc, align first, layout aliased, the next router */
	const rfit_method router = a->mo.router;
	CHECK(a->mo.layout == PIPE_LAYOUT_ALIASED && router != router0, "L and R set layout and router");
	plan want;
	plan_copy(&want, &a->cur.p);
	const grp_method method = a->cur.method;
	golden_app_close(&ga);

	/* opened again: the dialog; other keys leave it open; y restores */
	CHECK(golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 64, .autosave = 1}) == 0);
	a = &ga.a;
	CHECK(a->mode == APP_MODE_RESTORE && a->restore, "the dialog opens");
	CHECK(strstr(a->dlg.text, "An unsaved plan from ") && strstr(a->dlg.text, "Restore it? (y/n)"), "%s",
	      a->dlg.text);
	app_draw(a);
	press(a, "jq-");
	CHECK(a->mode == APP_MODE_RESTORE && a->cur.groups[1] == 8 && !a->quit, "keys other than y/n do nothing");
	press(a, "y");
	CHECK(a->mode == APP_MODE_NORMAL && !a->restore);
	CHECK(a->cur.groups[1] == 6 && a->cur.method == method && a->mo.align == ALIGN_FIRST);
	CHECK(a->mo.layout == PIPE_LAYOUT_ALIASED && a->mo.router == router, "layout and router restored");
	CHECK(!memcmp(a->cur.p.group, want.group, (size_t)want.n_blocks * want.n_experts * sizeof *want.group) &&
	      !memcmp(a->cur.p.dominant, want.dominant, (size_t)want.n_blocks * want.n_experts),
	      "the plan is the one autosaved");
	CHECK(strstr(a->message, "plan restored"), "%s", a->message);
	CHECK(exists(path), "restored, not saved: the file stays");
	CHECK(app_dirty(a), "a restored plan is unsaved");
	/* quitting: asked, confirmed, clean */
	press(a, "q");
	CHECK(a->mode == APP_MODE_CONFIRM);
	press(a, "y");
	CHECK(a->quit && !exists(path), "a confirmed quit removes the file");
	golden_app_close(&ga);
	plan_free(&want);

	/* n discards */
	CHECK(golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 64, .autosave = 1}) == 0);
	press(&ga.a, "-");
	golden_app_close(&ga);
	CHECK(golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 64, .autosave = 1}) == 0);
	CHECK(ga.a.mode == APP_MODE_RESTORE);
	press(&ga.a, "n");
	CHECK(ga.a.mode == APP_MODE_NORMAL && ga.a.cur.groups[0] == 8 && !exists(path));
	golden_app_close(&ga);

	/* broken: reported in an error dialog, removed */
	write_text(path, "moescope-autosave 1\nmodel /elsewhere\n", 37);
	CHECK(golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 64, .autosave = 1}) == 0);
	CHECK(ga.a.mode == APP_MODE_MESSAGE && ga.a.dlg.is_error && strstr(ga.a.dlg.text, "cannot be restored") &&
	      strstr(ga.a.dlg.text, "line 3"), "%s", ga.a.dlg.text);
	CHECK(!exists(path), "the broken file is discarded");
	golden_app_close(&ga);
	unsetenv("XDG_STATE_HOME");
}

/* The settings beside an exported plan: written, read back, absent, and refused with the line when damaged. */
static void test_settings_sidecar(void)
{
	char dir[512], csv[600], side[640];
	fresh_dir(dir, sizeof dir, "sidecar");
	snprintf(csv, sizeof csv, "%s/plan.csv", dir);
	ms_error err = {0};
	autosave_settings w = {GRP_PRUNE_FREQUENCY, SIM_ROUTER_WEIGHT, MERGE_DOMINANT, ALIGN_NONE, CMP_RANK_FIXED, 5,
			       PIPE_LAYOUT_ALIASED, RFIT_AUTO, MRUN_FORMAT_FACTORS}, r;
	int found = 1;
	CHECK(autosave_settings_read(csv, &r, &found, &err) == MS_OK && !found, "none yet: %s", err.msg);
	CHECK(autosave_settings_write(csv, &w, &err) == MS_OK, "%s", err.msg);
	CHECK(autosave_settings_read(csv, &r, &found, &err) == MS_OK && found, "%s", err.msg);
	CHECK(!memcmp(&r, &w, sizeof r), "the settings come back");
	snprintf(side, sizeof side, "%s.settings", csv);
	CHECK(exists(side), "beside the CSV, named PATH.settings");
	write_text(side, "moescope-settings 1\nmethod msmoe\nbase nope\n", 44);
	CHECK(autosave_settings_read(csv, &r, &found, &err) == MS_ERR_IO && !found);
	CHECK(strstr(err.msg, side) && strstr(err.msg, "line 3") && strstr(err.msg, "nope"), "%s", err.msg);
	write_text(side, "layer,expert\n", 13);
	CHECK(autosave_settings_read(csv, &r, &found, &err) == MS_ERR_IO && strstr(err.msg, "line 1"), "%s", err.msg);
}

/* A second instance on the same model runs without an autosave: it neither offers nor discards nor overwrites the
 * first one's live file; once the first has quit, the next instance has the autosave again. */
static void test_two_instances(void)
{
	char state[512];
	fresh_dir(state, sizeof state, "app-two");
	setenv("XDG_STATE_HOME", state, 1);
	golden_app one, two;
	const app_config cfg = {.width = 100, .height = 30, .eval_tokens = 64, .autosave = 1};
	if (golden_app_open(&one, &cfg) != 0) {
		CHECK(0, "golden model");
		return;
	}
	char path[AUTOSAVE_PATH_MAX];
	snprintf(path, sizeof path, "%s", one.a.autosave_path);
	press(&one.a, "-");
	CHECK(exists(path), "the first instance autosaves");
	CHECK(golden_app_open(&two, &cfg) == 0);
	CHECK(!two.a.autosave_path[0] && two.a.mode == APP_MODE_NORMAL, "the second has no autosave and no dialog");
	char pid[32];
	snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
	CHECK(strstr(two.a.message, "another moescope") && strstr(two.a.message, pid), "%s", two.a.message);
	press(&two.a, "--");
	press(&two.a, "q");
	press(&two.a, "y");
	golden_app_close(&two);
	CHECK(exists(path), "the second one's changes and quit leave the first one's file");
	autosave_record r;
	ms_error err = {0};
	const char **labels_m = mdl_block_labels(one.m);
	CHECK(autosave_read(path, &one.a.autosave_id, one.a.n_blocks, one.a.E, labels_m, &r, &err) == MS_OK, "%s",
	      err.msg);
	CHECK(r.groups && r.groups[0] == 7, "it still holds the first one's plan");
	autosave_record_free(&r);
	free(labels_m);
	golden_app_close(&one);  /* not a clean exit in the autosave's sense: the file stays, the lock goes */
	CHECK(exists(path));
	char lock[AUTOSAVE_PATH_MAX + 8];
	snprintf(lock, sizeof lock, "%s.lock", path);
	CHECK(!exists(lock), "the lock file goes with its holder");
	CHECK(golden_app_open(&two, &cfg) == 0);
	CHECK(two.a.autosave_path[0] && two.a.mode == APP_MODE_RESTORE, "the next instance is offered the plan");
	press(&two.a, "n");
	golden_app_close(&two);
	unsetenv("XDG_STATE_HOME");
}

static void test_app_without_state_dir(void)
{
	char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	unsetenv("XDG_STATE_HOME");
	unsetenv("HOME");
	golden_app ga;
	CHECK(golden_app_open(&ga, &(app_config){.width = 100, .height = 30, .eval_tokens = 64, .autosave = 1}) == 0);
	CHECK(!ga.a.autosave_path[0] && strstr(ga.a.message, "autosave off"), "%s", ga.a.message);
	press(&ga.a, "-");
	CHECK(ga.a.cur.groups[0] == 7, "the application works without it");
	golden_app_close(&ga);
	if (old_home)
		setenv("HOME", old_home, 1);
	free(old_home);
}

int main(void)
{
	snprintf(tmp_root, sizeof tmp_root, "%s/moescope-autosave-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmp_root)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_fnv1a_vectors);
	RUN(test_state_dir);
	RUN(test_file_name);
	RUN(test_identify);
	RUN(test_locate_creates_private_dir);
	RUN(test_round_trip);
	RUN(test_header_errors);
	RUN(test_plan_errors_name_the_file_line);
	RUN(test_truncated_and_overwritten);
	RUN(test_write_errors);
	RUN(test_format_time);
	RUN(test_app_writes_and_removes);
	RUN(test_app_rewrites_when_statistics_land);
	RUN(test_app_restores);
	RUN(test_app_undoes_settings);
	RUN(test_app_undoes_merge_settings);
	RUN(test_settings_sidecar);
	RUN(test_two_instances);
	RUN(test_app_without_state_dir);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp_root);
	return test_summary();
}
