/* io/plan: the golden plans import and agree with a plain sscanf reading of the same files; export then import is
 * the identity on a random plan using every column; plan_validate catches each broken invariant; and a table of
 * malformed files, each with its own status and the line and column its message must name. */
#include "io/plan.h"

#include <errno.h>
#include <float.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test.h"

#define GOLDEN_DIR "tests/data/golden/msmoe-mixtral/expected/"

static char tmpdir[] = "/tmp/moescope-test-plan-XXXXXX";

static const char *tmp_path(const char *name)
{
	static char buf[4][256];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
	return buf[k];
}

static void write_bytes(const char *path, const char *text, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f) {
		perror(path);
		exit(2);
	}
	if (n && fwrite(text, 1, n, f) != n)
		exit(2);
	fclose(f);
}

static int file_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

/* Groups, dominants exactly; frequency and similarity to 1e-10 (written with 10 decimals), stable ranks to 1e-8
 * (written with 8). NAN matches NAN only. */
static int same_value(double a, double b, double tol)
{
	return (isnan(a) && isnan(b)) || (!isnan(a) && !isnan(b) && fabs(a - b) <= tol);
}

static int plans_equal(const plan *a, const plan *b)
{
	if (a->n_blocks != b->n_blocks || a->n_experts != b->n_experts)
		return 0;
	for (int k = 0; k < a->n_blocks; k++)
		if (strcmp(a->labels[k], b->labels[k]))
			return 0;
	const int n = a->n_blocks * a->n_experts;
	for (int i = 0; i < n; i++) {
		if (a->group[i] != b->group[i] || a->dominant[i] != b->dominant[i] ||
		    !same_value(a->frequency[i], b->frequency[i], 1e-10) ||
		    !same_value(a->similarity[i], b->similarity[i], 1e-10))
			return 0;
		for (int m = 0; m < 3; m++)
			if (!same_value(a->stable_rank[3 * i + m], b->stable_rank[3 * i + m], 1e-8))
				return 0;
	}
	return 1;
}

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(1 << 20);
	*n = fread(buf, 1, (1 << 20) - 1, f);
	buf[*n] = '\0';
	fclose(f);
	return buf;
}

/* ---- golden plans ---- */

static const char *const golden_labels[] = { "0", "1", "2" };

/* The golden file read another way: sscanf on each line after the header. */
static void check_against_sscanf(const char *path, const plan *p)
{
	FILE *f = fopen(path, "r");
	EXPECT(f != NULL);
	if (!f)
		return;
	char line[256];
	int rows = 0;
	/* the golden files end their lines with CRLF, as RFC 4180 writes them */
	EXPECT(fgets(line, sizeof line, f) && !strcmp(line, "layer,expert,group,dominant,frequency\r\n"));
	while (fgets(line, sizeof line, f)) {
		int layer, e, g, d;
		double freq;
		EXPECT(sscanf(line, "%d,%d,%d,%d,%lf", &layer, &e, &g, &d, &freq) == 5);
		const int i = layer * 8 + e;
		CHECK(p->group[i] == g && p->dominant[i] == d, "layer %d expert %d", layer, e);
		CHECK_CLOSE(p->frequency[i], freq, 1e-12);
		rows++;
	}
	EXPECT(rows == 24);
	fclose(f);
}

static void test_golden_plans_import(void)
{
	const char *files[] = { GOLDEN_DIR "plan_global_avg4.csv", GOLDEN_DIR "plan_per_layer_3.csv" };
	for (int k = 0; k < 2; k++) {
		plan p;
		ms_error err;
		ms_error_clear(&err);
		ms_status st = plan_read_csv(files[k], 3, 8, golden_labels, &p, &err);
		CHECK(st == MS_OK, "%s: %s", files[k], err.msg);
		if (st)
			continue;
		EXPECT(p.n_blocks == 3 && p.n_experts == 8);
		EXPECT(!strcmp(p.labels[2], "2"));
		EXPECT(plan_validate(&p, NULL) == MS_OK);
		check_against_sscanf(files[k], &p);
		for (int b = 0; b < 3; b++) {
			double sum = 0;
			for (int e = 0; e < 8; e++) {
				sum += p.frequency[b * 8 + e];
				/* the optional columns are absent: unknown */
				EXPECT(isnan(p.similarity[b * 8 + e]) && isnan(p.stable_rank[3 * (b * 8 + e) + 2]));
			}
			CHECK_CLOSE(sum, 1.0, 1e-9); /* usage frequencies of a block add up to one */
			if (k == 1)
				CHECK(plan_groups(&p, b) == 3, "block %d: %d groups", b, plan_groups(&p, b));
		}
		/* plan_global_avg4: 12 groups over 3 blocks; the global threshold gives block 0 five */
		if (k == 0)
			EXPECT(plan_groups(&p, 0) + plan_groups(&p, 1) + plan_groups(&p, 2) == 12 && plan_groups(&p, 0) == 5);
		plan_free(&p);
	}
}

/* ---- export then import ---- */

static unsigned long long rng = 0x9e3779b97f4a7c15ULL;

static int rand_below(int n)
{
	return (int)(test_rand_u64(&rng) % (unsigned long long)n);
}

static double rand_unit(void)
{
	return (test_rand_f(&rng) + 1.0) / 2.0;
}

/* Block b: G groups (G = 0 drops every expert), some experts dropped, one dominant per group. */
static void random_block(plan *p, int b, int G)
{
	const int E = p->n_experts;
	int perm[64];
	for (int e = 0; e < E; e++)
		perm[e] = e;
	for (int e = E - 1; e > 0; e--) {
		int j = rand_below(e + 1), t = perm[e];
		perm[e] = perm[j];
		perm[j] = t;
	}
	const int dropped = G ? rand_below(E - G + 1) : E;
	for (int k = 0; k < E; k++) {
		const int i = b * E + perm[k];
		p->group[i] = k < G ? k : k < G + dropped ? -1 : rand_below(G);
		p->dominant[i] = k < G;
		p->frequency[i] = k == 0 ? 1.0 : k == 1 ? 0.0 : rand_unit();
		p->similarity[i] = k < G ? 1.0 : rand_below(5) ? rand_unit() : NAN;
		for (int m = 0; m < 3; m++)
			p->stable_rank[3 * i + m] = rand_below(4) ? 1.0 + 99.0 * rand_unit() : NAN;
	}
}

static void test_export_import_identity(void)
{
	/* labels as a Switch model names its blocks, and two that need RFC 4180 quoting */
	const char *labels[] = { "0", "encoder.1", "decoder.1", "17", "odd,\"label\"", "line\nbreak" };
	const int B = 6, E = 16, G[] = { 4, 16, 1, 0, 7, 3 };
	plan p, q, r;
	ms_error err;
	EXPECT(plan_init(&p, B, E, labels) == MS_OK);
	for (int b = 0; b < B; b++)
		random_block(&p, b, G[b]);
	/* the extremes of the optional columns: the longest fields the writer can produce must read back */
	p.similarity[1] = -DBL_MAX;
	p.stable_rank[4] = DBL_MAX;
	p.stable_rank[5] = DBL_MIN;
	CHECK(plan_validate(&p, &err) == MS_OK, "%s", err.msg);
	const char *path = tmp_path("roundtrip.csv");
	ms_status st = plan_write_csv(path, &p, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	EXPECT(!file_exists(tmp_path("roundtrip.csv.tmp")));
	st = plan_read_csv(path, B, E, labels, &q, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (st) {
		plan_free(&p);
		return;
	}
	EXPECT(plans_equal(&p, &q));
	for (int b = 0; b < B; b++)
		CHECK(plan_groups(&q, b) == G[b], "block %d: %d groups, planted %d", b, plan_groups(&q, b), G[b]);
	/* and the written form is a fixed point: export, import, export gives the same bytes */
	EXPECT(plan_write_csv(tmp_path("again.csv"), &q, &err) == MS_OK);
	size_t n1 = 0, n2 = 0;
	char *a = slurp(path, &n1), *c = slurp(tmp_path("again.csv"), &n2);
	EXPECT(a && c && n1 == n2 && !memcmp(a, c, n1));
	EXPECT(a && strstr(a, "\"odd,\"\"label\"\"\",") && strstr(a, "layer,expert,group,dominant,frequency,"
							   "similarity_to_dominant,stable_rank_gate,stable_rank_up,stable_rank_down\n"));
	free(a);
	free(c);
	/* plan_copy gives an equal, independent plan */
	EXPECT(plan_copy(&r, &q) == MS_OK && plans_equal(&r, &q));
	r.group[0] = 99;
	EXPECT(q.group[0] != 99);
	plan_free(&p);
	plan_free(&q);
	plan_free(&r);
}

/* The buffer reader is the file reader on memory: the same plan from the same bytes, and its messages name the
 * given place with lines counted from first_line. The stream writer gives the file writer's bytes. */
static void test_buffer_reader_and_stream_writer(void)
{
	const char *labels[] = { "0", "1" };
	plan p, q;
	ms_error err;
	EXPECT(plan_init(&p, 2, 4, labels) == MS_OK);
	random_block(&p, 0, 2);
	random_block(&p, 1, 3);
	const char *path = tmp_path("stream.csv");
	EXPECT(plan_write_csv(path, &p, &err) == MS_OK);
	size_t n = 0, m = 0;
	char *text = slurp(path, &n), *mem = NULL;
	FILE *f = open_memstream(&mem, &m);
	EXPECT(f && plan_write_csv_stream(f, "memory", &p, &err) == MS_OK);
	if (f)
		fclose(f);
	EXPECT(text && mem && n == m && !memcmp(text, mem, n));
	ms_status st = plan_read_csv_buffer("memory", 1, mem, m, 2, 4, labels, &q, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (st == MS_OK) {
		EXPECT(plans_equal(&p, &q));
		plan_free(&q);
	}
	/* a bad expert on the CSV's third line, the buffer standing for lines 10.. of some file */
	char *bad = text ? strdup(text) : NULL;
	char *row = bad ? strchr(strchr(bad, '\n') + 1, '\n') + 1 : NULL; /* line 3: "0,1,..." */
	if (row)
		row[2] = '9';
	st = bad ? plan_read_csv_buffer("state.autosave", 10, bad, n, 2, 4, labels, &q, &err) : MS_ERR_NOMEM;
	CHECK(st == MS_ERR_PLAN_EXPERT && strstr(err.msg, "state.autosave: line 12, column 2: "), "%d %s", st, err.msg);
	EXPECT(plan_read_csv_buffer("empty", 3, "", 0, 2, 4, labels, &q, &err) == MS_ERR_PLAN_HEADER &&
	       strstr(err.msg, "empty: line 3, column 1: "));
	free(bad);
	free(text);
	free(mem);
	remove(path);
	plan_free(&p);
}

static void test_init_and_groups(void)
{
	plan p;
	EXPECT(plan_init(&p, 2, 4, NULL) == MS_OK);
	EXPECT(!strcmp(p.labels[0], "0") && !strcmp(p.labels[1], "1"));
	EXPECT(plan_groups(&p, 0) == 4 && plan_groups(&p, 1) == 4 && plan_groups(&p, 2) == 0);
	EXPECT(p.group[5] == 1 && p.dominant[5] == 1 && p.similarity[5] == 1.0 && isnan(p.stable_rank[0]));
	EXPECT(plan_validate(&p, NULL) == MS_OK);
	for (int e = 0; e < 4; e++) {
		p.group[4 + e] = -1;
		p.dominant[4 + e] = 0;
	}
	EXPECT(plan_groups(&p, 1) == 0 && plan_validate(&p, NULL) == MS_OK);
	plan_free(&p);
	plan_free(&p); /* freeing twice is harmless: the first zeroes it */

	const char *too_long[] = { "a-label-of-more-than-thirty-one-bytes" };
	const char *empty[] = { "" };
	EXPECT(plan_init(&p, 1, 4, too_long) == MS_ERR_ARG && p.group == NULL);
	EXPECT(plan_init(&p, 1, 4, empty) == MS_ERR_ARG);
	EXPECT(plan_init(&p, 1, 0, NULL) == MS_ERR_ARG);
	EXPECT(plan_init(&p, -1, 4, NULL) == MS_ERR_ARG);
	EXPECT(plan_init(&p, 1 << 20, 1 << 20, NULL) == MS_ERR_ARG);

	/* a model without MoE blocks has a plan of just the header */
	plan q;
	ms_error err;
	EXPECT(plan_init(&p, 0, 8, NULL) == MS_OK);
	EXPECT(plan_write_csv(tmp_path("empty.csv"), &p, &err) == MS_OK);
	EXPECT(plan_read_csv(tmp_path("empty.csv"), 0, 8, NULL, &q, &err) == MS_OK && q.n_blocks == 0);
	plan_free(&p);
	plan_free(&q);
}

/* ---- plan_validate ---- */

static void test_validate(void)
{
	const char *labels[] = { "0", "encoder.3" };
	struct {
		const char *name;
		int expert, group, dominant;
		double frequency;
		ms_status want;
		const char *words;
	} cases[] = {
		{ "group numbers with a hole", 1, 2, 1, 0.1, MS_ERR_PLAN_GROUP, "group 1 has no member" },
		{ "two dominants in a group", 1, 0, 1, 0.1, MS_ERR_PLAN_DOMINANT, "group 0 has 2 dominant" },
		{ "group without a dominant", 0, 0, 0, 0.1, MS_ERR_PLAN_DOMINANT, "group 0 has 0 dominant" },
		{ "dropped expert marked dominant", 2, -1, 1, 0.1, MS_ERR_PLAN_DOMINANT, "dropped" },
		{ "group out of range", 3, 4, 1, 0.1, MS_ERR_PLAN_GROUP, "outside -1..3" },
		{ "group below -1", 3, -2, 0, 0.1, MS_ERR_PLAN_GROUP, "outside -1..3" },
		{ "frequency above one", 3, 3, 1, 1.5, MS_ERR_PLAN_NUMBER, "frequency" },
		{ "frequency NaN", 3, 3, 1, NAN, MS_ERR_PLAN_NUMBER, "frequency" },
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		plan p;
		ms_error err;
		plan_init(&p, 2, 4, labels);
		/* block 1 starts as groups {0: 0 1}, {1: 2}, {2: 3}, then one field is broken */
		int *g = p.group + 4;
		unsigned char *d = p.dominant + 4;
		g[0] = 0, g[1] = 0, g[2] = 1, g[3] = 2;
		d[0] = 1, d[1] = 0, d[2] = 1, d[3] = 1;
		EXPECT(plan_validate(&p, NULL) == MS_OK);
		const int e = cases[k].expert;
		g[e] = cases[k].group;
		d[e] = (unsigned char)cases[k].dominant;
		p.frequency[4 + e] = cases[k].frequency;
		if (!strcmp(cases[k].name, "group numbers with a hole"))
			g[3] = 2, d[3] = 1, g[2] = 0, d[2] = 0, g[1] = 2, d[1] = 0; /* groups 0, 2: no 1 */
		if (!strcmp(cases[k].name, "group without a dominant"))
			d[1] = 0;
		ms_status st = plan_validate(&p, &err);
		CHECK(st == cases[k].want, "%s: got %s (%s)", cases[k].name, ms_status_name(st), err.msg);
		CHECK(strstr(err.msg, "layer 'encoder.3'") && strstr(err.msg, cases[k].words), "%s: %s", cases[k].name,
		      err.msg);
		/* an invalid plan is never written */
		const char *path = tmp_path("invalid.csv");
		EXPECT(plan_write_csv(path, &p, &err) == cases[k].want && !file_exists(path));
		CHECK(!strncmp(err.msg, path, strlen(path)), "%s", err.msg);
		plan_free(&p);
	}
	plan p;
	ms_error err;
	const char *twins[] = { "3", "3" };
	plan_init(&p, 2, 4, twins);
	EXPECT(plan_validate(&p, &err) == MS_ERR_PLAN_LAYER && strstr(err.msg, "'3' appears twice"));
	plan_free(&p);
	EXPECT(plan_validate(NULL, NULL) == MS_ERR_ARG);
}

/* ---- malformed plans ---- */

#define HDR "layer,expert,group,dominant,frequency\n"
/* Lines 2..7 of a valid plan for blocks "0", "1" of 3 experts. */
#define L2 "0,0,0,1,0.5\n"
#define L3 "0,1,0,0,0.25\n"
#define L4 "0,2,1,1,0.25\n"
#define L5 "1,0,0,1,0.4\n"
#define L6 "1,1,1,1,0.3\n"
#define L7 "1,2,-1,0,0.3\n"

typedef struct {
	const char *name;
	const char *text;
	ms_status want;
	long line;
	int column;
	const char *words; /* also in the message */
} bad_case;

static const bad_case bad_cases[] = {
	{ "unknown layer", HDR L2 "7,1,0,0,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_LAYER, 3, 1, "layer '7' is not one" },
	{ "expert out of range", HDR L2 L3 "0,3,1,1,0.25\n" L5 L6 L7, MS_ERR_PLAN_EXPERT, 4, 2, "out of range 0..2" },
	{ "negative expert", HDR L2 "0,-1,0,0,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_EXPERT, 3, 2, "expert -1" },
	{ "missing expert", HDR L2 L3 L4 L5 L7, MS_ERR_PLAN_MISSING, 7, 1, "layer '1' has no row for expert 1" },
	{ "duplicate expert", HDR L2 "0,0,0,0,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_DUPLICATE, 3, 2, "listed on line 2" },
	{ "group without a dominant", HDR L2 L3 "0,2,1,0,0.25\n" L5 L6 L7, MS_ERR_PLAN_DOMINANT, 4, 4,
	  "group 1 of layer '0' has no dominant" },
	{ "two dominants in a group", HDR L2 "0,1,0,1,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_DOMINANT, 3, 4,
	  "already has a dominant expert (line 2)" },
	{ "dropped expert marked dominant", HDR L2 L3 L4 L5 L6 "1,2,-1,1,0.3\n", MS_ERR_PLAN_DOMINANT, 7, 4,
	  "dropped" },
	{ "groups with a hole", HDR L2 L3 "0,2,2,1,0.25\n" L5 L6 L7, MS_ERR_PLAN_GROUP, 4, 3, "no group 1" },
	{ "hole found after the rows", HDR "0,2,2,1,0.25\n" L2 L3 L5 L6 L7, MS_ERR_PLAN_GROUP, 2, 3, "no group 1" },
	{ "text in a number", HDR L2 "0,1,x,0,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_NUMBER, 3, 3,
	  "group 'x' is not a number" },
	{ "junk after a number", HDR L2 L3 L4 L5 "1,1,1,1,0.3x\n" L7, MS_ERR_PLAN_NUMBER, 6, 5,
	  "frequency '0.3x' is not a number" },
	{ "space before a number", HDR L2 L3 L4 L5 "1,1,1,1, 0.3\n" L7, MS_ERR_PLAN_NUMBER, 6, 5, "' 0.3'" },
	{ "nan frequency", HDR L2 L3 L4 L5 "1,1,1,1,nan\n" L7, MS_ERR_PLAN_NUMBER, 6, 5, "'nan'" },
	{ "empty frequency", HDR L2 L3 L4 L5 "1,1,1,1,\n" L7, MS_ERR_PLAN_NUMBER, 6, 5, "frequency ''" },
	{ "frequency above one", HDR L2 L3 L4 L5 "1,1,1,1,1.5\n" L7, MS_ERR_PLAN_NUMBER, 6, 5, "outside [0, 1]" },
	{ "group below -1", HDR L2 "0,1,-2,0,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_GROUP, 3, 3, "-1..2" },
	{ "dominant neither 0 nor 1", HDR L2 "0,1,0,2,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_NUMBER, 3, 4, "0 or 1" },
	{ "wrong header", "layer,expert,grp,dominant,frequency\n" L2 L3 L4 L5 L6 L7, MS_ERR_PLAN_HEADER, 1, 3,
	  "'grp' should be 'group'" },
	{ "header missing a column", "layer,expert,group,dominant\n", MS_ERR_PLAN_HEADER, 1, 5, "'frequency'" },
	{ "unknown extra column", "layer,expert,group,dominant,frequency,notes\n", MS_ERR_PLAN_HEADER, 1, 6,
	  "unknown column 'notes'" },
	{ "optional columns out of order", "layer,expert,group,dominant,frequency,stable_rank_up,stable_rank_gate\n",
	  MS_ERR_PLAN_HEADER, 1, 7, "out of order" },
	{ "ten header columns", "layer,expert,group,dominant,frequency,similarity_to_dominant,stable_rank_gate,"
				"stable_rank_up,stable_rank_down,stable_rank_down\n",
	  MS_ERR_PLAN_HEADER, 1, 10, "repeated" },
	{ "unterminated quote", HDR L2 L3 L4 "1,\"0,0,1,0.4\n" L6 L7, MS_ERR_PLAN_SYNTAX, 5, 2, "never closed" },
	{ "stray quote", HDR L2 "0,1\"x,0,0,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_SYNTAX, 3, 2, "stray" },
	{ "text after a closing quote", HDR L2 "0,\"1\"x,0,0,0.25\n" L4 L5 L6 L7, MS_ERR_PLAN_SYNTAX, 3, 2, "stray" },
	{ "empty file", "", MS_ERR_PLAN_HEADER, 1, 1, "empty file" },
	{ "only blank lines", "\n\r\n\n", MS_ERR_PLAN_HEADER, 1, 1, "empty file" },
	{ "header only", HDR, MS_ERR_PLAN_MISSING, 2, 1, "layer '0' has no row for expert 0" },
	{ "row with too few fields", HDR L2 L3 L4 "1,0,0\n" L6 L7, MS_ERR_PLAN_SYNTAX, 5, 4, "fewer fields" },
	{ "row with too many fields", HDR L2 L3 L4 "1,0,0,1,0.4,0.9\n" L6 L7, MS_ERR_PLAN_SYNTAX, 5, 6,
	  "more fields" },
	{ "CRLF line numbers", "layer,expert,group,dominant,frequency\r\n0,0,0,1,0.5\r\n9,1,0,0,0.25\r\n",
	  MS_ERR_PLAN_LAYER, 3, 1, "'9'" },
	{ "CR-only line numbers", "layer,expert,group,dominant,frequency\r0,0,0,1,0.5\r9,1,0,0,0.25\r",
	  MS_ERR_PLAN_LAYER, 3, 1, "'9'" },
	{ "a quoted field over two lines", HDR L2 "0,1,0,0,\"0.25\n\"\n" L4 L5 L6 L7, MS_ERR_PLAN_NUMBER, 3, 5,
	  "'0.25?'" },
	{ "after blank lines", HDR "0,0,0,1,\"0.5\"\n0,1,0,0,0.25\n\n\n0,2,x,1,0.25\n", MS_ERR_PLAN_NUMBER,
	  6, 3, "group 'x'" },
	{ "blank line then an error", HDR L2 "\n" "0,1,0,0,0.25,\n", MS_ERR_PLAN_SYNTAX, 4, 6, "more fields" },
};

static void check_bad(const char *name, const char *text, size_t n, ms_status want, long line, int column,
		      const char *words)
{
	const char *labels[] = { "0", "1" };
	const char *path = tmp_path("bad.csv");
	write_bytes(path, text, n);
	plan p;
	ms_error err;
	ms_error_clear(&err);
	ms_status st = plan_read_csv(path, 2, 3, labels, &p, &err);
	char where[512];
	snprintf(where, sizeof where, "%s: line %ld, column %d: ", path, line, column);
	CHECK(st == want, "%s: got %s (%s)", name, ms_status_name(st), err.msg);
	CHECK(!strncmp(err.msg, where, strlen(where)), "%s: message '%s', expected it to start '%s'", name, err.msg,
	      where);
	CHECK(strstr(err.msg, words) != NULL, "%s: message '%s' lacks '%s'", name, err.msg, words);
	CHECK(p.group == NULL && p.n_blocks == 0, "%s: the plan was not left empty", name);
}

static void test_malformed_plans(void)
{
	for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++) {
		const bad_case *c = &bad_cases[k];
		check_bad(c->name, c->text, strlen(c->text), c->want, c->line, c->column, c->words);
	}
	/* a NUL byte inside a field ends neither the field nor the check */
	const char nul[] = HDR "0,0\0,0,1,0.5\n";
	check_bad("NUL in a number", nul, sizeof nul - 1, MS_ERR_PLAN_NUMBER, 2, 2, "expert '0?'");
	/* an over-long field, unquoted and quoted: refused without reading it whole */
	char *big = malloc(200000);
	memcpy(big, HDR "0,", strlen(HDR "0,"));
	size_t n = strlen(HDR "0,");
	memset(big + n, '7', 600);
	check_bad("long field", big, n + 600, MS_ERR_PLAN_SYNTAX, 2, 2, "longer than 512 bytes");
	big[n] = '"';
	memset(big + n + 1, 'a', 150000);
	check_bad("long quoted field", big, n + 150001, MS_ERR_PLAN_SYNTAX, 2, 2, "longer than");
	free(big);
}

/* Spreadsheet habits that are still valid CSV: a byte order mark, CRLF, quoted fields, a missing final line break,
 * blank lines, rows in any order. They read as the plain file does. */
static void test_valid_variants(void)
{
	const char *labels[] = { "0", "1" };
	const char *plain = HDR L2 L3 L4 L5 L6 L7;
	const char *fancy = "\xEF\xBB\xBF\"layer\",expert,group,dominant,frequency\r\n"
			    "1,2,-1,0,0.3\r\n\r\n\"0\",\"0\",0,1,\"0.5\"\r\n0,1,0,0,2.5e-1\r\n0,2,1,1,0.25\r\n"
			    "1,0,0,1,0.4\r\n1,1,1,1,0.30";
	plan a, b;
	ms_error err;
	write_bytes(tmp_path("plain.csv"), plain, strlen(plain));
	write_bytes(tmp_path("fancy.csv"), fancy, strlen(fancy));
	ms_status s1 = plan_read_csv(tmp_path("plain.csv"), 2, 3, labels, &a, &err);
	CHECK(s1 == MS_OK, "%s", err.msg);
	ms_status s2 = plan_read_csv(tmp_path("fancy.csv"), 2, 3, labels, &b, &err);
	CHECK(s2 == MS_OK, "%s", err.msg);
	if (!s1 && !s2)
		EXPECT(plans_equal(&a, &b));
	if (!s1)
		EXPECT(a.group[5] == -1 && a.dominant[2] == 1 && plan_groups(&a, 0) == 2);
	plan_free(&a);
	plan_free(&b);

	/* a subset of the optional columns, in order; empty fields are unknown */
	const char *some = "layer,expert,group,dominant,frequency,stable_rank_up\n"
			   "0,0,0,1,0.5,12.5\n0,1,0,0,0.25,\n0,2,1,1,0.25,3\n1,0,0,1,0.4,1\n1,1,1,1,0.3,1\n1,2,-1,0,0.3,1\n";
	write_bytes(tmp_path("some.csv"), some, strlen(some));
	ms_status st = plan_read_csv(tmp_path("some.csv"), 2, 3, labels, &a, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (!st)
		EXPECT(a.stable_rank[1] == 12.5 && isnan(a.stable_rank[0]) && isnan(a.stable_rank[3 + 1]) &&
		       isnan(a.similarity[0]));
	plan_free(&a);
}

/* ---- files ---- */

static void test_file_errors(void)
{
	plan p;
	ms_error err;
	const char *missing = tmp_path("no-such.csv");
	EXPECT(plan_read_csv(missing, 1, 2, NULL, &p, &err) == MS_ERR_IO && strstr(err.msg, missing));
	EXPECT(plan_read_csv(tmpdir, 1, 2, NULL, &p, &err) == MS_ERR_IO && strstr(err.msg, "directory"));
	EXPECT(plan_read_csv(GOLDEN_DIR "plan_global_avg4.csv", 3, 8, NULL, NULL, &err) == MS_ERR_ARG);
	/* a model with 4 experts per block against a file for 8: the first row that cannot fit is line 3's group 4 */
	EXPECT(plan_read_csv(GOLDEN_DIR "plan_global_avg4.csv", 3, 4, golden_labels, &p, &err) == MS_ERR_PLAN_GROUP &&
	       strstr(err.msg, "line 3, column 3: group 4 out of range -1..3"));
	/* a file over the size limit is refused before it is read (a sparse file: no disk used) */
	const char *huge = tmp_path("huge.csv");
	FILE *f = fopen(huge, "wb");
	EXPECT(f && ftruncate(fileno(f), (64L << 20) + 1) == 0);
	if (f)
		fclose(f);
	EXPECT(plan_read_csv(huge, 1, 2, NULL, &p, &err) == MS_ERR_PLAN_SYNTAX && strstr(err.msg, "limit"));
	remove(huge);
}

static void test_write_errors(void)
{
	plan p;
	ms_error err;
	plan_init(&p, 4, 64, NULL);
	/* no such directory */
	const char *nodir = tmp_path("no-dir/plan.csv");
	EXPECT(plan_write_csv(nodir, &p, &err) == MS_ERR_IO && strstr(err.msg, "no-dir/plan.csv.tmp"));
	/* the target is a directory: the rename fails and the temporary file goes */
	const char *dir = tmp_path("a-directory");
	mkdir(dir, 0700);
	EXPECT(plan_write_csv(dir, &p, &err) == MS_ERR_IO && strstr(err.msg, "rename"));
	EXPECT(!file_exists(tmp_path("a-directory.tmp")));
	rmdir(dir);
	/* the disk fills up mid-file (a 100-byte file size limit stands in for it): nothing is left behind */
	struct rlimit old, small;
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	small = old;
	small.rlim_cur = 100;
	setrlimit(RLIMIT_FSIZE, &small);
	const char *full = tmp_path("full.csv");
	ms_status st = plan_write_csv(full, &p, &err);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, prev);
	CHECK(st == MS_ERR_IO && strstr(err.msg, "write failed"), "%s: %s", ms_status_name(st), err.msg);
	EXPECT(!file_exists(full) && !file_exists(tmp_path("full.csv.tmp")));
	/* an existing plan is replaced whole */
	write_bytes(full, "old", 3);
	EXPECT(plan_write_csv(full, &p, &err) == MS_OK);
	plan q;
	EXPECT(plan_read_csv(full, 4, 64, NULL, &q, &err) == MS_OK && plans_equal(&p, &q));
	plan_free(&q);
	plan_free(&p);
}

static void remove_tmpdir(void)
{
	const char *names[] = { "roundtrip.csv", "again.csv", "empty.csv", "invalid.csv", "bad.csv", "plain.csv",
				"fancy.csv", "some.csv", "full.csv" };
	for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
		remove(tmp_path(names[k]));
	if (rmdir(tmpdir) != 0)
		fprintf(stderr, "  could not remove %s: %s\n", tmpdir, strerror(errno));
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	RUN(test_golden_plans_import);
	RUN(test_export_import_identity);
	RUN(test_buffer_reader_and_stream_writer);
	RUN(test_init_and_groups);
	RUN(test_validate);
	RUN(test_malformed_plans);
	RUN(test_valid_variants);
	RUN(test_file_errors);
	RUN(test_write_errors);
	remove_tmpdir();
	return test_summary();
}
