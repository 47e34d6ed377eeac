/* The grouping plan CSV (docs/design.md §4.1): reading with libcsv in strict RFC 4180 mode, writing by hand.
 *
 * libcsv reports fields and records through callbacks but not where they were, so the reader feeds it one byte
 * at a time and keeps the line itself: the line of a field is the line of its first byte, which is what a user
 * looks for in an editor (a quoted field may run over several lines). Records are checked as they end, so the
 * first problem in reading order is the one reported; what can only be judged at the end of the file (missing
 * experts, group numbering, a group without a dominant) is reported after. */
#include "io/plan.h"

#include <csv.h>
#include <ctype.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/durable.h"

/* A plan has one short row per expert: 256 blocks of 256 experts take about 6 MiB. Anything far larger is not a
 * plan, and refusing it early keeps a wrong path from being read whole. */
#define PLAN_FILE_LIMIT (64LL << 20)
/* Labels are shorter than 32 bytes; the longest number the writer prints is -DBL_MAX with 10 decimals, 321 bytes.
 * The limit keeps libcsv's field buffer small without refusing anything plan_write_csv can produce. */
#define PLAN_FIELD_LIMIT 512
#define PLAN_MAX_DIM 65536
#define PLAN_MAX_CELLS (1LL << 24)

enum {
	COL_LAYER, COL_EXPERT, COL_GROUP, COL_DOMINANT, COL_FREQUENCY,
	COL_SIMILARITY, COL_SR_GATE, COL_SR_UP, COL_SR_DOWN,
	PLAN_NCOLS
};
#define PLAN_NREQUIRED 5

static const char *const col_names[PLAN_NCOLS] = {
	"layer", "expert", "group", "dominant", "frequency",
	"similarity_to_dominant", "stable_rank_gate", "stable_rank_up", "stable_rank_down",
};

/* ---- the plan in memory ---- */

static int label_ok(const char *s)
{
	return s && s[0] && strlen(s) < sizeof((plan *)0)->labels[0];
}

/* Zeroed arrays for n_blocks x n_experts; similarity and stable ranks are left for the caller to fill. */
static ms_status plan_alloc(plan *p, int n_blocks, int n_experts)
{
	memset(p, 0, sizeof *p);
	if (n_blocks < 0 || n_experts < 1 || n_blocks > PLAN_MAX_DIM || n_experts > PLAN_MAX_DIM ||
	    (long long)n_blocks * n_experts > PLAN_MAX_CELLS)
		return MS_ERR_ARG;
	const size_t n = (size_t)n_blocks * (size_t)n_experts + 1; /* + 1: never a zero-byte allocation */
	p->labels = calloc((size_t)n_blocks + 1, sizeof *p->labels);
	p->group = calloc(n, sizeof *p->group);
	p->dominant = calloc(n, sizeof *p->dominant);
	p->frequency = calloc(n, sizeof *p->frequency);
	p->similarity = calloc(n, sizeof *p->similarity);
	p->stable_rank = calloc(3 * n, sizeof *p->stable_rank);
	if (!p->labels || !p->group || !p->dominant || !p->frequency || !p->similarity || !p->stable_rank) {
		plan_free(p);
		return MS_ERR_NOMEM;
	}
	p->n_blocks = n_blocks;
	p->n_experts = n_experts;
	return MS_OK;
}

/* labels NULL names the blocks "0", "1", ... */
static ms_status plan_set_labels(plan *p, const char *const *labels)
{
	for (int b = 0; b < p->n_blocks; b++) {
		if (!labels) {
			snprintf(p->labels[b], sizeof p->labels[b], "%d", b);
			continue;
		}
		if (!label_ok(labels[b]))
			return MS_ERR_ARG;
		strcpy(p->labels[b], labels[b]);
	}
	return MS_OK;
}

int plan_init(plan *p, int n_blocks, int n_experts, const char *const *labels)
{
	if (!p)
		return MS_ERR_ARG;
	ms_status st = plan_alloc(p, n_blocks, n_experts);
	if (!st)
		st = plan_set_labels(p, labels);
	if (st) {
		plan_free(p);
		return st;
	}
	const size_t n = (size_t)n_blocks * (size_t)n_experts;
	for (size_t i = 0; i < n; i++) {
		p->group[i] = (int)(i % (size_t)n_experts);
		p->dominant[i] = 1;
		p->frequency[i] = 0.0;   /* unknown until routing statistics fill it */
		p->similarity[i] = 1.0;  /* each expert is its own dominant */
		p->stable_rank[3 * i] = p->stable_rank[3 * i + 1] = p->stable_rank[3 * i + 2] = NAN;
	}
	return MS_OK;
}

void plan_free(plan *p)
{
	if (!p)
		return;
	free(p->labels);
	free(p->group);
	free(p->dominant);
	free(p->frequency);
	free(p->similarity);
	free(p->stable_rank);
	memset(p, 0, sizeof *p);
}

int plan_copy(plan *dst, const plan *src)
{
	if (!dst || !src || dst == src)
		return MS_ERR_ARG;
	ms_status st = plan_alloc(dst, src->n_blocks, src->n_experts);
	if (st)
		return st;
	const size_t n = (size_t)src->n_blocks * (size_t)src->n_experts;
	memcpy(dst->labels, src->labels, (size_t)src->n_blocks * sizeof *src->labels);
	memcpy(dst->group, src->group, n * sizeof *src->group);
	memcpy(dst->dominant, src->dominant, n * sizeof *src->dominant);
	memcpy(dst->frequency, src->frequency, n * sizeof *src->frequency);
	memcpy(dst->similarity, src->similarity, n * sizeof *src->similarity);
	memcpy(dst->stable_rank, src->stable_rank, 3 * n * sizeof *src->stable_rank);
	return MS_OK;
}

int plan_groups(const plan *p, int b)
{
	if (!p || b < 0 || b >= p->n_blocks)
		return 0;
	int max = -1;
	for (int e = 0; e < p->n_experts; e++)
		if (p->group[(size_t)b * (size_t)p->n_experts + (size_t)e] > max)
			max = p->group[(size_t)b * (size_t)p->n_experts + (size_t)e];
	return max + 1;
}

/* ---- invariants ---- */

/* Members and dominants of every group of one block: count[g], ndom[g] for g < E. Groups must already be in
 * -1..E-1. */
static void count_groups(const int *group, const unsigned char *dominant, int E, int *count, int *ndom)
{
	memset(count, 0, (size_t)E * sizeof *count);
	memset(ndom, 0, (size_t)E * sizeof *ndom);
	for (int e = 0; e < E; e++) {
		if (group[e] < 0)
			continue;
		count[group[e]]++;
		ndom[group[e]] += dominant[e] != 0;
	}
}

/* The first group below G that has no member (a hole in 0..G-1), or -1. */
static int first_hole(const int *count, int E)
{
	int G = E;
	while (G > 0 && !count[G - 1])
		G--;
	for (int g = 0; g < G; g++)
		if (!count[g])
			return g;
	return -1;
}

static int value_ok(double v)
{
	return isnan(v) || isfinite(v);
}

static ms_status validate_labels(const plan *p, ms_error *err)
{
	for (int b = 0; b < p->n_blocks; b++) {
		if (!memchr(p->labels[b], '\0', sizeof p->labels[b]) || !p->labels[b][0])
			return ms_fail(err, MS_ERR_PLAN_LAYER, "block %d: empty or unterminated label", b);
		for (int c = 0; c < b; c++)
			if (!strcmp(p->labels[b], p->labels[c]))
				return ms_fail(err, MS_ERR_PLAN_LAYER, "layer '%s' appears twice (blocks %d and %d)",
					       p->labels[b], c, b);
	}
	return MS_OK;
}

/* Per expert: group in range, dominant 0 or 1 and not on a dropped expert, numbers the CSV can carry. */
static ms_status validate_experts(const plan *p, int b, ms_error *err)
{
	const int E = p->n_experts;
	const char *lab = p->labels[b];
	for (int e = 0; e < E; e++) {
		const size_t i = (size_t)b * (size_t)E + (size_t)e;
		if (p->group[i] < -1 || p->group[i] >= E)
			return ms_fail(err, MS_ERR_PLAN_GROUP, "layer '%s': expert %d has group %d, outside -1..%d", lab,
				       e, p->group[i], E - 1);
		if (p->dominant[i] > 1)
			return ms_fail(err, MS_ERR_PLAN_DOMINANT, "layer '%s': expert %d: dominant is %d, not 0 or 1",
				       lab, e, p->dominant[i]);
		if (p->group[i] < 0 && p->dominant[i])
			return ms_fail(err, MS_ERR_PLAN_DOMINANT,
				       "layer '%s': expert %d is dropped (group -1) but marked dominant", lab, e);
		if (!(p->frequency[i] >= 0.0 && p->frequency[i] <= 1.0))
			return ms_fail(err, MS_ERR_PLAN_NUMBER, "layer '%s': expert %d: frequency %g outside [0, 1]",
				       lab, e, p->frequency[i]);
		if (!value_ok(p->similarity[i]) || !value_ok(p->stable_rank[3 * i]) ||
		    !value_ok(p->stable_rank[3 * i + 1]) || !value_ok(p->stable_rank[3 * i + 2]))
			return ms_fail(err, MS_ERR_PLAN_NUMBER,
				       "layer '%s': expert %d: infinite similarity or stable rank", lab, e);
	}
	return MS_OK;
}

static ms_status validate_groups(const plan *p, int b, int *count, int *ndom, ms_error *err)
{
	const int E = p->n_experts;
	const size_t base = (size_t)b * (size_t)E;
	count_groups(p->group + base, p->dominant + base, E, count, ndom);
	const int hole = first_hole(count, E);
	if (hole >= 0)
		return ms_fail(err, MS_ERR_PLAN_GROUP,
			       "layer '%s': group %d has no member but a higher group has (groups are numbered 0..G-1)",
			       p->labels[b], hole);
	for (int g = 0; g < E && count[g]; g++)
		if (ndom[g] != 1)
			return ms_fail(err, MS_ERR_PLAN_DOMINANT, "layer '%s': group %d has %d dominant experts, not 1",
				       p->labels[b], g, ndom[g]);
	return MS_OK;
}

ms_status plan_validate(const plan *p, ms_error *err)
{
	if (!p || p->n_blocks < 0 || p->n_experts < 1 || (p->n_blocks > 0 && (!p->labels || !p->group ||
	    !p->dominant || !p->frequency || !p->similarity || !p->stable_rank)))
		return ms_fail(err, MS_ERR_ARG, "plan is empty or not allocated");
	ms_status st = validate_labels(p, err);
	int *count = malloc(2 * (size_t)p->n_experts * sizeof *count); /* [2, E]: members, dominants */
	if (!st && !count)
		st = ms_fail(err, MS_ERR_NOMEM, NULL);
	for (int b = 0; !st && b < p->n_blocks; b++) {
		st = validate_experts(p, b, err);
		if (!st)
			st = validate_groups(p, b, count, count + p->n_experts, err);
	}
	free(count);
	return st;
}

/* ---- numbers in the C locale ----
 * The interface may have called setlocale(LC_ALL, ""), after which strtod and printf would use the user's
 * decimal comma. The plan is a file format: its numbers are always written and read with a point. */

typedef struct {
	locale_t c;
	locale_t old;
} c_numbers;

static void c_numbers_begin(c_numbers *cn)
{
	cn->c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
	if (cn->c)
		cn->old = uselocale(cn->c);
}

static void c_numbers_end(c_numbers *cn)
{
	if (!cn->c)
		return;
	uselocale(cn->old);
	freelocale(cn->c);
}

/* Whole field an integer: optional '-', digits, nothing else (no spaces, no '+', no embedded NUL). */
static int parse_long(const char *s, size_t n, long *v)
{
	size_t i = s[0] == '-';
	if (n == 0 || n > 20 || strlen(s) != n || i == n)
		return 0;
	for (; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return 0;
	errno = 0;
	*v = strtol(s, NULL, 10);
	return errno == 0;
}

/* Whole field a finite decimal number ("0.25", "1e-3"); no hex, "inf", "nan" or spaces. */
static int parse_real(const char *s, size_t n, double *v)
{
	if (n == 0 || strlen(s) != n || strspn(s, "0123456789+-.eE") != n)
		return 0;
	char *end;
	*v = strtod(s, &end);
	return end == s + n && isfinite(*v);
}

/* ---- reading ---- */

typedef struct {
	const char *path;             /* the file, or the name a buffer's messages give */
	long first_line;              /* line number of the first byte (1 unless the plan is part of a larger file) */
	plan *p;
	ms_error *err;
	ms_status st;                 /* the first problem; nothing is checked after it */
	long line;                    /* line of the byte being fed */
	int prev_cr;                  /* the previous byte was CR (CR LF is one line break) */
	int need_start, at_row_start; /* the next byte may begin a field; after a record, CR and LF do not */
	long start_line;              /* line of the first byte of the field being parsed */
	int nrec;                     /* records ended so far, the header included */
	int ncols;                    /* columns of the header */
	int colid[PLAN_NCOLS];        /* which column each header position holds */
	int nf;                       /* fields of the record so far */
	char field[PLAN_NCOLS + 1][PLAN_FIELD_LIMIT + 1]; /* + 1 field: one too many is seen, then reported */
	size_t flen[PLAN_NCOLS + 1];
	long fline[PLAN_NCOLS + 1];
	long *row_line;               /* [n_blocks * n_experts] line listing each expert; 0 until listed */
	long *dom_line;               /* [n_blocks * n_experts] line of the dominant of group g of block b; 0 if none */
} reader;

static ms_status rd_fail(reader *r, ms_status code, long line, int col, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static ms_status rd_fail(reader *r, ms_status code, long line, int col, const char *fmt, ...)
{
	char what[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	r->st = ms_fail(r->err, code, "%s: line %ld, column %d: %s", r->path, line, col, what);
	return r->st;
}

/* A field as it can be shown in a one-line message: at most 40 bytes, anything but printable ASCII as '?'. */
static const char *shown(const char *s, size_t n, char buf[48])
{
	size_t k = 0;
	for (; k < n && k < 40; k++)
		buf[k] = s[k] >= 0x20 && s[k] < 0x7f ? s[k] : '?';
	if (k < n) {
		memcpy(buf + k, "...", 3);
		k += 3;
	}
	buf[k] = '\0';
	return buf;
}

static int field_is(const reader *r, int i, const char *name)
{
	return r->flen[i] == strlen(name) && !memcmp(r->field[i], name, r->flen[i]);
}

static int column_id(const reader *r, int i)
{
	for (int k = 0; k < PLAN_NCOLS; k++)
		if (field_is(r, i, col_names[k]))
			return k;
	return -1;
}

/* Exactly the five required columns in order, then any of the optional ones, in their order. */
static void check_header(reader *r)
{
	char b[48];
	for (int i = 0; i < PLAN_NREQUIRED; i++) {
		if (i >= r->nf) {
			rd_fail(r, MS_ERR_PLAN_HEADER, r->fline[r->nf - 1], i + 1,
				"header lacks column '%s' (it must begin layer,expert,group,dominant,frequency)",
				col_names[i]);
			return;
		}
		if (!field_is(r, i, col_names[i])) {
			rd_fail(r, MS_ERR_PLAN_HEADER, r->fline[i], i + 1, "header column '%s' should be '%s'",
				shown(r->field[i], r->flen[i], b), col_names[i]);
			return;
		}
		r->colid[i] = i;
	}
	for (int i = PLAN_NREQUIRED, next = PLAN_NREQUIRED; i < r->nf; i++) {
		const int k = column_id(r, i);
		if (k < 0) {
			rd_fail(r, MS_ERR_PLAN_HEADER, r->fline[i], i + 1, "unknown column '%s'",
				shown(r->field[i], r->flen[i], b));
			return;
		}
		if (k < next) {
			rd_fail(r, MS_ERR_PLAN_HEADER, r->fline[i], i + 1,
				"column '%s' repeated or out of order (the order is %s,%s,%s,%s)", col_names[k],
				col_names[5], col_names[6], col_names[7], col_names[8]);
			return;
		}
		r->colid[i] = k;
		next = k + 1;
	}
	r->ncols = r->nf;
}

static int find_block(const reader *r)
{
	for (int b = 0; b < r->p->n_blocks; b++)
		if (field_is(r, COL_LAYER, r->p->labels[b]))
			return b;
	return -1;
}

static ms_status not_a_number(reader *r, int i)
{
	char b[48];
	return rd_fail(r, MS_ERR_PLAN_NUMBER, r->fline[i], i + 1, "%s '%s' is not a number", col_names[r->colid[i]],
		       shown(r->field[i], r->flen[i], b));
}

static ms_status read_int(reader *r, int i, long *v)
{
	return parse_long(r->field[i], r->flen[i], v) ? MS_OK : not_a_number(r, i);
}

/* layer and expert: which slot the row fills. */
static ms_status read_slot(reader *r, int *bp, long *ep)
{
	char b[48];
	const plan *p = r->p;
	const int blk = find_block(r);
	if (blk < 0 && p->n_blocks > 0)
		return rd_fail(r, MS_ERR_PLAN_LAYER, r->fline[0], 1,
			       "layer '%s' is not one of the model's %d MoE blocks ('%s' .. '%s')",
			       shown(r->field[0], r->flen[0], b), p->n_blocks, p->labels[0], p->labels[p->n_blocks - 1]);
	if (blk < 0)
		return rd_fail(r, MS_ERR_PLAN_LAYER, r->fline[0], 1, "layer '%s': the model has no MoE block",
			       shown(r->field[0], r->flen[0], b));
	if (read_int(r, COL_EXPERT, ep))
		return r->st;
	if (*ep < 0 || *ep >= p->n_experts)
		return rd_fail(r, MS_ERR_PLAN_EXPERT, r->fline[1], 2, "expert %ld out of range 0..%d", *ep,
			       p->n_experts - 1);
	const long seen = r->row_line[(size_t)blk * (size_t)p->n_experts + (size_t)*ep];
	if (seen)
		return rd_fail(r, MS_ERR_PLAN_DUPLICATE, r->fline[1], 2, "layer '%s' expert %ld already listed on line %ld",
			       p->labels[blk], *ep, seen);
	*bp = blk;
	return MS_OK;
}

/* group and dominant, and whether the group already has its dominant. */
static ms_status read_membership(reader *r, int blk, long e, long *g, long *d)
{
	const int E = r->p->n_experts;
	char b[48];
	if (read_int(r, COL_GROUP, g))
		return r->st;
	if (*g < -1 || *g >= E)
		return rd_fail(r, MS_ERR_PLAN_GROUP, r->fline[2], 3, "group %ld out of range -1..%d", *g, E - 1);
	if (read_int(r, COL_DOMINANT, d))
		return r->st;
	if (*d != 0 && *d != 1)
		return rd_fail(r, MS_ERR_PLAN_NUMBER, r->fline[3], 4, "dominant '%s' must be 0 or 1",
			       shown(r->field[3], r->flen[3], b));
	if (*d && *g < 0)
		return rd_fail(r, MS_ERR_PLAN_DOMINANT, r->fline[3], 4, "expert %ld is dropped (group -1) but marked dominant",
			       e);
	const long prev = *g >= 0 ? r->dom_line[(size_t)blk * (size_t)E + (size_t)*g] : 0;
	if (*d && prev)
		return rd_fail(r, MS_ERR_PLAN_DOMINANT, r->fline[3], 4,
			       "group %ld of layer '%s' already has a dominant expert (line %ld)", *g, r->p->labels[blk],
			       prev);
	return MS_OK;
}

/* frequency, then the optional columns; an empty optional field is NAN. */
static ms_status read_values(reader *r, size_t slot)
{
	char b[48];
	plan *p = r->p;
	if (!parse_real(r->field[4], r->flen[4], &p->frequency[slot]))
		return not_a_number(r, COL_FREQUENCY);
	if (p->frequency[slot] < 0.0 || p->frequency[slot] > 1.0)
		return rd_fail(r, MS_ERR_PLAN_NUMBER, r->fline[4], 5, "frequency %s outside [0, 1]",
			       shown(r->field[4], r->flen[4], b));
	for (int i = PLAN_NREQUIRED; i < r->ncols; i++) {
		double v = NAN;
		if (r->flen[i] && !parse_real(r->field[i], r->flen[i], &v))
			return not_a_number(r, i);
		if (r->colid[i] == COL_SIMILARITY)
			p->similarity[slot] = v;
		else
			p->stable_rank[3 * slot + (size_t)(r->colid[i] - COL_SR_GATE)] = v;
	}
	return MS_OK;
}

static void check_row(reader *r)
{
	if (r->nf != r->ncols) {
		const int col = r->nf < r->ncols ? r->nf + 1 : r->ncols + 1;
		rd_fail(r, MS_ERR_PLAN_SYNTAX, r->fline[r->nf - 1], col,
			"row has %s fields than the header's %d", r->nf < r->ncols ? "fewer" : "more", r->ncols);
		return;
	}
	int blk = 0;
	long e = 0, g = 0, d = 0;
	if (read_slot(r, &blk, &e) || read_membership(r, blk, e, &g, &d))
		return;
	const size_t slot = (size_t)blk * (size_t)r->p->n_experts + (size_t)e;
	if (read_values(r, slot))
		return;
	r->p->group[slot] = (int)g;
	r->p->dominant[slot] = (unsigned char)d;
	r->row_line[slot] = r->fline[0];
	if (d)
		r->dom_line[(size_t)blk * (size_t)r->p->n_experts + (size_t)g] = r->fline[3];
}

static void end_record(reader *r)
{
	if (r->nrec++ == 0)
		check_header(r);
	else
		check_row(r);
	r->nf = 0;
}

/* libcsv callback: a field ended. The header may have at most PLAN_NCOLS fields and a row as many as the header;
 * one more ends the record early so that it is reported at once. */
static void on_field(void *s, size_t len, void *data)
{
	reader *r = data;
	if (r->st)
		return;
	r->need_start = 1;
	if (len > PLAN_FIELD_LIMIT) {
		rd_fail(r, MS_ERR_PLAN_SYNTAX, r->start_line, r->nf + 1, "field longer than %d bytes", PLAN_FIELD_LIMIT);
		return;
	}
	if (len)
		memcpy(r->field[r->nf], s, len);
	r->field[r->nf][len] = '\0';
	r->flen[r->nf] = len;
	r->fline[r->nf] = r->start_line;
	r->nf++;
	if (r->nf == (r->nrec ? r->ncols : PLAN_NCOLS) + 1)
		end_record(r);
}

/* libcsv callback: a record ended. */
static void on_record(int c, void *data)
{
	reader *r = data;
	(void)c;
	if (r->st)
		return;
	end_record(r);
	r->need_start = 1;
	r->at_row_start = 1;
}

static void parse_failed(reader *r, struct csv_parser *cp)
{
	if (csv_error(cp) == CSV_EPARSE)
		rd_fail(r, MS_ERR_PLAN_SYNTAX, r->line, r->nf + 1,
			"stray '\"': a quoted field must be quoted whole, and a quote inside it is written twice");
	else
		r->st = ms_fail(r->err, MS_ERR_NOMEM, "%s: out of memory while reading", r->path);
}

static void feed_byte(reader *r, struct csv_parser *cp, unsigned char c)
{
	if (r->need_start && !(r->at_row_start && (c == '\r' || c == '\n'))) {
		r->start_line = r->line;
		r->need_start = r->at_row_start = 0;
	}
	if (csv_parse(cp, &c, 1, on_field, on_record, r) != 1 && !r->st)
		parse_failed(r, cp);
	/* libcsv grows its buffer while a field lasts; a field far over the limit is refused before it ends. */
	if (!r->st && csv_get_buffer_size(cp) > PLAN_FIELD_LIMIT + 512)
		rd_fail(r, MS_ERR_PLAN_SYNTAX, r->start_line, r->nf + 1, "field longer than %d bytes", PLAN_FIELD_LIMIT);
	if (c == '\r' || (c == '\n' && !r->prev_cr))
		r->line++;
	r->prev_cr = c == '\r';
}

static ms_status check_size(reader *r, FILE *f)
{
	struct stat sb;
	if (fstat(fileno(f), &sb) != 0)
		return MS_OK; /* reading will tell */
	if (S_ISDIR(sb.st_mode))
		return r->st = ms_fail(r->err, MS_ERR_IO, "%s: is a directory, not a plan CSV", r->path);
	if (S_ISREG(sb.st_mode) && sb.st_size > PLAN_FILE_LIMIT)
		return r->st = ms_fail(r->err, MS_ERR_PLAN_SYNTAX, "%s: %lld bytes, over the %lld-byte limit for a plan",
				       r->path, (long long)sb.st_size, PLAN_FILE_LIMIT);
	return MS_OK;
}

/* Feeds the next n bytes through libcsv; *total counts the bytes fed before. A UTF-8 byte order mark at the very
 * start (spreadsheets write one) is skipped. */
static void feed_chunk(reader *r, struct csv_parser *cp, const unsigned char *buf, size_t n, long long *total)
{
	size_t i = *total == 0 && n >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3) ? 3 : 0;
	*total += (long long)n;
	if (*total > PLAN_FILE_LIMIT) {
		r->st = ms_fail(r->err, MS_ERR_PLAN_SYNTAX, "%s: over the %lld-byte limit for a plan", r->path,
				PLAN_FILE_LIMIT);
		return;
	}
	for (; i < n && !r->st; i++)
		feed_byte(r, cp, buf[i]);
}

static void feed_file(reader *r, FILE *f, struct csv_parser *cp)
{
	unsigned char buf[65536];
	long long total = 0;
	size_t n;
	while (!r->st && (n = fread(buf, 1, sizeof buf, f)) > 0)
		feed_chunk(r, cp, buf, n, &total);
	if (!r->st && ferror(f))
		r->st = ms_fail(r->err, MS_ERR_IO, "%s: read failed: %s", r->path, strerror(errno));
}

static void finish_parse(reader *r, struct csv_parser *cp)
{
	if (r->need_start)
		r->start_line = r->line; /* an empty last field after a final comma */
	if (csv_fini(cp, on_field, on_record, r) != 0 && !r->st)
		rd_fail(r, MS_ERR_PLAN_SYNTAX, r->start_line, r->nf + 1, "quoted field never closed");
	if (!r->st && r->nrec == 0)
		rd_fail(r, MS_ERR_PLAN_HEADER, r->first_line, 1, "empty file: expected the header row %s,%s,%s,%s,%s", col_names[0],
			col_names[1], col_names[2], col_names[3], col_names[4]);
}

/* libcsv trims spaces and tabs around unquoted fields unless told that nothing is a space: a plan field must be
 * exactly its value, so " 3" is reported rather than silently read as 3. */
static int no_space(unsigned char c)
{
	(void)c;
	return 0;
}

/* Parses the file f or, when f is NULL, the bytes buf [len]. */
static ms_status parse_source(reader *r, FILE *f, const unsigned char *buf, size_t len)
{
	struct csv_parser cp;
	if (f && check_size(r, f))
		return r->st;
	if (csv_init(&cp, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0)
		return r->st = ms_fail(r->err, MS_ERR_NOMEM, NULL);
	csv_set_space_func(&cp, no_space);
	long long total = 0;
	if (f)
		feed_file(r, f, &cp);
	else
		feed_chunk(r, &cp, buf, len, &total);
	if (!r->st)
		finish_parse(r, &cp);
	csv_free(&cp);
	return r->st;
}

/* The line of the first row of block blk in group g, or (above) in any group above g. */
static long first_row(const reader *r, int blk, int g, int above)
{
	const int E = r->p->n_experts;
	const size_t base = (size_t)blk * (size_t)E;
	long first = 0;
	for (int e = 0; e < E; e++) {
		const int ge = r->p->group[base + (size_t)e];
		const long line = r->row_line[base + (size_t)e];
		if ((above ? ge > g : ge == g) && (!first || line < first))
			first = line;
	}
	return first;
}

/* What only the whole file shows, block by block: every expert listed, groups 0..G-1, a dominant in each. */
static ms_status check_block(reader *r, int blk, int *count, int *ndom)
{
	const plan *p = r->p;
	const int E = p->n_experts;
	const size_t base = (size_t)blk * (size_t)E;
	for (int e = 0; e < E; e++)
		if (!r->row_line[base + (size_t)e])
			return rd_fail(r, MS_ERR_PLAN_MISSING, r->line, 1, "end of file: layer '%s' has no row for expert %d",
				       p->labels[blk], e);
	count_groups(p->group + base, p->dominant + base, E, count, ndom);
	const int hole = first_hole(count, E);
	if (hole >= 0)
		return rd_fail(r, MS_ERR_PLAN_GROUP, first_row(r, blk, hole, 1), 3,
			       "layer '%s' has no group %d but uses higher ones (groups are numbered 0..G-1)",
			       p->labels[blk], hole);
	for (int g = 0; g < E && count[g]; g++)
		if (!ndom[g])
			return rd_fail(r, MS_ERR_PLAN_DOMINANT, first_row(r, blk, g, 0), 4,
				       "group %d of layer '%s' has no dominant expert", g, p->labels[blk]);
	return MS_OK;
}

static ms_status check_complete(reader *r)
{
	int *count = malloc(2 * (size_t)r->p->n_experts * sizeof *count); /* [2, E]: members, dominants */
	if (!count)
		return r->st = ms_fail(r->err, MS_ERR_NOMEM, NULL);
	for (int b = 0; !r->st && b < r->p->n_blocks; b++)
		check_block(r, b, count, count + r->p->n_experts);
	free(count);
	return r->st;
}

static ms_status read_prepare(reader *r, int n_blocks, int n_experts, const char *const *labels)
{
	ms_status st = plan_alloc(r->p, n_blocks, n_experts);
	if (!st)
		st = plan_set_labels(r->p, labels);
	if (st)
		return r->st = ms_fail(r->err, st, "%s: %s", r->path,
				       st == MS_ERR_NOMEM ? "out of memory" : "invalid block count, expert count or label");
	const size_t n = (size_t)n_blocks * (size_t)n_experts;
	for (size_t i = 0; i < n; i++)
		r->p->similarity[i] = r->p->stable_rank[3 * i] = r->p->stable_rank[3 * i + 1] =
			r->p->stable_rank[3 * i + 2] = NAN;
	r->row_line = calloc(n + 1, sizeof *r->row_line);
	r->dom_line = calloc(n + 1, sizeof *r->dom_line);
	if (!r->row_line || !r->dom_line)
		return r->st = ms_fail(r->err, MS_ERR_NOMEM, "%s: out of memory", r->path);
	return MS_OK;
}

/* The one reader behind both entry points: the file called name when from_file, else buf [len] under that name. */
static ms_status read_plan(const char *name, long first_line, int from_file, const char *buf, size_t len,
			   int n_blocks, int n_experts, const char *const *labels, plan *out, ms_error *err)
{
	reader *r = calloc(1, sizeof *r); /* ~3 KB of field buffers: off the stack of a worker thread */
	if (!r)
		return ms_fail(err, MS_ERR_NOMEM, NULL);
	*r = (reader){ .path = name, .first_line = first_line, .p = out, .err = err, .line = first_line,
		       .need_start = 1, .at_row_start = 1 };
	c_numbers cn;
	c_numbers_begin(&cn);
	if (!read_prepare(r, n_blocks, n_experts, labels)) {
		FILE *f = NULL;
		if (from_file && !(f = fopen(name, "rb")))
			r->st = ms_fail(err, MS_ERR_IO, "%s: cannot open: %s", name, strerror(errno));
		else if (!parse_source(r, f, (const unsigned char *)buf, len))
			check_complete(r);
		if (f)
			fclose(f);
	}
	c_numbers_end(&cn);
	const ms_status st = r->st;
	free(r->row_line);
	free(r->dom_line);
	free(r);
	if (st)
		plan_free(out);
	return st;
}

ms_status plan_read_csv(const char *path, int n_blocks, int n_experts, const char *const *labels, plan *out,
			ms_error *err)
{
	if (out)
		memset(out, 0, sizeof *out);
	if (!out || !path)
		return ms_fail(err, MS_ERR_ARG, "plan_read_csv: no path or no plan");
	return read_plan(path, 1, 1, NULL, 0, n_blocks, n_experts, labels, out, err);
}

ms_status plan_read_csv_buffer(const char *name, long first_line, const char *buf, size_t len, int n_blocks,
			       int n_experts, const char *const *labels, plan *out, ms_error *err)
{
	if (out)
		memset(out, 0, sizeof *out);
	if (!out || !name || (!buf && len) || first_line < 1)
		return ms_fail(err, MS_ERR_ARG, "plan_read_csv_buffer: no name, no buffer or no plan");
	return read_plan(name, first_line, 0, buf, len, n_blocks, n_experts, labels, out, err);
}

/* ---- writing ---- */

/* RFC 4180: a field holding a comma, a quote or a line break is quoted, its quotes doubled. */
static int write_label(FILE *f, const char *s)
{
	if (!strpbrk(s, ",\"\r\n"))
		return fputs(s, f) < 0 ? -1 : 0;
	if (fputc('"', f) == EOF)
		return -1;
	for (; *s; s++)
		if ((*s == '"' && fputc('"', f) == EOF) || fputc(*s, f) == EOF)
			return -1;
	return fputc('"', f) == EOF ? -1 : 0;
}

/* ",value" with `decimals` digits, or "," alone for NAN (unknown). */
static int write_value(FILE *f, double v, int decimals)
{
	if (isnan(v))
		return fputc(',', f) == EOF ? -1 : 0;
	return fprintf(f, ",%.*f", decimals, v) < 0 ? -1 : 0;
}

static int write_row(FILE *f, const plan *p, int b, int e)
{
	const size_t i = (size_t)b * (size_t)p->n_experts + (size_t)e;
	if (write_label(f, p->labels[b]) || fprintf(f, ",%d,%d,%d", e, p->group[i], p->dominant[i]) < 0 ||
	    write_value(f, p->frequency[i], 10) || write_value(f, p->similarity[i], 10))
		return -1;
	for (int m = 0; m < 3; m++)
		if (write_value(f, p->stable_rank[3 * i + (size_t)m], 8))
			return -1;
	return fputc('\n', f) == EOF ? -1 : 0;
}

static int write_all(FILE *f, const plan *p)
{
	for (int k = 0; k < PLAN_NCOLS; k++)
		if (fprintf(f, "%s%s", k ? "," : "", col_names[k]) < 0)
			return -1;
	if (fputc('\n', f) == EOF)
		return -1;
	for (int b = 0; b < p->n_blocks; b++)
		for (int e = 0; e < p->n_experts; e++)
			if (write_row(f, p, b, e))
				return -1;
	return 0;
}

ms_status plan_write_csv_stream(FILE *f, const char *name, const plan *p, ms_error *err)
{
	ms_status st = plan_validate(p, err);
	if (st) {
		ms_error_prefix(err, name);
		return st;
	}
	c_numbers cn;
	c_numbers_begin(&cn);
	errno = 0;
	const int failed = write_all(f, p) || fflush(f) != 0;
	const int saved = errno;
	c_numbers_end(&cn);
	if (failed)
		return ms_fail(err, MS_ERR_IO, "%s: write failed: %s", name, saved ? strerror(saved) : "unknown error");
	return MS_OK;
}

/* Writes tmp, syncs it and renames it over path (io/durable.h); on any failure removes tmp, so no half-written
 * plan is left. */
static ms_status write_file(const char *path, const char *tmp, const plan *p, ms_error *err)
{
	FILE *f = fopen(tmp, "w");
	if (!f)
		return ms_fail(err, MS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
	errno = 0;
	ms_status st = MS_OK;
	if (write_all(f, p)) {
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

ms_status plan_write_csv(const char *path, const plan *p, ms_error *err)
{
	if (!path || !*path)
		return ms_fail(err, MS_ERR_ARG, "plan_write_csv: no path");
	ms_status st = plan_validate(p, err);
	if (st) {
		ms_error_prefix(err, path);
		return st;
	}
	char *tmp = malloc(strlen(path) + 5);
	if (!tmp)
		return ms_fail(err, MS_ERR_NOMEM, NULL);
	strcpy(tmp, path);
	strcat(tmp, ".tmp");
	c_numbers cn;
	c_numbers_begin(&cn);
	st = write_file(path, tmp, p, err);
	c_numbers_end(&cn);
	free(tmp);
	return st;
}
