#include "bench/synth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

enum { SYN_GATE, SYN_UP, SYN_DOWN, SYN_NMAT };

/* Floats generated per st_writer_write_f32 call: bounds the generator's buffer (16 MiB) for any tensor. */
#define SYN_CHUNK_FLOATS (4 << 20)

syn_shape syn_olmoe(void)
{
	syn_shape s = {.name = "olmoe", .E = 64, .top_k = 8, .d = 2048, .f = 1024, .layers = 1, .T = 4096,
		       .prototypes = 16, .full = 0, .vocab = 50304};
	return s;
}

syn_shape syn_mixtral(void)
{
	syn_shape s = {.name = "mixtral", .E = 8, .top_k = 2, .d = 4096, .f = 14336, .layers = 1, .T = 4096,
		       .prototypes = 4, .full = 0, .vocab = 32000};
	return s;
}

/* ---- counter-based values ---- */

/* splitmix64's output function: a bijection of 64-bit words whose outputs for consecutive inputs look
 * independent (Steele, Lea, Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014). */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A stream key from small integers naming what is generated (tensor kind, layer, owner, matrix). */
static uint64_t stream(uint64_t kind, uint64_t layer, uint64_t owner, uint64_t mat)
{
	return mix64(mix64(mix64(mix64(kind + 0x51ed2701ULL) ^ layer) ^ owner) ^ mat);
}

/* Element idx of a stream, uniform in [-1, 1). */
static float uval(uint64_t key, uint64_t idx)
{
	const uint64_t h = mix64(key + idx * 0x9e3779b97f4a7c15ULL);
	return (float)((double)(h >> 40) * (2.0 / 16777216.0) - 1.0);
}

/* Same, uniform in [0, 1). */
static double u01(uint64_t key, uint64_t idx)
{
	return (double)(mix64(key + idx * 0x9e3779b97f4a7c15ULL) >> 11) * (1.0 / 9007199254740992.0);
}

enum { K_PLAIN = 1, K_NORM, K_ROUTER, K_ROUTER_PROTO, K_NOISE, K_PROTO, K_SPIKE_U, K_SPIKE_V, K_PERM, K_X, K_CENTER };

/* ---- what a tensor is and how its rows are made ---- */

typedef enum { T_PLAIN, T_NORM, T_ROUTER, T_EXPERT, T_INPUT } syn_kind;

typedef struct {
	char name[192];
	syn_kind kind;
	int64_t rows, cols;
	int layer, expert, mat;
	uint64_t salt;      /* distinguishes plain tensors */
} syn_tensor;

/* Generation state of one expert matrix: the prototype's spike vectors and the expert's neuron permutation. */
typedef struct {
	int *perm;          /* [f] */
	float *u, *v;       /* [rows], [cols] unit spike vectors of the prototype */
	float noise, spike; /* entry scale s and spike strength k */
	uint64_t own, proto;
} syn_expert_gen;

/* Fisher-Yates with hashed draws: expert e's permutation of f neurons, fixed by (layer, e). */
static void make_perm(int layer, int e, int f, int *perm)
{
	const uint64_t key = stream(K_PERM, (uint64_t)layer, (uint64_t)e, 0);
	for (int i = 0; i < f; i++)
		perm[i] = i;
	for (int i = f - 1; i > 0; i--) {
		const int j = (int)(u01(key, (uint64_t)i) * (i + 1));
		const int t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
}

/* A vector of n entries with unit expected length (uniform entries have variance 1/3). */
static void unit_vector(uint64_t key, int64_t n, float *out)
{
	const float scale = (float)sqrt(3.0 / (double)n);
	for (int64_t i = 0; i < n; i++)
		out[i] = uval(key, (uint64_t)i) * scale;
}

static void expert_gen_free(syn_expert_gen *g)
{
	free(g->perm);
	free(g->u);
	free(g->v);
	memset(g, 0, sizeof *g);
}

static ms_status expert_gen_init(const syn_shape *s, const syn_tensor *t, syn_expert_gen *g, ms_error *err)
{
	const int p = t->expert % s->prototypes;
	g->perm = malloc((size_t)s->f * sizeof *g->perm);
	g->u = malloc((size_t)t->rows * sizeof *g->u);
	g->v = malloc((size_t)t->cols * sizeof *g->v);
	if (!g->perm || !g->u || !g->v) {
		expert_gen_free(g);
		return ms_fail(err, MS_ERR_NOMEM, "synth: out of memory");
	}
	make_perm(t->layer, t->expert, s->f, g->perm);
	unit_vector(stream(K_SPIKE_U, (uint64_t)t->layer, (uint64_t)p, (uint64_t)t->mat), t->rows, g->u);
	unit_vector(stream(K_SPIKE_V, (uint64_t)t->layer, (uint64_t)p, (uint64_t)t->mat), t->cols, g->v);
	/* entries of standard deviation 0.02, as in trained checkpoints; the noise's top singular value is about
	 * 0.02 (sqrt(rows) + sqrt(cols)), and the spike is twice that */
	g->noise = 0.02f * sqrtf(3.0f);
	g->spike = 2.0f * 0.02f * (float)(sqrt((double)t->rows) + sqrt((double)t->cols));
	g->own = stream(K_NOISE, (uint64_t)t->layer, (uint64_t)t->expert, (uint64_t)t->mat);
	g->proto = stream(K_PROTO, (uint64_t)t->layer, (uint64_t)p, (uint64_t)t->mat);
	return MS_OK;
}

/* Row i of an expert matrix (see synth.h): gate and up permute rows, down permutes columns. */
static void expert_row(const syn_tensor *t, const syn_expert_gen *g, int64_t i, float *out)
{
	const float a = 0.8f * g->noise, b = 0.6f * g->noise;
	const uint64_t n = (uint64_t)t->cols;
	if (t->mat != SYN_DOWN) {
		const uint64_t pi = (uint64_t)g->perm[i];
		const float ui = g->spike * g->u[pi];
		for (uint64_t j = 0; j < n; j++)
			out[j] = a * uval(g->proto, pi * n + j) + b * uval(g->own, (uint64_t)i * n + j) + ui * g->v[j];
		return;
	}
	const float ui = g->spike * g->u[i];
	for (uint64_t j = 0; j < n; j++) {
		const uint64_t pj = (uint64_t)g->perm[j];
		out[j] = a * uval(g->proto, (uint64_t)i * n + pj) + b * uval(g->own, (uint64_t)i * n + j) +
			 ui * g->v[pj];
	}
}

/* Router row e: its prototype's direction plus its own, scaled so logits have a standard deviation near 2 on the
 * calibration tokens (whose entries have variance about 0.42). */
static void router_row(const syn_shape *s, const syn_tensor *t, int64_t e, float *out)
{
	const uint64_t own = stream(K_ROUTER, (uint64_t)t->layer, (uint64_t)e, 0);
	const uint64_t proto = stream(K_ROUTER_PROTO, (uint64_t)t->layer, (uint64_t)(e % s->prototypes), 0);
	const float scale = (float)(2.0 / sqrt(0.42 * s->d) * sqrt(3.0) / sqrt(0.98));
	for (int64_t j = 0; j < t->cols; j++)
		out[j] = scale * (0.7f * uval(proto, (uint64_t)j) + 0.7f * uval(own, (uint64_t)j));
}

/* Calibration token r: one of 2E cluster centres, drawn with a skew towards the first ones, plus noise. */
static void input_row(const syn_shape *s, const syn_tensor *t, int64_t r, float *out)
{
	const uint64_t pick = stream(K_X, (uint64_t)t->layer, 1, 0);
	const double u = u01(pick, (uint64_t)r);
	const uint64_t c = (uint64_t)(u * u * 2.0 * s->E);
	const uint64_t centre = stream(K_CENTER, (uint64_t)t->layer, c, 0);
	const uint64_t noise = stream(K_X, (uint64_t)t->layer, 2, 0);
	const uint64_t n = (uint64_t)t->cols;
	for (uint64_t j = 0; j < n; j++)
		out[j] = uval(centre, j) + 0.5f * uval(noise, (uint64_t)r * n + j);
}

static void plain_row(const syn_tensor *t, int64_t r, float *out)
{
	const uint64_t key = stream(K_PLAIN, t->salt, 0, 0);
	const uint64_t n = (uint64_t)t->cols;
	for (uint64_t j = 0; j < n; j++)
		out[j] = t->kind == T_NORM ? 1.0f + 0.1f * uval(key, j) : 0.02f * uval(key, (uint64_t)r * n + j);
}

/* Streams tensor t's rows into the writer, SYN_CHUNK_FLOATS at a time. */
static ms_status write_tensor(st_writer *w, const syn_shape *s, const syn_tensor *t, float *buf, ms_error *err)
{
	syn_expert_gen g = {0};
	ms_status st = t->kind == T_EXPERT ? expert_gen_init(s, t, &g, err) : MS_OK;
	int64_t per = SYN_CHUNK_FLOATS / t->cols;
	if (per < 1)
		per = 1;
	for (int64_t r0 = 0; st == MS_OK && r0 < t->rows; r0 += per) {
		const int64_t n = t->rows - r0 < per ? t->rows - r0 : per;
		for (int64_t r = r0; r < r0 + n; r++) {
			float *out = buf + (r - r0) * t->cols;
			switch (t->kind) {
			case T_EXPERT: expert_row(t, &g, r, out); break;
			case T_ROUTER: router_row(s, t, r, out); break;
			case T_INPUT: input_row(s, t, r, out); break;
			default: plain_row(t, r, out); break;
			}
		}
		st = st_writer_write_f32(w, buf, (uint64_t)(n * t->cols), err);
	}
	expert_gen_free(&g);
	return st;
}

/* ---- names ---- */

static const char *block_infix(const syn_shape *s)
{
	return strcmp(s->name, "mixtral") == 0 ? "block_sparse_moe" : "mlp";
}

int syn_router_name(const syn_shape *s, int layer, char *buf, size_t len)
{
	int n = snprintf(buf, len, "model.layers.%d.%s.gate.weight", layer, block_infix(s));
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int syn_expert_name(const syn_shape *s, int layer, int e, int mat, char *buf, size_t len)
{
	static const char *const mixtral[SYN_NMAT] = {"w1", "w3", "w2"};
	static const char *const mlp[SYN_NMAT] = {"gate_proj", "up_proj", "down_proj"};
	const int is_mixtral = strcmp(s->name, "mixtral") == 0;
	int n = snprintf(buf, len, "model.layers.%d.%s.experts.%d.%s.weight", layer, block_infix(s), e,
			 is_mixtral ? mixtral[mat] : mlp[mat]);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* ---- the tensor list ---- */

typedef struct {
	syn_tensor *t;
	size_t n, cap;
} syn_list;

static syn_tensor *list_add(syn_list *l, syn_kind kind, int64_t rows, int64_t cols)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		syn_tensor *p = realloc(l->t, cap * sizeof *p);
		if (!p)
			return NULL;
		l->t = p;
		l->cap = cap;
	}
	syn_tensor *t = &l->t[l->n++];
	memset(t, 0, sizeof *t);
	t->kind = kind;
	t->rows = rows;
	t->cols = cols;
	t->salt = l->n;
	return t;
}

/* A plain or norm tensor: "model.layers.<layer>.<what>", or just `what` when layer < 0. */
static int add_named(syn_list *l, syn_kind kind, int64_t rows, int64_t cols, const char *what, int layer)
{
	syn_tensor *t = list_add(l, kind, rows, cols);
	if (!t)
		return -1;
	if (layer < 0)
		snprintf(t->name, sizeof t->name, "%s", what);
	else
		snprintf(t->name, sizeof t->name, "model.layers.%d.%s", layer, what);
	return 0;
}

static int add_attention(syn_list *l, const syn_shape *s, int i)
{
	const int64_t d = s->d, kv = s->d / 4;
	return add_named(l, T_NORM, 1, d, "input_layernorm.weight", i) ||
	       add_named(l, T_PLAIN, d, d, "self_attn.q_proj.weight", i) ||
	       add_named(l, T_PLAIN, kv, d, "self_attn.k_proj.weight", i) ||
	       add_named(l, T_PLAIN, kv, d, "self_attn.v_proj.weight", i) ||
	       add_named(l, T_PLAIN, d, d, "self_attn.o_proj.weight", i) ||
	       add_named(l, T_NORM, 1, d, "post_attention_layernorm.weight", i);
}

static int add_block(syn_list *l, const syn_shape *s, int i)
{
	syn_tensor *t = list_add(l, T_ROUTER, s->E, s->d);
	if (!t || syn_router_name(s, i, t->name, sizeof t->name))
		return -1;
	t->layer = i;
	for (int e = 0; e < s->E; e++) {
		for (int mat = 0; mat < SYN_NMAT; mat++) {
			t = list_add(l, T_EXPERT, mat == SYN_DOWN ? s->d : s->f, mat == SYN_DOWN ? s->f : s->d);
			if (!t || syn_expert_name(s, i, e, mat, t->name, sizeof t->name))
				return -1;
			t->layer = i;
			t->expert = e;
			t->mat = mat;
		}
	}
	return 0;
}

/* Every tensor of the model, in file order: embeddings, then per layer attention and the MoE block, then the
 * final norm and the output head. The rows of norms are 1-D tensors stored as one row. */
static int model_tensors(const syn_shape *s, syn_list *l)
{
	if (s->full && add_named(l, T_PLAIN, s->vocab, s->d, "model.embed_tokens.weight", -1))
		return -1;
	for (int i = 0; i < s->layers; i++)
		if ((s->full && add_attention(l, s, i)) || add_block(l, s, i))
			return -1;
	if (s->full && (add_named(l, T_NORM, 1, s->d, "model.norm.weight", -1) ||
			add_named(l, T_PLAIN, s->vocab, s->d, "lm_head.weight", -1)))
		return -1;
	return 0;
}

uint64_t syn_model_bytes(const syn_shape *s)
{
	syn_list l = {0};
	uint64_t bytes = 0;
	if (model_tensors(s, &l) == 0)
		for (size_t i = 0; i < l.n; i++)
			bytes += (uint64_t)l.t[i].rows * (uint64_t)l.t[i].cols * 2u;
	free(l.t);
	return bytes;
}

/* Declares every tensor of l (1-D for a single-row norm), then writes them in order. */
static ms_status write_list(st_writer *w, const syn_shape *s, const syn_list *l, ms_error *err)
{
	ms_status st = MS_OK;
	for (size_t i = 0; st == MS_OK && i < l->n; i++) {
		const syn_tensor *t = &l->t[i];
		const int64_t shape[2] = {t->rows, t->cols};
		if (t->kind == T_NORM)
			st = st_writer_declare(w, t->name, ST_BF16, 1, &shape[1], err);
		else
			st = st_writer_declare(w, t->name, ST_BF16, 2, shape, err);
	}
	float *buf = st == MS_OK ? malloc((size_t)SYN_CHUNK_FLOATS * sizeof *buf) : NULL;
	if (st == MS_OK && !buf)
		st = ms_fail(err, MS_ERR_NOMEM, "synth: out of memory");
	for (size_t i = 0; st == MS_OK && i < l->n; i++) {
		if (l->t[i].cols > SYN_CHUNK_FLOATS)
			st = ms_fail(err, MS_ERR_ARG, "synth: rows of %lld values are too long", (long long)l->t[i].cols);
		else
			st = write_tensor(w, s, &l->t[i], buf, err);
	}
	free(buf);
	if (st == MS_OK)
		st = st_writer_finish(w, err);
	return st;
}

static ms_status write_config(const char *dir, const syn_shape *s, ms_error *err)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/config.json", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		return ms_fail(err, MS_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
	const int mixtral = strcmp(s->name, "mixtral") == 0;
	fprintf(f, "{\n  \"model_type\": \"%s\",\n  \"architectures\": [\"%s\"],\n", s->name,
		mixtral ? "MixtralForCausalLM" : "OlmoeForCausalLM");
	fprintf(f, "  \"%s\": %d,\n  \"num_experts_per_tok\": %d,\n", mixtral ? "num_local_experts" : "num_experts",
		s->E, s->top_k);
	fprintf(f, "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n", s->d, s->f,
		s->layers);
	fprintf(f, "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"vocab_size\": %d,\n",
		s->d / 128, s->d / 512, s->vocab);
	if (!mixtral)
		fprintf(f, "  \"norm_topk_prob\": false,\n");
	fprintf(f, "  \"rms_norm_eps\": 1e-05,\n  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"bfloat16\"\n}\n");
	const int bad = ferror(f);
	if (fclose(f) != 0 || bad)
		return ms_fail(err, MS_ERR_IO, "%s: write failed", path);
	return MS_OK;
}

ms_status syn_write_model(const char *dir, const syn_shape *s, uint64_t max_shard, ms_error *err)
{
	if (!s || s->E <= 0 || s->d <= 0 || s->f <= 0 || s->layers <= 0 || s->prototypes <= 0 ||
	    s->top_k <= 0 || s->top_k > s->E)
		return ms_fail(err, MS_ERR_ARG, "synth: bad shape");
	ms_status st = write_config(dir, s, err);
	syn_list l = {0};
	if (st == MS_OK && model_tensors(s, &l) != 0)
		st = ms_fail(err, MS_ERR_NOMEM, "synth: out of memory listing tensors");
	st_writer *w = NULL;
	if (st == MS_OK)
		st = st_writer_create(dir, "model", max_shard, &w, err);
	if (st == MS_OK)
		st = write_list(w, s, &l, err);
	st_writer_free(w);
	free(l.t);
	return st;
}

ms_status syn_write_calib(const char *dir, const syn_shape *s, ms_error *err)
{
	syn_list l = {0};
	ms_status st = MS_OK;
	for (int i = 0; st == MS_OK && i < s->layers; i++) {
		syn_tensor *t = list_add(&l, T_INPUT, s->T, s->d);
		if (!t)
			st = ms_fail(err, MS_ERR_NOMEM, "synth: out of memory");
		else
			snprintf(t->name, sizeof t->name, "model.layers.%d.%s.input", i, block_infix(s));
		if (t)
			t->layer = i;
	}
	st_writer *w = NULL;
	if (st == MS_OK)
		st = st_writer_create(dir, "calib", 0, &w, err);
	if (st == MS_OK)
		st = st_writer_metadata(w, "format", "moescope-calib", err);
	if (st == MS_OK)
		st = write_list(w, s, &l, err);
	st_writer_free(w);
	free(l.t);
	return st;
}
