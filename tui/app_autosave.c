/* The autosave file (tui/autosave.h): its place, its name, writing it atomically and durably (io/durable.h) and
 * reading it back with every line checked. The plan part is the plan CSV exactly as io/plan.h writes and reads
 * it: written by plan_write_csv_stream into memory, read in place by plan_read_csv_buffer, so there is one CSV
 * format and one CSV parser, and no scratch file. (The file is named app_autosave.c only so that the Makefile's
 * list of unit-test sources, which takes in tui/app_*.c, links it.) */
#include "tui/autosave.h"

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/durable.h"
#include "io/outdir.h"

#define AUTOSAVE_MAGIC "moescope-autosave 1"
/* The plan CSV is refused past 64 MiB (io/plan.c); the header adds a few bytes per block. */
#define AUTOSAVE_FILE_LIMIT (80LL << 20)
#define AUTOSAVE_NAME_MAX 48

uint64_t autosave_fnv1a(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= AUTOSAVE_FNV_PRIME;
	}
	return h;
}

/* ---- where the file lives ---- */

ms_status autosave_state_dir(char *buf, size_t len, ms_error *err)
{
	/* The XDG base directory specification says to ignore a relative XDG_STATE_HOME. */
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	int n;
	if (xdg && xdg[0] == '/')
		n = snprintf(buf, len, "%s/moescope", xdg);
	else if (home && home[0] == '/')
		n = snprintf(buf, len, "%s/.local/state/moescope", home);
	else
		return ms_fail(err, MS_ERR_ARG, "no state directory: neither XDG_STATE_HOME nor HOME is an absolute path");
	if (n < 0 || (size_t)n >= len)
		return ms_fail(err, MS_ERR_ARG, "the state directory's path is too long");
	return MS_OK;
}

/* The base name of path with anything but [A-Za-z0-9._-] as '_', at most AUTOSAVE_NAME_MAX bytes. */
static void safe_base_name(const char *path, char *out)
{
	size_t end = strlen(path);
	while (end > 0 && path[end - 1] == '/')
		end--;
	size_t start = end;
	while (start > 0 && path[start - 1] != '/')
		start--;
	size_t n = 0;
	for (size_t i = start; i < end && n < AUTOSAVE_NAME_MAX; i++) {
		const char c = path[i];
		const int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
			       c == '_' || c == '-';
		out[n++] = ok ? c : '_';
	}
	if (n == 0 || (n <= 2 && out[0] == '.'))  /* "/", ".", "..": nothing to show */
		n = (size_t)snprintf(out, AUTOSAVE_NAME_MAX + 1, "model");
	out[n] = '\0';
}

ms_status autosave_file_name(const char *dir, const char *model_real, char *buf, size_t len, ms_error *err)
{
	char name[AUTOSAVE_NAME_MAX + 1];
	safe_base_name(model_real, name);
	const uint64_t h = autosave_fnv1a(AUTOSAVE_FNV_BASIS, model_real, strlen(model_real));
	int n = snprintf(buf, len, "%s/%s-%016llx.autosave", dir, name, (unsigned long long)h);
	if (n < 0 || (size_t)n >= len)
		return ms_fail(err, MS_ERR_ARG, "%s: the autosave's path is too long", dir);
	return MS_OK;
}

ms_status autosave_identify(const char *model_dir, autosave_identity *id, ms_error *err)
{
	memset(id, 0, sizeof *id);
	char *real = realpath(model_dir, NULL);
	if (!real)
		return ms_fail(err, MS_ERR_IO, "%s: %s", model_dir, strerror(errno));
	const size_t n = strlen(real);
	ms_status st = MS_OK;
	if (n >= sizeof id->model)
		st = ms_fail(err, MS_ERR_ARG, "%s: path too long for an autosave", model_dir);
	else if (strchr(real, '\n'))
		st = ms_fail(err, MS_ERR_ARG, "%s: a path with a line break cannot be autosaved", model_dir);
	if (st) {
		free(real);
		return st;
	}
	memcpy(id->model, real, n + 1);
	free(real);
	char cfg[AUTOSAVE_PATH_MAX + 16];
	snprintf(cfg, sizeof cfg, "%s/config.json", id->model);
	struct stat sb;
	if (stat(cfg, &sb) != 0)
		return ms_fail(err, MS_ERR_IO, "%s: %s", cfg, strerror(errno));
	id->config_size = (long long)sb.st_size;
	id->config_mtime_s = (long long)sb.st_mtim.tv_sec;
	id->config_mtime_ns = (long long)sb.st_mtim.tv_nsec;
	return MS_OK;
}

ms_status autosave_locate(const char *model_dir, autosave_identity *id, char *path, size_t len, ms_error *err)
{
	char dir[AUTOSAVE_PATH_MAX];
	ms_status st = autosave_identify(model_dir, id, err);
	if (!st)
		st = autosave_state_dir(dir, sizeof dir, err);
	if (!st)
		st = outdir_make_dirs(dir, 0700, err);  /* state is private */
	if (!st)
		st = autosave_file_name(dir, id->model, path, len, err);
	return st;
}

/* ---- small file helpers ---- */

/* path + suffix with this process's id in between: two applications on one model never share a temporary file. */
static char *sibling(const char *path, const char *suffix)
{
	size_t n = strlen(path) + strlen(suffix) + 24;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s.%ld%s", path, (long)getpid(), suffix);
	return s;
}

/* The whole of a regular file, NUL-terminated, at most AUTOSAVE_FILE_LIMIT bytes. */
static ms_status slurp(const char *path, char **data, size_t *len, ms_error *err)
{
	*data = NULL;
	FILE *f = fopen(path, "rb");
	if (!f)
		return ms_fail(err, MS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
	struct stat sb;
	ms_status st = MS_OK;
	if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
		st = ms_fail(err, MS_ERR_IO, "%s: not a regular file", path);
	else if (sb.st_size > AUTOSAVE_FILE_LIMIT)
		st = ms_fail(err, MS_ERR_IO, "%s: %lld bytes, over the %lld-byte limit", path, (long long)sb.st_size,
			     AUTOSAVE_FILE_LIMIT);
	else if (!(*data = malloc((size_t)sb.st_size + 1)))
		st = ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	else if ((*len = fread(*data, 1, (size_t)sb.st_size, f)) != (size_t)sb.st_size || ferror(f))
		st = ms_fail(err, MS_ERR_IO, "%s: read failed", path);
	fclose(f);
	if (st) {
		free(*data);
		*data = NULL;
		return st;
	}
	(*data)[*len] = '\0';
	return MS_OK;
}

/* ---- writing ---- */

static int write_list(FILE *f, const char *key, const int *vi, const unsigned char *vu, int n)
{
	int bad = fputs(key, f) < 0;
	for (int b = 0; b < n; b++)
		bad |= fprintf(f, " %d", vi ? vi[b] : (int)vu[b]) < 0;
	return bad | (fputc('\n', f) == EOF);
}

static int write_settings(FILE *f, const autosave_settings *s)
{
	return fprintf(f, "method %s\nbase %s\nweighting %s\nalign %s\nrank_mode %s\nrank_step %d\nlayout %s\n"
			  "router %s\nformat %s\n",
		       grp_method_name(s->method), sim_base_name(s->base), merge_weighting_name(s->weighting),
		       align_ref_name(s->align), cmp_rank_mode_name(s->rank_mode), s->rank_step,
		       pipe_layout_name(s->layout), rfit_method_name(s->router),
		       (unsigned)s->format < MRUN_FORMAT_COUNT ? mrun_format_names[s->format] : "?") < 0;
}

static int write_header(FILE *f, const autosave_record *r, size_t csv_len, uint64_t sum)
{
	const autosave_identity *id = &r->id;
	const autosave_settings *s = &r->s;
	int bad = fprintf(f, "%s\nmodel %s\nconfig %lld %lld %lld\ncalib %s\nsaved %lld\n", AUTOSAVE_MAGIC, id->model,
			  id->config_size, id->config_mtime_s, id->config_mtime_ns, r->calib, r->saved) < 0;
	bad |= write_settings(f, s);
	bad |= write_list(f, "groups", r->groups, NULL, r->p.n_blocks);
	bad |= write_list(f, "edited", NULL, r->edited, r->p.n_blocks);
	return bad | (fprintf(f, "plan %zu %016llx\n", csv_len, (unsigned long long)sum) < 0);
}

/* What the reader would refuse is not written: names it knows, G within 1..E, paths on one line. */
static ms_status check_record(const char *path, const autosave_record *r, ms_error *err)
{
	const autosave_settings *s = &r->s;
	if (strchr(r->id.model, '\n') || strchr(r->calib, '\n'))
		return ms_fail(err, MS_ERR_ARG, "%s: a path with a line break cannot be autosaved", path);
	if (!strcmp(grp_method_name(s->method), "?") || !strcmp(sim_base_name(s->base), "?") ||
	    !strcmp(merge_weighting_name(s->weighting), "?") || !strcmp(align_ref_name(s->align), "?") ||
	    !strcmp(cmp_rank_mode_name(s->rank_mode), "?") || s->rank_step < 0 ||
	    !strcmp(pipe_layout_name(s->layout), "?") || !strcmp(rfit_method_name(s->router), "?") ||
	    (unsigned)s->format >= MRUN_FORMAT_COUNT)
		return ms_fail(err, MS_ERR_ARG, "%s: a setting out of range", path);
	for (int b = 0; b < r->p.n_blocks; b++)
		if (r->groups[b] < 1 || r->groups[b] > r->p.n_experts || r->edited[b] > 1)
			return ms_fail(err, MS_ERR_ARG, "%s: block %d: G %d or its edited flag out of range", path, b,
				       r->groups[b]);
	return MS_OK;
}

/* The header and csv into tmp, synced, then tmp renamed over path and the directory synced (io/durable.h). */
static ms_status write_whole(const char *path, const char *tmp, const autosave_record *r, const char *csv,
			     size_t csv_len, ms_error *err)
{
	FILE *f = fopen(tmp, "w");
	if (!f)
		return ms_fail(err, MS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
	errno = 0;
	int bad = write_header(f, r, csv_len, autosave_fnv1a(AUTOSAVE_FNV_BASIS, csv, csv_len));
	bad |= fwrite(csv, 1, csv_len, f) != csv_len;
	ms_status st = MS_OK;
	if (bad) {
		int saved = errno;
		fclose(f);
		st = ms_fail(err, MS_ERR_IO, "%s: write failed: %s", tmp, saved ? strerror(saved) : "unknown error");
	} else {
		st = dur_fclose(f, tmp, err);
	}
	if (!st)
		st = dur_rename(tmp, path, NULL, err);
	if (st)
		remove(tmp);
	return st;
}

ms_status autosave_write(const char *path, const autosave_record *r, ms_error *err)
{
	ms_status st = check_record(path, r, err);
	if (st)
		return st;
	/* The CSV goes to memory first: its length and checksum head the file. */
	char *tmp = sibling(path, ".tmp");
	char *csv = NULL;
	size_t csv_len = 0;
	FILE *mem = tmp ? open_memstream(&csv, &csv_len) : NULL;
	if (!mem)
		st = ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	if (!st)
		st = plan_write_csv_stream(mem, path, &r->p, err);
	if (mem && fclose(mem) != 0 && !st)
		st = ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	if (!st)
		st = write_whole(path, tmp, r, csv, csv_len, err);
	free(csv);
	free(tmp);
	return st;
}

/* ---- reading ---- */

/* The header as it is read: the file in memory, the place, and where errors go. */
typedef struct {
	const char *path;
	char *buf;             /* [len + 1], NUL-terminated; header lines get their '\n' replaced by NUL */
	size_t len, pos;
	int line;              /* of the line last taken */
	ms_error *err;
} hdr;

static ms_status hdr_fail(hdr *h, ms_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static ms_status hdr_fail(hdr *h, ms_status code, const char *fmt, ...)
{
	char what[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return ms_fail(h->err, code, "%s: line %d: %s", h->path, h->line, what);
}

/* A value as a one-line message can show it: at most 40 bytes, anything but printable ASCII as '?'. */
static const char *shown(const char *s, char buf[48])
{
	size_t k = 0;
	for (; s[k] && k < 40; k++)
		buf[k] = s[k] >= ' ' && s[k] <= '~' ? s[k] : '?';
	if (s[k] && k == 40)
		buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
	buf[k] = '\0';
	return buf;
}

/* The next line, terminated in place. */
static ms_status take_line(hdr *h, char **line)
{
	h->line++;
	char *s = h->buf + h->pos;
	char *nl = memchr(s, '\n', h->len - h->pos);
	if (!nl)
		return hdr_fail(h, MS_ERR_IO, "the file ends inside the header (truncated)");
	if (memchr(s, '\0', (size_t)(nl - s)))
		return hdr_fail(h, MS_ERR_IO, "a NUL byte in the header");
	*nl = '\0';
	h->pos = (size_t)(nl - h->buf) + 1;
	*line = s;
	return MS_OK;
}

/* The next line, which must be "KEY VALUE" (or "KEY" for an empty value). */
static ms_status take_field(hdr *h, const char *key, const char **value)
{
	char *line, buf[48];
	ms_status st = take_line(h, &line);
	if (st)
		return st;
	const size_t k = strlen(key);
	if (strncmp(line, key, k) != 0 || (line[k] != ' ' && line[k] != '\0'))
		return hdr_fail(h, MS_ERR_IO, "expected '%s', found '%s'", key, shown(line, buf));
	*value = line[k] ? line + k + 1 : line + k;
	return MS_OK;
}

/* A decimal integer in [lo, hi] at *s, which moves past it; 0 or -1. */
static int parse_int(const char **s, long long lo, long long hi, long long *v)
{
	const char *p = *s;
	const int neg = *p == '-';
	p += neg;
	if (*p < '0' || *p > '9')
		return -1;
	long long x = 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (x > (LLONG_MAX - (*p - '0')) / 10)
			return -1;
		x = 10 * x + (*p - '0');
	}
	x = neg ? -x : x;
	if (x < lo || x > hi)
		return -1;
	*v = x;
	*s = p;
	return 0;
}

/* The n numbers of a "KEY N1 N2 ..." line's value s, each in [lo, hi]. */
static ms_status parse_list(hdr *h, const char *key, const char *s, long long *v, int n, long long lo, long long hi)
{
	for (int i = 0; i < n; i++) {
		if ((i > 0 && *s++ != ' ') || parse_int(&s, lo, hi, &v[i]) != 0 || (*s != ' ' && *s != '\0'))
			return hdr_fail(h, MS_ERR_IO, "%s: value %d is missing or not a whole number in %lld..%lld", key,
					i + 1, lo, hi);
	}
	if (*s)
		return hdr_fail(h, MS_ERR_IO, "%s: more than %d value%s", key, n, n == 1 ? "" : "s");
	return MS_OK;
}

static ms_status take_numbers(hdr *h, const char *key, long long *v, int n, long long lo, long long hi)
{
	const char *s;
	ms_status st = take_field(h, key, &s);
	return st ? st : parse_list(h, key, s, v, n, lo, hi);
}

static ms_status take_path(hdr *h, const char *key, char *out, size_t len)
{
	const char *v;
	ms_status st = take_field(h, key, &v);
	if (!st && strlen(v) >= len)
		st = hdr_fail(h, MS_ERR_IO, "%s: path too long", key);
	if (!st)
		strcpy(out, v);
	return st;
}

/* "KEY NAME", NAME one that parse (an analysis/ *_parse function) knows. */
static ms_status take_name(hdr *h, const char *key, int (*parse)(const char *), int *out)
{
	const char *v;
	char buf[48];
	ms_status st = take_field(h, key, &v);
	if (st)
		return st;
	if ((*out = parse(v)) < 0)
		return hdr_fail(h, MS_ERR_IO, "unknown %s '%s'", key, shown(v, buf));
	return MS_OK;
}

/* "KEY" and one number per block. The count is checked first: another count means another model. */
static ms_status take_blocks(hdr *h, const char *key, int n_blocks, long long lo, long long hi, long long *v)
{
	const char *s;
	ms_status st = take_field(h, key, &s);
	if (st)
		return st;
	int count = *s ? 1 : 0;
	for (const char *c = s; *c; c++)
		count += *c == ' ';
	if (count != n_blocks)
		return hdr_fail(h, MS_ERR_ARG, "%s: %d blocks, the model has %d: the autosave of another model", key, count,
				n_blocks);
	return parse_list(h, key, s, v, n_blocks, lo, hi);
}

static int format_parse(const char *name)
{
	for (int i = 0; i < MRUN_FORMAT_COUNT; i++)
		if (!strcmp(name, mrun_format_names[i]))
			return i;
	return -1;
}

/* A "KEY NAME" line that files from before it was added lack: *out keeps its default then. */
static ms_status take_optional_name(hdr *h, const char *key, int (*parse)(const char *), int *out)
{
	const size_t k = strlen(key);
	if (h->len - h->pos <= k || strncmp(h->buf + h->pos, key, k) != 0 || h->buf[h->pos + k] != ' ')
		return MS_OK;
	return take_name(h, key, parse, out);
}

static ms_status take_settings(hdr *h, autosave_settings *s)
{
	int k[5];
	long long step;
	ms_status st = take_name(h, "method", grp_method_parse, &k[0]);
	if (!st)
		st = take_name(h, "base", sim_base_parse, &k[1]);
	if (!st)
		st = take_name(h, "weighting", merge_weighting_parse, &k[2]);
	if (!st)
		st = take_name(h, "align", align_ref_parse, &k[3]);
	if (!st)
		st = take_name(h, "rank_mode", cmp_rank_mode_parse, &k[4]);
	if (!st)
		st = take_numbers(h, "rank_step", &step, 1, 0, 1000);
	int layout = PIPE_LAYOUT_COMPACT, router = RFIT_AUTO, format = MRUN_FORMAT_DENSE;  /* pipe_merge_defaults */
	if (!st)
		st = take_optional_name(h, "layout", pipe_layout_parse, &layout);
	if (!st)
		st = take_optional_name(h, "router", rfit_method_parse, &router);
	if (!st)
		st = take_optional_name(h, "format", format_parse, &format);
	if (st)
		return st;
	*s = (autosave_settings){(grp_method)k[0], (sim_base)k[1], (merge_weighting)k[2], (align_ref)k[3],
				 (cmp_rank_mode)k[4], (int)step, (pipe_layout)layout, (rfit_method)router,
				 (mrun_format)format};
	return MS_OK;
}

/* The lines before the settings: magic, model, config, calib, saved. */
static ms_status take_identity(hdr *h, autosave_record *r)
{
	char *line, buf[48];
	long long cfg[3];
	if (h->len == 0) {
		h->line = 1;
		return hdr_fail(h, MS_ERR_IO, "empty file");
	}
	if (strncmp(h->buf, "moescope-autosave ", 18) != 0) {
		h->line = 1;
		return hdr_fail(h, MS_ERR_IO, "not a moescope autosave");
	}
	ms_status st = take_line(h, &line);
	if (st)
		return st;
	if (strcmp(line, AUTOSAVE_MAGIC) != 0)
		return hdr_fail(h, MS_ERR_IO, "version '%s' is not one this moescope reads", shown(line + 18, buf));
	st = take_path(h, "model", r->id.model, sizeof r->id.model);
	if (!st)
		st = take_numbers(h, "config", cfg, 3, LLONG_MIN / 2, LLONG_MAX / 2);
	if (!st)
		st = take_path(h, "calib", r->calib, sizeof r->calib);
	if (!st)
		st = take_numbers(h, "saved", &r->saved, 1, LLONG_MIN / 2, LLONG_MAX / 2);
	if (st)
		return st;
	r->id.config_size = cfg[0];
	r->id.config_mtime_s = cfg[1];
	r->id.config_mtime_ns = cfg[2];
	return MS_OK;
}

/* The per-block lists into r (allocated here). */
static ms_status take_lists(hdr *h, autosave_record *r, int n_blocks, int n_experts)
{
	long long *v = malloc(((size_t)n_blocks + 1) * sizeof *v);
	r->groups = malloc(((size_t)n_blocks + 1) * sizeof *r->groups);
	r->edited = malloc((size_t)n_blocks + 1);
	if (!v || !r->groups || !r->edited) {
		free(v);
		return ms_fail(h->err, MS_ERR_NOMEM, "%s: out of memory", h->path);
	}
	ms_status st = take_blocks(h, "groups", n_blocks, 1, n_experts, v);
	for (int b = 0; !st && b < n_blocks; b++)
		r->groups[b] = (int)v[b];
	if (!st)
		st = take_blocks(h, "edited", n_blocks, 0, 1, v);
	for (int b = 0; !st && b < n_blocks; b++)
		r->edited[b] = (unsigned char)v[b];
	free(v);
	return st;
}

/* The "plan" line: what follows is exactly that many bytes with that checksum. */
static ms_status take_plan_line(hdr *h)
{
	const char *s;
	char buf[48];
	ms_status st = take_field(h, "plan", &s);
	if (st)
		return st;
	long long bytes;
	char *end;
	if (parse_int(&s, 0, AUTOSAVE_FILE_LIMIT, &bytes) != 0 || *s++ != ' ')
		return hdr_fail(h, MS_ERR_IO, "plan: expected its byte count and checksum");
	errno = 0;
	const unsigned long long sum = strtoull(s, &end, 16);
	if (errno || end != s + 16 || *end || *s == '-' || *s == '+' || *s == ' ')
		return hdr_fail(h, MS_ERR_IO, "plan: checksum '%s' is not 16 hex digits", shown(s, buf));
	const size_t left = h->len - h->pos;
	if ((unsigned long long)bytes != left)
		return hdr_fail(h, MS_ERR_IO, "plan: %lld bytes announced, %zu follow (truncated or damaged)", bytes, left);
	if (autosave_fnv1a(AUTOSAVE_FNV_BASIS, h->buf + h->pos, left) != sum)
		return hdr_fail(h, MS_ERR_IO, "plan: checksum does not match (the file is damaged)");
	return MS_OK;
}

/* Whether the header names the model being opened. */
static ms_status check_identity(const char *path, const autosave_identity *got, const autosave_identity *want,
				ms_error *err)
{
	if (strcmp(got->model, want->model) != 0)
		return ms_fail(err, MS_ERR_ARG, "%s: the autosave of %s, not of %s", path, got->model, want->model);
	if (got->config_size != want->config_size || got->config_mtime_s != want->config_mtime_s ||
	    got->config_mtime_ns != want->config_mtime_ns)
		return ms_fail(err, MS_ERR_ARG,
			       "%s: %s/config.json changed since the autosave (%lld bytes then, %lld now): the "
			       "autosave of another model",
			       path, want->model, got->config_size, want->config_size);
	return MS_OK;
}

/* The plan part, in place: its lines are counted from the one after the header, so a message points into the
 * autosave file itself. */
static ms_status read_plan_part(hdr *h, int n_blocks, int n_experts, const char *const *labels, plan *out)
{
	return plan_read_csv_buffer(h->path, h->line + 1, h->buf + h->pos, h->len - h->pos, n_blocks, n_experts,
				    labels, out, h->err);
}

static ms_status read_buffer(hdr *h, const autosave_identity *expect, int n_blocks, int n_experts,
			     const char *const *labels, autosave_record *out)
{
	ms_status st = take_identity(h, out);
	if (!st && expect)
		st = check_identity(h->path, &out->id, expect, h->err);
	if (!st)
		st = take_settings(h, &out->s);
	if (!st)
		st = take_lists(h, out, n_blocks, n_experts);
	if (!st)
		st = take_plan_line(h);
	if (!st)
		st = read_plan_part(h, n_blocks, n_experts, labels, &out->p);
	return st;
}

ms_status autosave_read(const char *path, const autosave_identity *expect, int n_blocks, int n_experts,
			const char *const *labels, autosave_record *out, ms_error *err)
{
	memset(out, 0, sizeof *out);
	if (n_blocks < 1 || n_experts < 1)
		return ms_fail(err, MS_ERR_ARG, "%s: no blocks or no experts", path);
	hdr h = {.path = path, .err = err};
	ms_status st = slurp(path, &h.buf, &h.len, err);
	if (!st)
		st = read_buffer(&h, expect, n_blocks, n_experts, labels, out);
	free(h.buf);
	if (st)
		autosave_record_free(out);
	return st;
}

void autosave_record_free(autosave_record *r)
{
	free(r->groups);
	free(r->edited);
	plan_free(&r->p);
	memset(r, 0, sizeof *r);
}

int autosave_remove(const char *path)
{
	if (remove(path) == 0 || errno == ENOENT)
		return 0;
	return -1;
}

void autosave_format_time(long long t, char *buf, size_t len)
{
	const time_t tt = (time_t)t;
	struct tm tm;
	if (!localtime_r(&tt, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, len, "%lld (Unix time)", t);
}

/* ---- the settings beside an exported plan ---- */

#define SETTINGS_MAGIC "moescope-settings 1"

ms_status autosave_settings_path(const char *csv_path, char *buf, size_t len, ms_error *err)
{
	int n = snprintf(buf, len, "%s.settings", csv_path);
	if (n < 0 || (size_t)n >= len)
		return ms_fail(err, MS_ERR_ARG, "%s: path too long", csv_path);
	return MS_OK;
}

ms_status autosave_settings_write(const char *path, const autosave_settings *s, ms_error *err)
{
	char file[AUTOSAVE_PATH_MAX + 16];
	ms_status st = autosave_settings_path(path, file, sizeof file, err);
	if (st)
		return st;
	FILE *f = fopen(file, "w");
	if (!f)
		return ms_fail(err, MS_ERR_IO, "%s: cannot create: %s", file, strerror(errno));
	int bad = fprintf(f, "%s\n", SETTINGS_MAGIC) < 0;
	bad |= write_settings(f, s);
	bad |= ferror(f);
	if (fclose(f) != 0 || bad) {
		remove(file);
		return ms_fail(err, MS_ERR_IO, "%s: cannot write: %s", file, strerror(errno));
	}
	return MS_OK;
}

ms_status autosave_settings_read(const char *path, autosave_settings *s, int *found, ms_error *err)
{
	char file[AUTOSAVE_PATH_MAX + 16];
	*found = 0;
	ms_status st = autosave_settings_path(path, file, sizeof file, err);
	if (st)
		return st;
	struct stat sb;
	if (stat(file, &sb) != 0 && errno == ENOENT)
		return MS_OK;
	hdr h = {.path = file, .err = err};
	st = slurp(file, &h.buf, &h.len, err);
	char *line;
	if (!st)
		st = take_line(&h, &line);
	if (!st && strcmp(line, SETTINGS_MAGIC) != 0)
		st = hdr_fail(&h, MS_ERR_IO, "not a moescope settings file (expected '%s')", SETTINGS_MAGIC);
	if (!st)
		st = take_settings(&h, s);
	if (!st && h.pos != h.len)
		st = hdr_fail(&h, MS_ERR_IO, "unexpected text after the settings");
	free(h.buf);
	*found = st == MS_OK;
	return st;
}

/* ---- one instance per model ---- */

static int lock_name(const char *path, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s.lock", path);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int autosave_lock(const char *path, long *holder)
{
	char name[AUTOSAVE_PATH_MAX + 8];
	*holder = 0;
	if (lock_name(path, name, sizeof name) != 0) {
		errno = ENAMETOOLONG;
		return -2;
	}
	for (int tries = 0; tries < 8; tries++) {
		int fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return -2;
		if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
			const int busy = errno == EWOULDBLOCK;
			char text[32] = "";
			ssize_t n = busy ? pread(fd, text, sizeof text - 1, 0) : -1;
			if (n > 0) {
				text[n] = '\0';
				*holder = strtol(text, NULL, 10);
			}
			close(fd);
			return busy ? -1 : -2;
		}
		/* the holder may have unlinked the file between our open and flock: then lock the new one */
		struct stat at_fd, at_path;
		if (fstat(fd, &at_fd) == 0 && stat(name, &at_path) == 0 && at_fd.st_ino == at_path.st_ino &&
		    at_fd.st_dev == at_path.st_dev) {
			char text[32];
			int n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
			if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) {
				/* the pid is only for the other instance's message */
			}
			return fd;
		}
		close(fd);
	}
	errno = EAGAIN;
	return -2;
}

void autosave_unlock(const char *path, int fd)
{
	char name[AUTOSAVE_PATH_MAX + 8];
	if (fd < 0)
		return;
	if (lock_name(path, name, sizeof name) == 0)
		unlink(name);  /* while still holding it, so nobody takes a lock on a file about to go */
	close(fd);
}
