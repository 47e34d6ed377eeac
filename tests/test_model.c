/* io/model and io/calib: the golden Mixtral checkpoint and calibration set, checked against a direct reading of the
 * files' bytes; every family's MoE-layer rule on tiny models written here as raw safetensors bytes; and a table
 * of malformed configs, models and calibration sets, each with its own status and a message naming the place. */
#include "io/calib.h"
#include "io/model.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/test.h"

/* CHECK with no message trips -Wformat-zero-length under -Werror; EXPECT passes an empty one. */
#define GOLDEN "tests/data/golden/msmoe-mixtral"

static char tmp_root[64];

/* ---- an independent reading of a safetensors file ------------------------------------------------------------ */

typedef struct {
	unsigned char *bytes;
	size_t len;
	cJSON *header;
	size_t data_start;
} raw_file;

static int raw_open(const char *path, raw_file *r)
{
	memset(r, 0, sizeof *r);
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	r->len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	r->bytes = malloc(r->len);
	size_t got = r->bytes ? fread(r->bytes, 1, r->len, f) : 0;
	fclose(f);
	if (got != r->len || r->len < 8)
		return -1;
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | r->bytes[i];
	r->data_start = 8 + (size_t)n;
	r->header = cJSON_ParseWithLength((const char *)r->bytes + 8, (size_t)n);
	return r->header ? 0 : -1;
}

static void raw_close(raw_file *r)
{
	cJSON_Delete(r->header);
	free(r->bytes);
}

/* Element i of a F32 tensor, read from the bytes at its data_offsets. */
static float raw_f32(const raw_file *r, const char *name, size_t i)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(r->header, name);
	const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
	if (!off)
		return NAN;
	size_t at = r->data_start + (size_t)cJSON_GetArrayItem(off, 0)->valuedouble + i * 4;
	float v;
	memcpy(&v, r->bytes + at, 4);
	return v;
}

/* Sum over the tensors of prod(shape), and of the byte counts. */
static void raw_totals(const raw_file *r, uint64_t *params, uint64_t *bytes)
{
	*params = *bytes = 0;
	const cJSON *t;
	cJSON_ArrayForEach(t, r->header) {
		if (strcmp(t->string, "__metadata__") == 0)
			continue;
		uint64_t n = 1;
		const cJSON *s;
		cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(t, "shape"))
			n *= (uint64_t)s->valuedouble;
		const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
		*params += n;
		*bytes += (uint64_t)(cJSON_GetArrayItem(off, 1)->valuedouble - cJSON_GetArrayItem(off, 0)->valuedouble);
	}
}

/* ---- writing tiny safetensors files byte by byte ------------------------------------------------------------- */

typedef struct {
	char name[192];
	const char *dtype;   /* "F32", "BF16", "I32" */
	int ndim;
	int64_t shape[2];
} tspec;

typedef struct {
	tspec t[512];
	int n;
} tlist;

static size_t dtype_bytes(const char *dtype)
{
	return strcmp(dtype, "F32") == 0 || strcmp(dtype, "I32") == 0 ? 4 : 2;
}

static __attribute__((format(printf, 5, 6))) tspec *tl_add(tlist *l, const char *dtype, int64_t rows, int64_t cols,
							    const char *fmt, ...)
{
	if (l->n >= (int)(sizeof l->t / sizeof l->t[0]))
		abort();
	tspec *t = &l->t[l->n++];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->name, sizeof t->name, fmt, ap);
	va_end(ap);
	t->dtype = dtype;
	t->ndim = cols < 0 ? 1 : 2;
	t->shape[0] = rows;
	t->shape[1] = cols;
	return t;
}

static tspec *tl_find(tlist *l, const char *name)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->t[i].name, name) == 0)
			return &l->t[i];
	return NULL;
}

static void tl_remove(tlist *l, const char *name)
{
	tspec *t = tl_find(l, name);
	if (!t)
		return;
	memmove(t, t + 1, (size_t)(l->n - (int)(t - l->t) - 1) * sizeof *t);
	l->n--;
}

/* Values: small, finite, different per tensor and element; I32 tensors hold element / 4 (segment ids). */
static void write_values(FILE *f, const tspec *t, int ti)
{
	uint64_t n = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);
	for (uint64_t k = 0; k < n; k++) {
		if (strcmp(t->dtype, "I32") == 0) {
			int32_t v = (int32_t)(k / 4);
			fwrite(&v, 4, 1, f);
		} else if (strcmp(t->dtype, "F32") == 0) {
			float v = (float)((int)((k * 7 + (uint64_t)ti * 13) % 97) - 48) / 64.0f;
			fwrite(&v, 4, 1, f);
		} else {
			uint16_t v = 0x3f80;   /* 1.0 in BF16 and 1.875 in F16 */
			fwrite(&v, 2, 1, f);
		}
	}
}

static int write_st(const char *path, const tlist *l)
{
	size_t cap = 256 + (size_t)l->n * 320, used = 0;
	char *h = malloc(cap);
	uint64_t off = 0;
	used += (size_t)snprintf(h + used, cap - used, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (int i = 0; i < l->n; i++) {
		const tspec *t = &l->t[i];
		uint64_t n = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1) * dtype_bytes(t->dtype);
		char shape[64];
		if (t->ndim == 2)
			snprintf(shape, sizeof shape, "%lld,%lld", (long long)t->shape[0], (long long)t->shape[1]);
		else
			snprintf(shape, sizeof shape, "%lld", (long long)t->shape[0]);
		used += (size_t)snprintf(h + used, cap - used,
					 ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%llu,%llu]}", t->name,
					 t->dtype, shape, (unsigned long long)off, (unsigned long long)(off + n));
		off += n;
	}
	used += (size_t)snprintf(h + used, cap - used, "}");
	while (used % 8)
		h[used++] = ' ';
	FILE *f = fopen(path, "wb");
	if (!f) {
		free(h);
		return -1;
	}
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)used >> (8 * i));
	fwrite(len8, 1, 8, f);
	fwrite(h, 1, used, f);
	for (int i = 0; i < l->n; i++)
		write_values(f, &l->t[i], i);
	free(h);
	return fclose(f);
}

static int write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

/* A fresh directory under tmp_root for one case. */
static void case_dir(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmp_root, name);
	mkdir(buf, 0700);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(path);
}

/* ---- tiny models --------------------------------------------------------------------------------------------- */

/* How a family names a block's tensors, as in docs/design.md §2.2 (written out here, not taken from model.c). */
typedef struct {
	const char *router_suffix, *infix;
	const char *mats[3];   /* gate, up, down; gate NULL for switch */
} naming;

static const naming mixtral_names = {".gate.weight", ".experts.", {"w1", "w3", "w2"}};
static const naming mlp_names = {".gate.weight", ".experts.", {"gate_proj", "up_proj", "down_proj"}};
static const naming switch_names = {".router.classifier.weight", ".experts.expert_", {NULL, "wi", "wo"}};

static void add_block(tlist *l, const naming *nm, const char *prefix, int E, int d, int f)
{
	tl_add(l, "F32", E, d, "%s%s", prefix, nm->router_suffix);
	for (int e = 0; e < E; e++) {
		if (nm->mats[0])
			tl_add(l, "F32", f, d, "%s%s%d.%s.weight", prefix, nm->infix, e, nm->mats[0]);
		tl_add(l, "F32", f, d, "%s%s%d.%s.weight", prefix, nm->infix, e, nm->mats[1]);
		tl_add(l, "F32", d, f, "%s%s%d.%s.weight", prefix, nm->infix, e, nm->mats[2]);
	}
}

/* A decoder-only model: an embedding, and a MoE block at every layer listed in moe (or a dense MLP elsewhere). */
static void decoder_tensors(tlist *l, const naming *nm, const char *block, int n_layers, const int *moe, int n_moe,
			    int E, int d, int f)
{
	l->n = 0;
	tl_add(l, "F32", 16, d, "model.embed_tokens.weight");
	for (int i = 0, j = 0; i < n_layers; i++) {
		char prefix[128];
		snprintf(prefix, sizeof prefix, "model.layers.%d.%s", i, block);
		tl_add(l, "F32", d, -1, "model.layers.%d.input_layernorm.weight", i);
		if (j < n_moe && moe[j] == i) {
			add_block(l, nm, prefix, E, d, f);
			j++;
		} else {
			tl_add(l, "F32", 2 * d, d, "model.layers.%d.mlp.up_proj.weight", i);
		}
	}
}

/* The Mixtral model of the malformed-input cases: 2 layers, E = 4, top-2, d = 8, f = 12. */
static const char *const tiny_config =
	"{\"model_type\": \"mixtral\", \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"hidden_size\": 8,\n"
	" \"intermediate_size\": 12, \"num_hidden_layers\": 2}\n";

static void tiny_tensors(tlist *l)
{
	static const int moe[] = {0, 1};
	decoder_tensors(l, &mixtral_names, "block_sparse_moe", 2, moe, 2, 4, 8, 12);
}

static ms_status open_dir(const char *dir, const char *config, const tlist *l, mdl_model **m, ms_error *err)
{
	char path[256];
	snprintf(path, sizeof path, "%s/config.json", dir);
	if (config)
		write_text(path, config);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (l)
		write_st(path, l);
	ms_error_clear(err);
	*m = NULL;
	return mdl_open(dir, m, err);
}

/* Labels of the model's blocks joined by spaces. */
static void labels(const mdl_model *m, char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int b = 0; m && b < m->n_blocks && used < len; b++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", b ? " " : "", m->blocks[b].label);
}

/* ---- the golden case ----------------------------------------------------------------------------------------- */

static void test_golden_model(void)
{
	ms_error err = {0};
	mdl_model *m = NULL;
	ms_status st = mdl_open(GOLDEN "/model", &m, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (!m)
		return;
	EXPECT(strcmp(m->model_type, "mixtral") == 0);
	EXPECT(m->n_experts == 8 && m->top_k == 2 && m->hidden == 32 && m->inter == 48);
	EXPECT(m->n_layers == 3 && m->n_blocks == 3);
	EXPECT(m->act == MDL_ACT_SILU_GLU && m->expert_dtype == ST_F32);
	EXPECT(m->routing.top_k == 2 && m->routing.renormalize == 1 && m->routing.scale == 1.0f);
	EXPECT(strcmp(m->experts_field, "num_local_experts") == 0 && strcmp(m->topk_field, "num_experts_per_tok") == 0);
	for (int b = 0; b < 3; b++) {
		char want[64];
		snprintf(want, sizeof want, "model.layers.%d.block_sparse_moe", b);
		CHECK(m->blocks[b].layer == b && strcmp(m->blocks[b].prefix, want) == 0, "%s", m->blocks[b].prefix);
		snprintf(want, sizeof want, "%d", b);
		EXPECT(strcmp(m->blocks[b].label, want) == 0 && mdl_find_block(m, want) == b);
	}
	EXPECT(mdl_find_block(m, "3") == -1 && mdl_find_block(m, "encoder.0") == -1);

	raw_file r;
	CHECK(raw_open(GOLDEN "/model/model.safetensors", &r) == 0, "cannot read the golden model");
	uint64_t params, bytes;
	raw_totals(&r, &params, &bytes);
	CHECK(m->params_total == params && m->bytes_total == bytes, "%llu %llu", (unsigned long long)m->params_total,
	      (unsigned long long)params);
	EXPECT(m->params_experts == 3ULL * 8 * 3 * 32 * 48 && m->bytes_experts == 4 * m->params_experts);

	float *gate = malloc(48 * 32 * sizeof *gate), *up = malloc(48 * 32 * sizeof *up);
	float *down = malloc(32 * 48 * sizeof *down), *router = malloc(8 * 32 * sizeof *router);
	st = mdl_load_expert(m, 1, 3, gate, up, down, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	EXPECT(gate[0] == raw_f32(&r, "model.layers.1.block_sparse_moe.experts.3.w1.weight", 0));
	EXPECT(up[5 * 32 + 7] == raw_f32(&r, "model.layers.1.block_sparse_moe.experts.3.w3.weight", 5 * 32 + 7));
	EXPECT(down[31 * 48 + 47] == raw_f32(&r, "model.layers.1.block_sparse_moe.experts.3.w2.weight", 31 * 48 + 47));
	st = mdl_load_router(m, 2, router, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	EXPECT(router[6 * 32 + 9] == raw_f32(&r, "model.layers.2.block_sparse_moe.gate.weight", 6 * 32 + 9));
	EXPECT(mdl_load_expert(m, 3, 0, gate, up, down, &err) == MS_ERR_ARG);
	EXPECT(mdl_load_expert(m, 0, 8, gate, up, down, &err) == MS_ERR_ARG);
	EXPECT(mdl_load_router(m, -1, router, &err) == MS_ERR_ARG);
	free(gate);
	free(up);
	free(down);
	free(router);
	raw_close(&r);

	const cJSON *cfg = mdl_config_json(m);
	EXPECT(cJSON_IsObject(cfg));
	EXPECT(strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cfg, "model_type")), "mixtral") == 0);
	mdl_close(m);
}

static void test_names(void)
{
	ms_error err = {0};
	mdl_model *m = NULL;
	CHECK(mdl_open(GOLDEN "/model", &m, &err) == MS_OK, "%s", err.msg);
	if (!m)
		return;
	char buf[128];
	EXPECT(mdl_router_name(m, 2, buf, sizeof buf) == 0);
	EXPECT(strcmp(buf, "model.layers.2.block_sparse_moe.gate.weight") == 0);
	EXPECT(mdl_expert_name(m, 1, 3, MDL_GATE, buf, sizeof buf) == 0);
	EXPECT(strcmp(buf, "model.layers.1.block_sparse_moe.experts.3.w1.weight") == 0);
	EXPECT(mdl_expert_name(m, 1, 7, MDL_UP, buf, sizeof buf) == 0);
	EXPECT(strcmp(buf, "model.layers.1.block_sparse_moe.experts.7.w3.weight") == 0);
	EXPECT(mdl_expert_name(m, 0, 0, MDL_DOWN, buf, sizeof buf) == 0);
	EXPECT(strcmp(buf, "model.layers.0.block_sparse_moe.experts.0.w2.weight") == 0);
	/* too small a buffer, and indices out of range */
	EXPECT(mdl_router_name(m, 0, buf, 20) == -1);
	EXPECT(mdl_expert_name(m, 0, 0, MDL_DOWN, buf, 51) == -1);
	EXPECT(mdl_expert_name(m, 0, 0, MDL_DOWN, buf, 52) == 0);
	EXPECT(mdl_router_name(m, 3, buf, sizeof buf) == -1);
	EXPECT(mdl_expert_name(m, 0, 8, MDL_UP, buf, sizeof buf) == -1);
	EXPECT(mdl_expert_name(m, 0, 0, MDL_NMAT, buf, sizeof buf) == -1);
	mdl_close(m);
}

static void test_golden_calib(void)
{
	ms_error err = {0};
	mdl_model *m = NULL;
	calib *c = NULL;
	CHECK(mdl_open(GOLDEN "/model", &m, &err) == MS_OK, "%s", err.msg);
	if (!m)
		return;
	ms_status st = calib_open(GOLDEN "/calib.safetensors", m, &c, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (c) {
		EXPECT(strcmp(calib_path(c), GOLDEN "/calib.safetensors") == 0);
		for (int b = 0; b < 3; b++)
			CHECK(calib_tokens(c, b) == 256, "block %d: %lld", b, (long long)calib_tokens(c, b));
		EXPECT(calib_tokens(c, 3) == -1);
		EXPECT(!calib_has_segments(c));
		int32_t seg[4];
		EXPECT(calib_load_segments(c, seg, 4, &err) == MS_ERR_ARG);
		float *x = malloc(256 * 32 * sizeof *x);
		st = calib_load(c, 1, x, &err);
		CHECK(st == MS_OK, "%s", err.msg);
		raw_file r;
		CHECK(raw_open(GOLDEN "/calib.safetensors", &r) == 0, "cannot read the golden calibration");
		EXPECT(x[0] == raw_f32(&r, "model.layers.1.block_sparse_moe.input", 0));
		EXPECT(x[255 * 32 + 31] == raw_f32(&r, "model.layers.1.block_sparse_moe.input", 255 * 32 + 31));
		EXPECT(calib_load(c, 3, x, &err) == MS_ERR_ARG);
		raw_close(&r);
		free(x);
	}
	calib_close(c);
	mdl_close(m);
}

/* ---- the MoE layers of each family --------------------------------------------------------------------------- */

typedef struct {
	const char *name;
	const char *config;
	const naming *nm;
	const char *block;       /* "block_sparse_moe" or "mlp" */
	int n_layers;
	int moe[8], n_moe;       /* the layers transformers builds as MoE blocks */
	int E, top_k, d, f;
	int renormalize;
	float scale;
} family_case;

static const family_case family_cases[] = {
	{"phimoe", "{\"model_type\":\"phimoe\",\"num_local_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
		   "\"intermediate_size\":6,\"num_hidden_layers\":2}",
	 &mixtral_names, "block_sparse_moe", 2, {0, 1}, 2, 4, 2, 8, 6, 1, 1.0f},
	/* mlp_only_layers removes layers 0 and 3; step 1 keeps every other */
	{"qwen2_moe", "{\"model_type\":\"qwen2_moe\",\"num_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
		      "\"moe_intermediate_size\":6,\"intermediate_size\":32,\"num_hidden_layers\":6,"
		      "\"decoder_sparse_step\":1,\"mlp_only_layers\":[0,3,17]}",
	 &mlp_names, "mlp", 6, {1, 2, 4, 5}, 4, 4, 2, 8, 6, 0, 1.0f},
	/* (i + 1) % 2 == 0 gives 1, 3, 5; mlp_only_layers removes 3 */
	{"qwen2_moe step 2", "{\"model_type\":\"qwen2_moe\",\"num_experts\":4,\"num_experts_per_tok\":1,"
			     "\"hidden_size\":8,\"moe_intermediate_size\":6,\"num_hidden_layers\":6,"
			     "\"decoder_sparse_step\":2,\"mlp_only_layers\":[3],\"norm_topk_prob\":true}",
	 &mlp_names, "mlp", 6, {1, 5}, 2, 4, 1, 8, 6, 1, 1.0f},
	{"qwen3_moe", "{\"model_type\":\"qwen3_moe\",\"num_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
		      "\"moe_intermediate_size\":6,\"num_hidden_layers\":3,\"mlp_only_layers\":null}",
	 &mlp_names, "mlp", 3, {0, 1, 2}, 3, 4, 2, 8, 6, 0, 1.0f},
	/* transformers 5 saves Qwen3-MoE's expert count as num_local_experts */
	{"qwen3_moe saved by transformers 5", "{\"model_type\":\"qwen3_moe\",\"num_local_experts\":4,"
		      "\"num_experts_per_tok\":2,\"hidden_size\":8,\"moe_intermediate_size\":6,\"num_hidden_layers\":2}",
	 &mlp_names, "mlp", 2, {0, 1}, 2, 4, 2, 8, 6, 0, 1.0f},
	{"olmoe", "{\"model_type\":\"olmoe\",\"num_experts\":6,\"num_experts_per_tok\":3,\"hidden_size\":8,"
		  "\"intermediate_size\":4,\"num_hidden_layers\":2,\"norm_topk_prob\":true}",
	 &mlp_names, "mlp", 2, {0, 1}, 2, 6, 3, 8, 4, 1, 1.0f},
	/* i >= 1 and i % 2 == 0 */
	{"deepseek_v2", "{\"model_type\":\"deepseek_v2\",\"n_routed_experts\":4,\"num_experts_per_tok\":2,"
			"\"hidden_size\":8,\"moe_intermediate_size\":6,\"num_hidden_layers\":5,"
			"\"first_k_dense_replace\":1,\"moe_layer_freq\":2,\"routed_scaling_factor\":2.5,"
			"\"topk_method\":\"greedy\",\"n_group\":1,\"topk_group\":1}",
	 &mlp_names, "mlp", 5, {2, 4}, 2, 4, 2, 8, 6, 0, 2.5f},
};

static void test_family_layers(void)
{
	for (size_t i = 0; i < sizeof family_cases / sizeof family_cases[0]; i++) {
		const family_case *fc = &family_cases[i];
		static tlist l;
		char dir[128], want[128], got[128];
		snprintf(want, sizeof want, "fam%zu", i);
		case_dir(dir, sizeof dir, want);
		decoder_tensors(&l, fc->nm, fc->block, fc->n_layers, fc->moe, fc->n_moe, fc->E, fc->d, fc->f);
		ms_error err;
		mdl_model *m;
		ms_status st = open_dir(dir, fc->config, &l, &m, &err);
		CHECK(st == MS_OK, "%s: %s", fc->name, err.msg);
		if (!m)
			continue;
		size_t used = 0;
		for (int j = 0; j < fc->n_moe; j++)
			used += (size_t)snprintf(want + used, sizeof want - used, "%s%d", j ? " " : "", fc->moe[j]);
		labels(m, got, sizeof got);
		CHECK(strcmp(got, want) == 0, "%s: blocks '%s', expected '%s'", fc->name, got, want);
		CHECK(m->n_layers == fc->n_layers && m->n_experts == fc->E && m->top_k == fc->top_k, "%s", fc->name);
		CHECK(m->routing.renormalize == fc->renormalize && m->routing.scale == fc->scale, "%s: renorm %d scale %g",
		      fc->name, m->routing.renormalize, (double)m->routing.scale);
		CHECK(m->act == MDL_ACT_SILU_GLU && strncmp(fc->name, m->model_type, strlen(m->model_type)) == 0, "%s: %s",
		      fc->name, m->model_type);
		/* the field a merge rewrites is the one the file holds */
		char quoted[64];
		snprintf(quoted, sizeof quoted, "\"%s\":", m->experts_field);
		CHECK(strstr(fc->config, quoted) != NULL, "%s: experts field '%s'", fc->name, m->experts_field);
		mdl_close(m);
	}
}

/* Switch: encoder and decoder stacks, sparse blocks where i % step == 1 (or every block when step is 1). */
static void switch_tensors(tlist *l, const int *enc, int n_enc, const int *dec, int n_dec, int E, int d, int f)
{
	l->n = 0;
	tl_add(l, "F32", 16, d, "shared.weight");
	for (int s = 0; s < 2; s++) {
		const int *moe = s ? dec : enc;
		int n = s ? n_dec : n_enc;
		const char *stack = s ? "decoder" : "encoder";
		for (int j = 0; j < n; j++) {
			char prefix[128];
			snprintf(prefix, sizeof prefix, "%s.block.%d.layer.%d.mlp", stack, moe[j], s ? 2 : 1);
			add_block(l, &switch_names, prefix, E, d, f);
		}
	}
}

static void test_switch(void)
{
	static tlist l;
	char dir[128], got[256], buf[128];
	ms_error err;
	mdl_model *m;
	/* 4 encoder layers with 2 sparse (step 2: blocks 1, 3); 4 decoder layers, all sparse (step 1) */
	static const int enc[] = {1, 3}, dec[] = {0, 1, 2, 3};
	case_dir(dir, sizeof dir, "switch");
	switch_tensors(&l, enc, 2, dec, 4, 4, 8, 6);
	ms_status st = open_dir(dir,
				"{\"model_type\":\"switch_transformers\",\"num_experts\":4,\"d_model\":8,\"d_ff\":6,"
				"\"num_layers\":4,\"num_decoder_layers\":4,\"num_sparse_encoder_layers\":2,"
				"\"num_sparse_decoder_layers\":4}",
				&l, &m, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (m) {
		labels(m, got, sizeof got);
		CHECK(strcmp(got, "encoder.1 encoder.3 decoder.0 decoder.1 decoder.2 decoder.3") == 0, "%s", got);
		EXPECT(m->n_layers == 8 && m->top_k == 1 && !m->topk_field && m->act == MDL_ACT_RELU);
		EXPECT(m->routing.top_k == 1 && !m->routing.renormalize && m->routing.scale == 1.0f);
		EXPECT(strcmp(m->experts_field, "num_experts") == 0);
		EXPECT(strcmp(m->blocks[1].prefix, "encoder.block.3.layer.1.mlp") == 0 && m->blocks[1].layer == 3);
		EXPECT(strcmp(m->blocks[2].prefix, "decoder.block.0.layer.2.mlp") == 0);
		EXPECT(mdl_find_block(m, "decoder.2") == 4);
		EXPECT(mdl_expert_name(m, 0, 0, MDL_GATE, buf, sizeof buf) == 0 && buf[0] == '\0');
		EXPECT(mdl_expert_name(m, 2, 3, MDL_UP, buf, sizeof buf) == 0);
		EXPECT(strcmp(buf, "decoder.block.0.layer.2.mlp.experts.expert_3.wi.weight") == 0);
		EXPECT(mdl_router_name(m, 0, buf, sizeof buf) == 0);
		EXPECT(strcmp(buf, "encoder.block.1.layer.1.mlp.router.classifier.weight") == 0);
		float up[6 * 8], down[8 * 6], gate[1] = {42.0f};
		EXPECT(mdl_load_expert(m, 5, 3, gate, up, down, &err) == MS_OK && gate[0] == 42.0f);
		EXPECT(m->params_experts == 6ULL * 4 * 2 * 8 * 6);
		mdl_close(m);
	}
	/* Older configs carry only the steps; num_decoder_layers defaults to num_layers. Step 3 over 6 layers
	 * gives 1 and 4; step 0 gives no sparse block in the decoder. */
	static const int enc3[] = {1, 4};
	case_dir(dir, sizeof dir, "switch-steps");
	switch_tensors(&l, enc3, 2, NULL, 0, 2, 8, 6);
	st = open_dir(dir,
		      "{\"model_type\":\"switch_transformers\",\"num_experts\":2,\"d_model\":8,\"d_ff\":6,"
		      "\"num_layers\":6,\"encoder_sparse_step\":3,\"decoder_sparse_step\":0}",
		      &l, &m, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (m) {
		labels(m, got, sizeof got);
		CHECK(strcmp(got, "encoder.1 encoder.4") == 0, "%s", got);
		EXPECT(m->n_layers == 12);
		mdl_close(m);
	}
}

/* ---- malformed models ---------------------------------------------------------------------------------------- */

typedef struct {
	const char *name;
	const char *config;            /* NULL: tiny_config */
	void (*mutate)(tlist *l);      /* changes the tiny model's tensors, or NULL */
	ms_status want;
	const char *msg[3];            /* substrings the message must hold */
} bad_model;

static void drop_expert(tlist *l)
{
	tl_remove(l, "model.layers.1.block_sparse_moe.experts.3.w2.weight");
}

static void wide_router(tlist *l)
{
	tl_find(l, "model.layers.0.block_sparse_moe.gate.weight")->shape[0] = 5;
}

static void transposed_down(tlist *l)
{
	tspec *t = tl_find(l, "model.layers.1.block_sparse_moe.experts.2.w2.weight");
	t->shape[0] = 12;
	t->shape[1] = 8;
}

static void vector_up(tlist *l)
{
	tspec *t = tl_find(l, "model.layers.0.block_sparse_moe.experts.0.w3.weight");
	t->ndim = 1;
	t->shape[0] = 96;
}

static void int_gate(tlist *l)
{
	tl_find(l, "model.layers.0.block_sparse_moe.experts.1.w1.weight")->dtype = "I32";
}

static void drop_router(tlist *l)
{
	tl_remove(l, "model.layers.1.block_sparse_moe.gate.weight");
}

static const bad_model bad_models[] = {
	{"unknown model_type", "{\"model_type\":\"gpt2\",\"n_embd\":8}", NULL, MS_ERR_CFG_FAMILY,
	 {"config.json", "'gpt2' is not a supported MoE family", "switch_transformers"}},
	{"model_type with a line break", "{\"model_type\":\"mix\\ntral\"}", NULL, MS_ERR_CFG_FAMILY,
	 {"model_type 'mix?tral' is not"}},
	{"model_type not a string", "{\"model_type\":3}", NULL, MS_ERR_CFG_FIELD, {"config.json", "model_type"}},
	{"model_type missing", "{\"num_local_experts\":4}", NULL, MS_ERR_CFG_FIELD, {"config.json", "model_type"}},
	{"not JSON", "{\"model_type\": \"mixtral\",\n \"num_local_experts\": 4,,}", NULL, MS_ERR_CFG_JSON,
	 {"config.json", "not valid JSON", "line 2"}},
	{"JSON array", "[1, 2]", NULL, MS_ERR_CFG_JSON, {"config.json", "not a JSON object"}},
	{"text after the object", "{\"model_type\":\"mixtral\"} {}", NULL, MS_ERR_CFG_JSON,
	 {"config.json", "text after the JSON object", "column 26"}},
	{"empty config", "", NULL, MS_ERR_CFG_JSON, {"config.json"}},
	{"num_local_experts missing",
	 "{\"model_type\":\"mixtral\",\"num_experts_per_tok\":2,\"hidden_size\":8,\"intermediate_size\":12,"
	 "\"num_hidden_layers\":2}", NULL, MS_ERR_CFG_FIELD, {"config.json", "'num_local_experts' missing"}},
	{"top_k above E",
	 "{\"model_type\":\"mixtral\",\"num_local_experts\":4,\"num_experts_per_tok\":5,\"hidden_size\":8,"
	 "\"intermediate_size\":12,\"num_hidden_layers\":2}", NULL, MS_ERR_CFG_FIELD,
	 {"config.json", "'num_experts_per_tok' is 5", "4 experts"}},
	{"zero experts",
	 "{\"model_type\":\"mixtral\",\"num_local_experts\":0,\"num_experts_per_tok\":2,\"hidden_size\":8,"
	 "\"intermediate_size\":12,\"num_hidden_layers\":2}", NULL, MS_ERR_CFG_FIELD,
	 {"'num_local_experts' must be an integer in [1, 4096]"}},
	{"fractional width",
	 "{\"model_type\":\"mixtral\",\"num_local_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8.5,"
	 "\"intermediate_size\":12,\"num_hidden_layers\":2}", NULL, MS_ERR_CFG_FIELD, {"'hidden_size'"}},
	{"huge width",
	 "{\"model_type\":\"mixtral\",\"num_local_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
	 "\"intermediate_size\":1e300,\"num_hidden_layers\":2}", NULL, MS_ERR_CFG_FIELD, {"'intermediate_size'"}},
	{"width as a string",
	 "{\"model_type\":\"mixtral\",\"num_local_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":\"8\","
	 "\"intermediate_size\":12,\"num_hidden_layers\":2}", NULL, MS_ERR_CFG_FIELD, {"'hidden_size'"}},
	{"norm_topk_prob not a bool",
	 "{\"model_type\":\"olmoe\",\"num_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
	 "\"intermediate_size\":12,\"num_hidden_layers\":2,\"norm_topk_prob\":\"yes\"}", NULL, MS_ERR_CFG_FIELD,
	 {"'norm_topk_prob'"}},
	{"mlp_only_layers not a list",
	 "{\"model_type\":\"qwen2_moe\",\"num_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
	 "\"moe_intermediate_size\":12,\"num_hidden_layers\":2,\"mlp_only_layers\":3}", NULL, MS_ERR_CFG_FIELD,
	 {"'mlp_only_layers'"}},
	{"decoder_sparse_step 0",
	 "{\"model_type\":\"qwen3_moe\",\"num_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
	 "\"moe_intermediate_size\":12,\"num_hidden_layers\":2,\"decoder_sparse_step\":0}", NULL, MS_ERR_CFG_FIELD,
	 {"'decoder_sparse_step'"}},
	{"no MoE layer",
	 "{\"model_type\":\"qwen2_moe\",\"num_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
	 "\"moe_intermediate_size\":12,\"num_hidden_layers\":2,\"mlp_only_layers\":[0,1]}", NULL, MS_ERR_CFG_FIELD,
	 {"no MoE layer"}},
	{"group-limited routing, groups not dividing",
	 "{\"model_type\":\"deepseek_v2\",\"n_routed_experts\":4,\"num_experts_per_tok\":2,\"hidden_size\":8,"
	 "\"moe_intermediate_size\":12,\"num_hidden_layers\":2,\"topk_method\":\"group_limited_greedy\","
	 "\"n_group\":3,\"topk_group\":1}", NULL, MS_ERR_CFG_FIELD, {"n_group 3 does not divide the 4 experts"}},
	{"group-limited routing, top-k beyond the eligible groups",
	 "{\"model_type\":\"deepseek_v2\",\"n_routed_experts\":4,\"num_experts_per_tok\":3,\"hidden_size\":8,"
	 "\"moe_intermediate_size\":12,\"num_hidden_layers\":2,\"topk_method\":\"group_limited_greedy\","
	 "\"n_group\":2,\"topk_group\":1}", NULL, MS_ERR_CFG_FIELD, {"top-3 is more than the 2 experts"}},
	{"missing expert tensor", NULL, drop_expert, MS_ERR_MODEL_TENSOR,
	 {"tensor 'model.layers.1.block_sparse_moe.experts.3.w2.weight' missing", "(expert 3 of layer 1)"}},
	{"missing router", NULL, drop_router, MS_ERR_MODEL_TENSOR,
	 {"'model.layers.1.block_sparse_moe.gate.weight' missing", "router of layer 1"}},
	{"router shape", NULL, wide_router, MS_ERR_MODEL_SHAPE,
	 {"'model.layers.0.block_sparse_moe.gate.weight'", "shape [5, 8]",
	  "expected [4, 8] (num_local_experts x hidden_size"}},
	{"expert shape", NULL, transposed_down, MS_ERR_MODEL_SHAPE,
	 {"'model.layers.1.block_sparse_moe.experts.2.w2.weight'", "shape [12, 8]",
	  "expected [8, 12] (hidden_size x intermediate_size"}},
	{"expert one-dimensional", NULL, vector_up, MS_ERR_MODEL_SHAPE, {"experts.0.w3.weight", "shape [96]"}},
	{"expert of integers", NULL, int_gate, MS_ERR_ST_DTYPE, {"experts.1.w1.weight", "dtype I32"}},
};

static void test_bad_models(void)
{
	for (size_t i = 0; i < sizeof bad_models / sizeof bad_models[0]; i++) {
		const bad_model *bc = &bad_models[i];
		static tlist l;
		char dir[128], sub[32];
		snprintf(sub, sizeof sub, "bad%zu", i);
		case_dir(dir, sizeof dir, sub);
		tiny_tensors(&l);
		if (bc->mutate)
			bc->mutate(&l);
		ms_error err;
		mdl_model *m;
		ms_status st = open_dir(dir, bc->config ? bc->config : tiny_config, &l, &m, &err);
		CHECK(st == bc->want && !m, "%s: %s, expected %s (%s)", bc->name, ms_status_name(st),
		      ms_status_name(bc->want), err.msg);
		for (int k = 0; k < 3 && bc->msg[k]; k++)
			CHECK(strstr(err.msg, bc->msg[k]), "%s: message '%s' lacks '%s'", bc->name, err.msg, bc->msg[k]);
		mdl_close(m);
	}
}

static void test_missing_files(void)
{
	ms_error err;
	mdl_model *m;
	static tlist l;
	char dir[128];
	case_dir(dir, sizeof dir, "noconfig");
	tiny_tensors(&l);
	EXPECT(open_dir(dir, NULL, &l, &m, &err) == MS_ERR_CFG_JSON && !m);
	CHECK(strstr(err.msg, "config.json"), "%s", err.msg);
	case_dir(dir, sizeof dir, "noweights");
	EXPECT(open_dir(dir, tiny_config, NULL, &m, &err) != MS_OK && !m);
	CHECK(strstr(err.msg, dir), "%s", err.msg);
	/* a valid model with a BF16 expert dtype, and totals counting every tensor */
	case_dir(dir, sizeof dir, "bf16");
	for (int i = 0; i < l.n; i++)
		if (strstr(l.t[i].name, ".experts."))
			l.t[i].dtype = "BF16";
	ms_status st = open_dir(dir, tiny_config, &l, &m, &err);
	CHECK(st == MS_OK, "%s", err.msg);
	if (m) {
		EXPECT(m->expert_dtype == ST_BF16 && m->params_experts == 2ULL * 4 * 3 * 8 * 12);
		EXPECT(m->bytes_experts == 2 * m->params_experts);
		uint64_t other = 16 * 8 + 2 * 8 + 2 * 4 * 8;   /* embedding, norms, routers */
		EXPECT(m->params_total == m->params_experts + other);
		EXPECT(m->bytes_total == m->bytes_experts + 4 * other);
		float up[12 * 8];
		EXPECT(mdl_load_expert(m, 0, 0, NULL, up, NULL, &err) == MS_OK && up[17] == 1.0f);
		mdl_close(m);
	}
}

/* ---- calibration sets ---------------------------------------------------------------------------------------- */

typedef struct {
	const char *name;
	int64_t T[2];            /* tokens of blocks 0 and 1; -1 leaves the block out */
	int width;
	const char *dtype;
	int64_t segments;        /* length of segment_ids, 0 for none */
	const char *seg_dtype;
	ms_status want;
	const char *msg[2];
} calib_case;

static const calib_case calib_cases[] = {
	{"valid", {10, 7}, 8, "F32", 0, NULL, MS_OK, {NULL}},
	{"valid BF16 with segments", {12, 12}, 8, "BF16", 12, "I32", MS_OK, {NULL}},
	{"wrong width", {10, 10}, 12, "F32", 0, NULL, MS_ERR_CALIB_WIDTH,
	 {"tensor 'model.layers.0.block_sparse_moe.input': width 12", "hidden size is 8"}},
	{"block missing", {10, -1}, 8, "F32", 0, NULL, MS_ERR_CALIB_MISSING,
	 {"tensor 'model.layers.1.block_sparse_moe.input' missing", "block 1"}},
	{"zero tokens", {10, 0}, 8, "F32", 0, NULL, MS_ERR_CALIB_EMPTY,
	 {"'model.layers.1.block_sparse_moe.input'", "no tokens"}},
	{"integer inputs", {10, 10}, 8, "I32", 0, NULL, MS_ERR_ST_DTYPE, {"block_sparse_moe.input", "dtype I32"}},
	{"segments too short", {10, 10}, 8, "F32", 9, "I32", MS_ERR_CALIB_WIDTH, {"segment_ids", "[10]"}},
	{"segments of floats", {10, 10}, 8, "F32", 10, "F32", MS_ERR_ST_DTYPE, {"segment_ids", "dtype F32"}},
};

static void check_valid_calib(const calib_case *cc, calib *c)
{
	for (int b = 0; b < 2; b++)
		CHECK(calib_tokens(c, b) == cc->T[b], "%s: block %d", cc->name, b);
	EXPECT(calib_has_segments(c) == (cc->segments > 0));
	float *x = malloc((size_t)cc->T[1] * 8 * sizeof *x);
	ms_error err;
	CHECK(calib_load(c, 1, x, &err) == MS_OK, "%s", err.msg);
	if (strcmp(cc->dtype, "BF16") == 0)
		EXPECT(x[0] == 1.0f && x[cc->T[1] * 8 - 1] == 1.0f);
	else  /* write_values with tensor index 1 (block 1 is the second tensor written) */
		EXPECT(x[3] == (float)((int)((3 * 7 + 13) % 97) - 48) / 64.0f);
	free(x);
	if (cc->segments) {
		int32_t seg[12];
		CHECK(calib_load_segments(c, seg, cc->segments, &err) == MS_OK, "%s", err.msg);
		EXPECT(seg[0] == 0 && seg[5] == 1 && seg[11] == 2);
		EXPECT(calib_load_segments(c, seg, cc->segments - 1, &err) == MS_ERR_ARG);
	}
}

static void test_calib(void)
{
	static tlist l;
	char dir[128], path[192];
	ms_error err;
	mdl_model *m;
	case_dir(dir, sizeof dir, "calib-model");
	tiny_tensors(&l);
	CHECK(open_dir(dir, tiny_config, &l, &m, &err) == MS_OK, "%s", err.msg);
	if (!m)
		return;
	for (size_t i = 0; i < sizeof calib_cases / sizeof calib_cases[0]; i++) {
		const calib_case *cc = &calib_cases[i];
		l.n = 0;
		for (int b = 0; b < 2; b++)
			if (cc->T[b] >= 0)
				tl_add(&l, cc->dtype, cc->T[b], cc->width, "model.layers.%d.block_sparse_moe.input", b);
		if (cc->segments)
			tl_add(&l, cc->seg_dtype, cc->segments, -1, "segment_ids");
		snprintf(path, sizeof path, "%s/calib%zu.safetensors", tmp_root, i);
		write_st(path, &l);
		calib *c = NULL;
		ms_error_clear(&err);
		ms_status st = calib_open(path, m, &c, &err);
		CHECK(st == cc->want, "%s: %s, expected %s (%s)", cc->name, ms_status_name(st), ms_status_name(cc->want),
		      err.msg);
		for (int k = 0; k < 2 && cc->msg[k]; k++)
			CHECK(strstr(err.msg, cc->msg[k]) && strstr(err.msg, path), "%s: message '%s' lacks '%s'", cc->name,
			      err.msg, cc->msg[k]);
		if (st == MS_OK && c)
			check_valid_calib(cc, c);
		EXPECT(st == MS_OK || !c);
		calib_close(c);
	}
	mdl_close(m);
}

int main(void)
{
	snprintf(tmp_root, sizeof tmp_root, "/tmp/moescope-test-model.XXXXXX");
	if (!mkdtemp(tmp_root)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_golden_model);
	RUN(test_names);
	RUN(test_golden_calib);
	RUN(test_family_layers);
	RUN(test_switch);
	RUN(test_bad_models);
	RUN(test_missing_files);
	RUN(test_calib);
	nftw(tmp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return test_summary();
}
