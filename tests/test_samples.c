/* The sample generator: determinism, every tensor the transformers classes expect, and the planted structure
 * (usage led by one expert per prototype, router-logit similarity by prototype, experts that un-permute to their
 * prototype's lead), checked by reading the written files back with io/safetensors and analysis/routing. */
#include "tests/test.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "analysis/routing.h"
#include "io/calib.h"
#include "io/model.h"
#include "io/safetensors.h"
#include "samples/samples.h"

/* What the tests know about each sample, written down from the assignment rather than taken from the generator. */
typedef struct {
	const char *name, *family;
	int E, k, P, d, f, T;
	int blocks, tensors, shards;
	int has_gate;                /* switch experts have wi/wo only */
	const char *router_suffix;
	const char *expert_stem;     /* before the expert number */
	const char *mat[3];          /* gate, up, down */
	const char *layer_stem[2];   /* tensor names of layer i start with stem, i, "." (switch: encoder, decoder) */
	int per_layer[2][4];         /* tensors under each layer prefix */
	const char *prefix[4];       /* MoE block prefixes, in the order of truth.json */
	const char *label[4];
} known_sample;

static const known_sample known[] = {
	{"mixtral-tiny", "mixtral", 8, 2, 3, 128, 256, 512, 4, 127, 1, 1, ".gate.weight", ".experts.",
	 {"w1", "w3", "w2"}, {"model.layers.", NULL}, {{31, 31, 31, 31}},
	 {"model.layers.0.block_sparse_moe", "model.layers.1.block_sparse_moe", "model.layers.2.block_sparse_moe",
	  "model.layers.3.block_sparse_moe"}, {"0", "1", "2", "3"}},
	{"olmoe-mini", "olmoe", 64, 8, 8, 256, 128, 1024, 4, 807, 2, 1, ".gate.weight", ".experts.",
	 {"gate_proj", "up_proj", "down_proj"}, {"model.layers.", NULL}, {{201, 201, 201, 201}},
	 {"model.layers.0.mlp", "model.layers.1.mlp", "model.layers.2.mlp", "model.layers.3.mlp"},
	 {"0", "1", "2", "3"}},
	{"qwen2moe-tiny", "qwen2_moe", 16, 4, 4, 128, 64, 512, 3, 201, 1, 1, ".gate.weight", ".experts.",
	 {"gate_proj", "up_proj", "down_proj"}, {"model.layers.", NULL}, {{12, 62, 62, 62}},
	 {"model.layers.1.mlp", "model.layers.2.mlp", "model.layers.3.mlp"}, {"1", "2", "3"}},
	{"switch-tiny", "switch_transformers", 8, 1, 3, 64, 128, 512, 4, 149, 1, 0, ".router.classifier.weight",
	 ".experts.expert_", {NULL, "wi", "wo"}, {"encoder.block.", "decoder.block."},
	 {{9, 23, 8, 23}, {14, 28, 13, 28}},
	 {"encoder.block.1.layer.1.mlp", "encoder.block.3.layer.1.mlp", "decoder.block.1.layer.2.mlp",
	  "decoder.block.3.layer.2.mlp"}, {"encoder.1", "encoder.3", "decoder.1", "decoder.3"}},
};
enum { N_KNOWN = sizeof known / sizeof known[0] };

static char dir1[64] = "/tmp/moescope-samples-XXXXXX";
static char dir2[64] = "/tmp/moescope-samples-XXXXXX";
static int ready;  /* both directories written */

#define NEED_SAMPLES() \
	do { \
		if (!ready) { \
			CHECK(0, "samples not written"); \
			return; \
		} \
	} while (0)

/* ---- helpers ----------------------------------------------------------------------------------------------- */

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap + 1);
	size_t got;
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			char *b = realloc(buf, 2 * cap + 1);
			if (!b) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = b;
			cap *= 2;
		}
	}
	fclose(f);
	if (buf)
		buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

static cJSON *read_json(const char *dir, const char *sample, const char *file)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s/%s", dir, sample, file);
	char *text = read_all(path, NULL);
	cJSON *j = text ? cJSON_Parse(text) : NULL;
	free(text);
	return j;
}

/* Removes dir and the files of its subdirectories (the layout the generator writes). */
static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	char path[512];
	for (struct dirent *de; (de = readdir(d));) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		struct stat sb;
		if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
			remove_tree(path);
		else
			unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Sorted names of the entries of dir, joined by '\n', into buf. */
static void list_dir(const char *dir, char *buf, size_t len)
{
	char names[32][256];
	int n = 0;
	buf[0] = '\0';
	DIR *d = opendir(dir);
	if (!d)
		return;
	for (struct dirent *de; (de = readdir(d)) && n < 32;)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			snprintf(names[n++], sizeof names[0], "%s", de->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof names[0], name_cmp);
	for (int i = 0; i < n; i++) {
		strncat(buf, names[i], len - strlen(buf) - 1);
		strncat(buf, "\n", len - strlen(buf) - 1);
	}
}

static st_file *open_st(const char *dir, const char *sample, const char *file)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s%s%s", dir, sample, file ? "/" : "", file ? file : "");
	st_file *f = NULL;
	ms_error err = {0};
	if (st_open(path, &f, &err) != MS_OK) {
		CHECK(0, "st_open %s: %s", path, err.msg);
		return NULL;
	}
	return f;
}

/* A tensor as float32 (freed by the caller), checking its shape. */
static float *load(const st_file *f, const char *name, int64_t d0, int64_t d1)
{
	const st_tensor *t = st_find(f, name);
	CHECK(t != NULL, "missing tensor %s", name);
	if (!t)
		return NULL;
	CHECK(t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1, "%s: shape [%lld, %lld], wanted [%lld, %lld]",
	      name, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)d0, (long long)d1);
	if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1)
		return NULL;
	float *x = malloc((size_t)t->numel * sizeof *x);
	ms_error err = {0};
	if (x && st_read_f32(t, x, &err) != MS_OK) {
		CHECK(0, "%s: %s", name, err.msg);
		free(x);
		return NULL;
	}
	return x;
}

static void expert_name(const known_sample *ks, const char *prefix, int e, int m, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%d.%s.weight", prefix, ks->expert_stem, e, ks->mat[m]);
}

/* Block b of truth.json: its prototype and lead arrays into ints. */
typedef struct {
	const char *label, *prefix;
	int prototype[64], lead[8];
	const cJSON *perm;
} truth_block;

static int read_truth_block(const cJSON *truth, const known_sample *ks, int b, truth_block *tb)
{
	const cJSON *blk = cJSON_GetArrayItem(cJSON_GetObjectItem(truth, "blocks"), b);
	const cJSON *proto = cJSON_GetObjectItem(blk, "prototype"), *lead = cJSON_GetObjectItem(blk, "lead");
	tb->label = cJSON_GetStringValue(cJSON_GetObjectItem(blk, "label"));
	tb->prefix = cJSON_GetStringValue(cJSON_GetObjectItem(blk, "prefix"));
	tb->perm = cJSON_GetObjectItem(blk, "permutation");
	if (!tb->label || !tb->prefix || cJSON_GetArraySize(proto) != ks->E || cJSON_GetArraySize(lead) != ks->P ||
	    cJSON_GetArraySize(tb->perm) != ks->E)
		return -1;
	for (int e = 0; e < ks->E; e++)
		tb->prototype[e] = cJSON_GetArrayItem(proto, e)->valueint;
	for (int p = 0; p < ks->P; p++)
		tb->lead[p] = cJSON_GetArrayItem(lead, p)->valueint;
	return 0;
}

/* ---- tests ------------------------------------------------------------------------------------------------- */

static void test_write_twice_same_bytes(void)
{
	ms_error err = {0};
	CHECK(mkdtemp(dir1) && mkdtemp(dir2), "mkdtemp");
	ms_status s1 = samples_write(dir1, NULL, &err);
	CHECK(s1 == MS_OK, "%s", err.msg);
	ms_status s2 = samples_write(dir2, NULL, &err);
	CHECK(s2 == MS_OK, "%s", err.msg);
	ready = s1 == MS_OK && s2 == MS_OK;
	char l1[2048], l2[2048], path1[512], path2[512];
	list_dir(dir1, l1, sizeof l1);
	CHECK(strcmp(l1, "deepseek3-tiny\ngptoss-mxfp4\ngptoss-tiny\nmixtral-fp8\nmixtral-tiny\nolmoe-mini\n"
			 "qwen2moe-fused\nqwen2moe-tiny\n"
			 "switch-tiny\n") == 0,
	      "DIR holds:\n%s", l1);
	for (int i = 0; i < N_KNOWN; i++) {
		snprintf(path1, sizeof path1, "%s/%s", dir1, known[i].name);
		snprintf(path2, sizeof path2, "%s/%s", dir2, known[i].name);
		list_dir(path1, l1, sizeof l1);
		list_dir(path2, l2, sizeof l2);
		CHECK(strcmp(l1, l2) == 0, "%s: files differ:\n%s\nvs\n%s", known[i].name, l1, l2);
		CHECK(strstr(l1, "config.json\n") && strstr(l1, "truth.json\n") && strstr(l1, "calib.safetensors\n"),
		      "%s", l1);
		for (char *name = strtok(l1, "\n"); name; name = strtok(NULL, "\n")) {
			char f1[1024], f2[1024];
			size_t n1 = 0, n2 = 0;
			snprintf(f1, sizeof f1, "%s/%s", path1, name);
			snprintf(f2, sizeof f2, "%s/%s", path2, name);
			char *a = read_all(f1, &n1), *b = read_all(f2, &n2);
			CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0, "%s differs between runs", f1);
			free(a);
			free(b);
		}
	}
}

static void test_only_replace_and_errors(void)
{
	char dir[64] = "/tmp/moescope-samples-XXXXXX", path[512], list[2048];
	ms_error err = {0};
	CHECK(mkdtemp(dir), "mkdtemp");
	CHECK(samples_write(dir, "no-such-sample", &err) == MS_ERR_ARG, "%s", err.msg);
	CHECK(strstr(err.msg, "no-such-sample") != NULL, "%s", err.msg);
	snprintf(path, sizeof path, "%s/sub/dir", dir);
	CHECK(samples_write(path, "switch-tiny", &err) == MS_OK, "%s", err.msg);  /* creates parents */
	CHECK(samples_write(path, "switch-tiny", &err) == MS_OK, "%s", err.msg);  /* replaces its own output */
	list_dir(path, list, sizeof list);
	CHECK(strcmp(list, "switch-tiny\n") == 0, "only switch-tiny and no temporary left: %s", list);
	/* a file the generator did not write is never deleted: the sample is not replaced */
	snprintf(path, sizeof path, "%s/sub/dir/switch-tiny/notes.txt", dir);
	FILE *f = fopen(path, "w");
	CHECK(f != NULL, "%s", path);
	if (f)
		fclose(f);
	snprintf(path, sizeof path, "%s/sub/dir", dir);
	CHECK(samples_write(path, "switch-tiny", &err) == MS_ERR_EXISTS, "%s", err.msg);
	CHECK(strstr(err.msg, "switch-tiny") != NULL, "%s", err.msg);
	snprintf(path, sizeof path, "%s/sub/dir/switch-tiny/notes.txt", dir);
	CHECK(access(path, F_OK) == 0, "the foreign file is kept");
	snprintf(path, sizeof path, "%s/sub/dir", dir);
	list_dir(path, list, sizeof list);
	CHECK(strcmp(list, "switch-tiny\n") == 0, "temporary removed after failure: %s", list);
	/* DIR that is a file */
	snprintf(path, sizeof path, "%s/sub/dir/switch-tiny/notes.txt", dir);
	CHECK(samples_write(path, "switch-tiny", &err) != MS_OK, "DIR is a file");
	CHECK(strstr(err.msg, "notes.txt") != NULL, "%s", err.msg);
	remove_tree(dir);
}

/* Presence, shape and dtype of a named tensor. */
static void expect_tensor(const st_file *f, const char *name, int64_t d0, int64_t d1)
{
	const st_tensor *t = st_find(f, name);
	CHECK(t != NULL, "missing %s", name);
	if (!t)
		return;
	int ndim = d1 ? 2 : 1;
	CHECK(t->dtype == ST_BF16 && t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1),
	      "%s: ndim %d shape [%lld, %lld]", name, t->ndim, (long long)t->shape[0],
	      (long long)(t->ndim > 1 ? t->shape[1] : 0));
}

static void expect_missing(const st_file *f, const char *name)
{
	CHECK(st_find(f, name) == NULL, "unexpected %s", name);
}

/* The non-expert tensors of each class, spot-checked with their shapes. */
static void expect_family_tensors(const st_file *f, int i)
{
	char n[256];
	if (i == 3) {
		expect_tensor(f, "shared.weight", 256, 64);
		expect_tensor(f, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 32, 4);
		expect_tensor(f, "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 32, 4);
		expect_missing(f, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight");
		expect_tensor(f, "encoder.block.2.layer.0.SelfAttention.q.weight", 64, 64);
		expect_tensor(f, "decoder.block.3.layer.1.EncDecAttention.o.weight", 64, 64);
		expect_tensor(f, "decoder.block.3.layer.1.layer_norm.weight", 64, 0);
		expect_tensor(f, "encoder.block.0.layer.1.mlp.wi.weight", 128, 64);
		expect_tensor(f, "decoder.block.2.layer.2.mlp.wo.weight", 64, 128);
		expect_tensor(f, "encoder.final_layer_norm.weight", 64, 0);
		expect_tensor(f, "decoder.final_layer_norm.weight", 64, 0);
		expect_missing(f, "lm_head.weight");  /* tied to shared.weight */
		return;
	}
	int64_t d = known[i].d, V = 256, q = d, kv = i == 1 ? d : d / 2;
	expect_tensor(f, "model.embed_tokens.weight", V, d);
	expect_tensor(f, "model.norm.weight", d, 0);
	expect_tensor(f, "lm_head.weight", V, d);
	for (int l = 0; l < 4; l++) {
		snprintf(n, sizeof n, "model.layers.%d.self_attn.k_proj.weight", l);
		expect_tensor(f, n, kv, d);
		snprintf(n, sizeof n, "model.layers.%d.self_attn.o_proj.weight", l);
		expect_tensor(f, n, d, q);
		snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
		expect_tensor(f, n, d, 0);
		snprintf(n, sizeof n, "model.layers.%d.self_attn.q_norm.weight", l);
		(i == 1 ? expect_tensor(f, n, q, 0) : expect_missing(f, n));
		snprintf(n, sizeof n, "model.layers.%d.self_attn.k_proj.bias", l);
		(i == 2 ? expect_tensor(f, n, kv, 0) : expect_missing(f, n));
	}
	if (i == 1)
		expect_tensor(f, "model.layers.2.self_attn.k_norm.weight", kv, 0);
	if (i != 2)
		return;
	expect_tensor(f, "model.layers.0.mlp.gate_proj.weight", 256, 128);
	expect_tensor(f, "model.layers.0.mlp.down_proj.weight", 128, 256);
	expect_missing(f, "model.layers.0.mlp.gate.weight");
	expect_tensor(f, "model.layers.3.mlp.shared_expert.up_proj.weight", 128, 128);
	expect_tensor(f, "model.layers.3.mlp.shared_expert_gate.weight", 1, 128);
	expect_tensor(f, "model.layers.1.self_attn.q_proj.bias", q, 0);
}

static void expect_moe_tensors(const st_file *f, const known_sample *ks)
{
	char n[256];
	for (int b = 0; b < ks->blocks; b++) {
		snprintf(n, sizeof n, "%s%s", ks->prefix[b], ks->router_suffix);
		expect_tensor(f, n, ks->E, ks->d);
		for (int e = 0; e < ks->E; e++)
			for (int m = ks->has_gate ? 0 : 1; m < 3; m++) {
				expert_name(ks, ks->prefix[b], e, m, n, sizeof n);
				expect_tensor(f, n, m == 2 ? ks->d : ks->f, m == 2 ? ks->f : ks->d);
			}
		if (!ks->has_gate) {
			snprintf(n, sizeof n, "%s.experts.expert_0.wg.weight", ks->prefix[b]);
			expect_missing(f, n);
		}
	}
}

/* In name order the data offsets increase within a shard and the shards follow one another: the file order is
 * the name order. */
static void expect_name_order(const st_file *f)
{
	const char *path = NULL;
	uint64_t last = 0;
	int changes = 0;
	for (size_t i = 0; i < st_count(f); i++) {
		const st_tensor *t = st_get(f, i);
		if (path && strcmp(path, t->path) == 0)
			CHECK(t->file_offset > last, "%s out of name order", t->name);
		else if (path)
			changes++;
		path = t->path;
		last = t->file_offset;
	}
	CHECK(changes == (int)st_shard_count(f) - 1, "shards interleaved: %d changes", changes);
}

static void expect_layer_counts(const st_file *f, const known_sample *ks)
{
	for (int s = 0; s < 2 && ks->layer_stem[s]; s++)
		for (int l = 0; l < 4; l++) {
			char pre[64];
			snprintf(pre, sizeof pre, "%s%d.", ks->layer_stem[s], l);
			int n = 0;
			for (size_t i = 0; i < st_count(f); i++)
				n += strncmp(st_get(f, i)->name, pre, strlen(pre)) == 0;
			CHECK(n == ks->per_layer[s][l], "%s %s*: %d tensors, wanted %d", ks->name, pre, n,
			      ks->per_layer[s][l]);
		}
}

static void test_tensors_of_each_family(void)
{
	NEED_SAMPLES();
	for (int i = 0; i < N_KNOWN; i++) {
		st_file *f = open_st(dir1, known[i].name, NULL);
		if (!f)
			continue;
		CHECK(st_count(f) == (size_t)known[i].tensors, "%s: %zu tensors, wanted %d", known[i].name, st_count(f),
		      known[i].tensors);
		CHECK(st_shard_count(f) == (size_t)known[i].shards, "%s: %zu shards", known[i].name, st_shard_count(f));
		expect_layer_counts(f, &known[i]);
		expect_moe_tensors(f, &known[i]);
		expect_family_tensors(f, i);
		expect_name_order(f);
		st_close(f);
	}
	char path[512];
	snprintf(path, sizeof path, "%s/olmoe-mini/model.safetensors.index.json", dir1);
	CHECK(access(path, F_OK) == 0, "olmoe-mini has an index");
	snprintf(path, sizeof path, "%s/olmoe-mini/model-00002-of-00002.safetensors", dir1);
	CHECK(access(path, F_OK) == 0, "olmoe-mini has two shards");
}

/* Norm weights near 1, attention weights small, experts and router finite and not all zero. */
static void test_value_ranges(void)
{
	NEED_SAMPLES();
	st_file *f = open_st(dir1, "mixtral-tiny", NULL);
	if (!f)
		return;
	float *norm = malloc(128 * sizeof *norm), *q = load(f, "model.layers.1.self_attn.q_proj.weight", 128, 128);
	ms_error err = {0};
	CHECK(norm && st_read_f32(st_find(f, "model.layers.2.input_layernorm.weight"), norm, &err) == MS_OK, "%s", err.msg);
	double mean = 0.0, qmax = 0.0, qss = 0.0;
	for (int i = 0; norm && i < 128; i++)
		mean += norm[i] / 128.0;
	for (int i = 0; q && i < 128 * 128; i++) {
		qmax = fmax(qmax, fabs(q[i]));
		qss += (double)q[i] * q[i];
	}
	CHECK(fabs(mean - 1.0) < 0.01, "norm mean %g", mean);
	CHECK(qmax < 0.2 && qss > 0.0, "attention max |w| %g", qmax);
	free(norm);
	free(q);
	st_close(f);
}

static void test_config_json(void)
{
	NEED_SAMPLES();
	static const char *const arch[] = {"MixtralForCausalLM", "OlmoeForCausalLM", "Qwen2MoeForCausalLM",
					   "SwitchTransformersForConditionalGeneration"};
	static const char *const efield[] = {"num_local_experts", "num_experts", "num_experts", "num_experts"};
	for (int i = 0; i < N_KNOWN; i++) {
		cJSON *c = read_json(dir1, known[i].name, "config.json");
		CHECK(c != NULL, "%s: config.json parses", known[i].name);
		if (!c)
			continue;
		const char *mt = cJSON_GetStringValue(cJSON_GetObjectItem(c, "model_type"));
		const char *a0 = cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "architectures"), 0));
		const char *dt = cJSON_GetStringValue(cJSON_GetObjectItem(c, "torch_dtype"));
		CHECK(mt && strcmp(mt, known[i].family) == 0, "%s", known[i].name);
		CHECK(a0 && strcmp(a0, arch[i]) == 0, "%s", known[i].name);
		CHECK(dt && strcmp(dt, "bfloat16") == 0, "%s", known[i].name);
		CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(c, efield[i])) == known[i].E, "%s", known[i].name);
		CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(c, "vocab_size")) == 256, "%s", known[i].name);
		if (i < 3)
			CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(c, "num_experts_per_tok")) == known[i].k &&
			      cJSON_GetNumberValue(cJSON_GetObjectItem(c, "hidden_size")) == known[i].d, "%s",
			      known[i].name);
		if (i == 2)
			CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(c, "mlp_only_layers")) == 1 &&
			      cJSON_GetNumberValue(cJSON_GetObjectItem(c, "moe_intermediate_size")) == 64, "qwen2_moe fields");
		if (i == 3)
			CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(c, "num_sparse_encoder_layers")) == 2 &&
			      cJSON_GetNumberValue(cJSON_GetObjectItem(c, "d_model")) == 64 &&
			      cJSON_IsTrue(cJSON_GetObjectItem(c, "tie_word_embeddings")), "switch fields");
		cJSON_Delete(c);
	}
}

static void test_calibration_file(void)
{
	NEED_SAMPLES();
	for (int i = 0; i < N_KNOWN; i++) {
		const known_sample *ks = &known[i];
		st_file *f = open_st(dir1, ks->name, "calib.safetensors");
		if (!f)
			continue;
		const char *fmt = st_metadata(f, "format");
		CHECK(fmt && strcmp(fmt, "moescope-calib") == 0, "%s: format %s", ks->name, fmt ? fmt : "(none)");
		CHECK(st_count(f) == (size_t)ks->blocks + 2, "%s: %zu tensors", ks->name, st_count(f));
		for (int b = 0; b < ks->blocks; b++) {
			char n[256];
			snprintf(n, sizeof n, "%s.input", ks->prefix[b]);
			const st_tensor *t = st_find(f, n);
			CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == ks->T && t->shape[1] == ks->d,
			      "%s", n);
		}
		const st_tensor *tok = st_find(f, "token_ids"), *seg = st_find(f, "segment_ids");
		CHECK(tok && tok->dtype == ST_I32 && tok->ndim == 1 && tok->shape[0] == ks->T, "%s", ks->name);
		CHECK(seg && seg->dtype == ST_I32 && seg->ndim == 1 && seg->shape[0] == ks->T, "%s", ks->name);
		int ok = tok && seg && tok->nbytes == 4 * (uint64_t)ks->T && seg->nbytes == 4 * (uint64_t)ks->T, last = 0;
		for (int t = 0; ok && t < ks->T; t++) {
			int32_t v, s;
			memcpy(&v, (const char *)tok->data + 4 * t, 4);
			memcpy(&s, (const char *)seg->data + 4 * t, 4);
			CHECK(v >= 0 && v < 256 && s >= last && s <= last + 1 && s < 8, "%s: token %d", ks->name, t);
			last = s;
		}
		CHECK(last == 7, "%s: 8 segments", ks->name);
		st_close(f);
	}
}

/* Router R [E, d] and calibration X [T, d] of block b, and its truth. */
typedef struct {
	float *router, *x;
	truth_block tb;
} block_data;

static int load_block(st_file *model, st_file *cal, const cJSON *truth, const known_sample *ks, int b,
		      block_data *bd)
{
	memset(bd, 0, sizeof *bd);
	int bad = read_truth_block(truth, ks, b, &bd->tb);
	CHECK(!bad, "%s: truth.json block %d", ks->name, b);
	if (bad)
		return -1;
	CHECK(strcmp(bd->tb.prefix, ks->prefix[b]) == 0 && strcmp(bd->tb.label, ks->label[b]) == 0,
	      "%s block %d: %s %s", ks->name, b, bd->tb.label, bd->tb.prefix);
	char n[256];
	snprintf(n, sizeof n, "%s%s", ks->prefix[b], ks->router_suffix);
	bd->router = load(model, n, ks->E, ks->d);
	snprintf(n, sizeof n, "%s.input", ks->prefix[b]);
	bd->x = load(cal, n, ks->T, ks->d);
	return bd->router && bd->x ? 0 : -1;
}

static void free_block(block_data *bd)
{
	free(bd->router);
	free(bd->x);
}

/* The P most used experts (top-k frequency, ties to the lower index) are the leads, one per prototype; every
 * non-lead is used less than every lead; some prototypes are far more popular than others. */
static void check_usage(const known_sample *ks, const block_data *bd, const char *label)
{
	int64_t T = ks->T;
	float *z = malloc((size_t)T * ks->E * sizeof *z);
	int *idx = malloc((size_t)T * ks->k * sizeof *idx);
	double freq[64], proto_use[8] = {0};
	mdl_routing r = {.top_k = ks->k, .renormalize = 0, .scale = 1.0f};
	CHECK(z && idx && route_logits(bd->x, T, ks->d, bd->router, ks->E, z) == MS_OK &&
	      route_topk(z, T, ks->E, &r, idx, NULL) == MS_OK &&
	      route_stats(idx, T, ks->E, ks->k, freq, NULL, NULL, NULL) == MS_OK, "routing");
	int order[64], is_lead[64] = {0};
	for (int e = 0; e < ks->E; e++) {
		order[e] = e;
		proto_use[bd->tb.prototype[e]] += freq[e];
	}
	for (int p = 0; p < ks->P; p++)
		is_lead[bd->tb.lead[p]] = 1;
	for (int i = 1; i < ks->E; i++)  /* insertion sort: descending frequency, ties to the lower index */
		for (int j = i; j > 0 && freq[order[j]] > freq[order[j - 1]]; j--) {
			int t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	int seen[8] = {0};
	for (int g = 0; g < ks->P; g++) {
		int e = order[g];
		CHECK(is_lead[e] && !seen[bd->tb.prototype[e]], "%s %s: rank %d is expert %d (f %.4f), not a lead",
		      ks->name, label, g, e, freq[e]);
		seen[bd->tb.prototype[e]] = 1;
	}
	double pmax = 0.0, pmin = 1.0;
	for (int p = 0; p < ks->P; p++) {
		pmax = fmax(pmax, proto_use[p]);
		pmin = fmin(pmin, proto_use[p]);
	}
	double lead_min = 1.0, other_max = 0.0;
	for (int e = 0; e < ks->E; e++) {
		if (is_lead[e])
			lead_min = fmin(lead_min, freq[e]);
		else
			other_max = fmax(other_max, freq[e]);
	}
	printf("  %s %s: usage of leads >= %.4f, of other experts <= %.4f; prototypes %.3f..%.3f\n", ks->name, label,
	       lead_min, other_max, pmin, pmax);
	CHECK(pmax > 3.0 * pmin, "%s %s: prototype usage %.3f..%.3f is not imbalanced", ks->name, label, pmin, pmax);
	free(z);
	free(idx);
}

static double column_cos(const float *z, int64_t T, int E, int a, int b)
{
	double ab = 0.0, aa = 0.0, bb = 0.0;
	for (int64_t t = 0; t < T; t++) {
		ab += (double)z[t * E + a] * z[t * E + b];
		aa += (double)z[t * E + a] * z[t * E + a];
		bb += (double)z[t * E + b] * z[t * E + b];
	}
	return ab / fmax(sqrt(aa * bb), 1e-7);
}

/* Router-logit cosine (the M-SMoE similarity): every within-prototype pair above every across-prototype pair. */
static void check_logit_similarity(const known_sample *ks, const block_data *bd, const char *label)
{
	float *z = malloc((size_t)ks->T * ks->E * sizeof *z);
	CHECK(z && route_logits(bd->x, ks->T, ks->d, bd->router, ks->E, z) == MS_OK, "route_logits");
	double within = 1.0, across = -1.0;
	for (int a = 0; z && a < ks->E; a++)
		for (int b = a + 1; b < ks->E; b++) {
			double c = column_cos(z, ks->T, ks->E, a, b);
			if (bd->tb.prototype[a] == bd->tb.prototype[b])
				within = fmin(within, c);
			else
				across = fmax(across, c);
		}
	printf("  %s %s: router-logit cosine within prototypes >= %.4f, across <= %.4f\n", ks->name, label, within,
	       across);
	CHECK(within > across, "%s %s: within-prototype min %.4f, across max %.4f", ks->name, label, within, across);
	free(z);
}

static void test_planted_routing(void)
{
	NEED_SAMPLES();
	for (int i = 0; i < N_KNOWN; i++) {
		const known_sample *ks = &known[i];
		st_file *model = open_st(dir1, ks->name, NULL), *cal = open_st(dir1, ks->name, "calib.safetensors");
		cJSON *truth = read_json(dir1, ks->name, "truth.json");
		const char *fam = cJSON_GetStringValue(cJSON_GetObjectItem(truth, "family"));
		CHECK(fam && strcmp(fam, ks->family) == 0, "%s: truth.json family", ks->name);
		CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(truth, "blocks")) == ks->blocks, "%s", ks->name);
		for (int b = 0; model && cal && truth && b < ks->blocks; b++) {
			block_data bd;
			if (load_block(model, cal, truth, ks, b, &bd) == 0) {
				check_usage(ks, &bd, ks->label[b]);
				check_logit_similarity(ks, &bd, ks->label[b]);
			}
			free_block(&bd);
		}
		cJSON_Delete(truth);
		st_close(model);
		st_close(cal);
	}
}

/* Matrix m of expert e with its neurons put back in prototype order: row permutation[e][i] of the result is row
 * i of the stored gate/up; for down, the same with columns. */
static float *unpermuted(const st_file *f, const known_sample *ks, const truth_block *tb, int e, int m)
{
	char n[256];
	expert_name(ks, tb->prefix, e, m, n, sizeof n);
	int rows = m == 2 ? ks->d : ks->f, cols = m == 2 ? ks->f : ks->d;
	float *w = load(f, n, rows, cols), *u = malloc((size_t)rows * cols * sizeof *u);
	const cJSON *perm = cJSON_GetArrayItem(tb->perm, e);
	if (!w || !u || cJSON_GetArraySize(perm) != ks->f) {
		CHECK(0, "%s: expert %d", n, e);
		free(w);
		free(u);
		return NULL;
	}
	for (int i = 0; i < ks->f; i++) {
		int j = cJSON_GetArrayItem(perm, i)->valueint;
		CHECK(j >= 0 && j < ks->f, "permutation entry %d", j);
		if (j < 0 || j >= ks->f)
			j = i;
		for (int c = 0; m != 2 && c < ks->d; c++)
			u[(size_t)j * ks->d + c] = w[(size_t)i * ks->d + c];
		for (int r = 0; m == 2 && r < ks->d; r++)
			u[(size_t)r * ks->f + j] = w[(size_t)r * ks->f + i];
	}
	free(w);
	return u;
}

static double rel_diff(const float *a, const float *b, size_t n)
{
	double dd = 0.0, bb = 0.0;
	for (size_t i = 0; i < n; i++) {
		dd += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		bb += (double)b[i] * b[i];
	}
	return sqrt(dd / fmax(bb, 1e-30));
}

/* Un-permuted, an expert is within the noise of its prototype's lead (relative difference about
 * sqrt(2) x 5%), and far from the lead of another prototype; still permuted, it is far from its own lead. */
static void check_unpermute(const st_file *f, const known_sample *ks, const truth_block *tb)
{
	size_t n = (size_t)ks->f * ks->d;
	double worst_same = 0.0, best_other = 1e9;
	for (int m = ks->has_gate ? 0 : 1; m < 3; m++)
		for (int e = 0; e < ks->E; e++) {
			int p = tb->prototype[e], lead = tb->lead[p], other = tb->lead[(p + 1) % ks->P];
			if (e == lead)
				continue;
			float *ue = unpermuted(f, ks, tb, e, m), *ul = unpermuted(f, ks, tb, lead, m);
			float *uo = unpermuted(f, ks, tb, other, m);
			if (ue && ul && uo) {
				worst_same = fmax(worst_same, rel_diff(ue, ul, n));
				best_other = fmin(best_other, rel_diff(ue, uo, n));
			}
			free(ue);
			free(ul);
			free(uo);
		}
	printf("  %s %s: un-permuted experts within %.4f of their lead, >= %.3f from another prototype's\n", ks->name,
	       tb->label, worst_same, best_other);
	CHECK(worst_same < 0.1, "%s %s: an expert is %.3f from its lead after un-permuting", ks->name, tb->label,
	      worst_same);
	CHECK(best_other > 1.0, "%s %s: an expert is %.3f from another prototype's lead", ks->name, tb->label,
	      best_other);
}

/* Without un-permuting, an expert is as far from its lead as from an unrelated matrix: the permutation is real. */
static void check_permuted_far(const st_file *f, const known_sample *ks, const truth_block *tb)
{
	int m = 1, e = 0;
	while (e < ks->E && tb->lead[tb->prototype[e]] == e)
		e++;
	char ne[256], nl[256];
	expert_name(ks, tb->prefix, e, m, ne, sizeof ne);
	expert_name(ks, tb->prefix, tb->lead[tb->prototype[e]], m, nl, sizeof nl);
	float *we = load(f, ne, ks->f, ks->d), *wl = load(f, nl, ks->f, ks->d);
	if (we && wl)
		CHECK(rel_diff(we, wl, (size_t)ks->f * ks->d) > 1.0, "%s: permuted expert close to its lead", ne);
	free(we);
	free(wl);
}

static void test_unpermute_to_lead(void)
{
	NEED_SAMPLES();
	for (int i = 0; i < N_KNOWN; i++) {
		const known_sample *ks = &known[i];
		st_file *model = open_st(dir1, ks->name, NULL);
		cJSON *truth = read_json(dir1, ks->name, "truth.json");
		/* olmoe-mini has 4 x 64 experts: two blocks are enough there and keep the test quick */
		int nb = ks->E > 16 ? 2 : ks->blocks;
		for (int b = 0; model && truth && b < nb; b++) {
			truth_block tb;
			if (read_truth_block(truth, ks, b, &tb) != 0) {
				CHECK(0, "%s: truth.json block %d", ks->name, b);
				continue;
			}
			check_unpermute(model, ks, &tb);
			check_permuted_far(model, ks, &tb);
		}
		cJSON_Delete(truth);
		st_close(model);
	}
}

/* io/model.c accepts every sample with the sizes the assignment gives, and io/calib.c its calibration set. */
static void check_model_and_calib(const known_sample *ks, const char *path)
{
	mdl_model *m = NULL;
	calib *c = NULL;
	ms_error err = {0};
	char cpath[600];
	if (mdl_open(path, &m, &err) != MS_OK) {
		CHECK(0, "mdl_open %s: %s", path, err.msg);
		return;
	}
	CHECK(strcmp(m->model_type, ks->family) == 0 && m->n_blocks == ks->blocks && m->n_experts == ks->E &&
	      m->top_k == ks->k && m->hidden == ks->d && m->inter == ks->f && m->expert_dtype == ST_BF16,
	      "%s: %s, %d blocks, E %d, top-%d, d %d, f %d", ks->name, m->model_type, m->n_blocks, m->n_experts,
	      m->top_k, m->hidden, m->inter);
	CHECK(m->act == (ks->has_gate ? MDL_ACT_SILU_GLU : MDL_ACT_RELU), "%s: activation", ks->name);
	for (int b = 0; b < ks->blocks && b < m->n_blocks; b++)
		CHECK(mdl_find_block(m, ks->label[b]) == b && strcmp(m->blocks[b].prefix, ks->prefix[b]) == 0,
		      "%s: block %d is %s %s", ks->name, b, m->blocks[b].label, m->blocks[b].prefix);
	snprintf(cpath, sizeof cpath, "%s/calib.safetensors", path);
	if (calib_open(cpath, m, &c, &err) != MS_OK) {
		CHECK(0, "calib_open %s: %s", cpath, err.msg);
	} else {
		CHECK(calib_has_segments(c) && calib_tokens(c, m->n_blocks - 1) == ks->T, "%s: calibration", ks->name);
		calib_close(c);
	}
	mdl_close(m);
}

static void test_model_and_calib_open(void)
{
	NEED_SAMPLES();
	for (int i = 0; i < N_KNOWN; i++) {
		char path[512];
		snprintf(path, sizeof path, "%s/%s", dir1, known[i].name);
		check_model_and_calib(&known[i], path);
	}
}

int main(void)
{
	RUN(test_write_twice_same_bytes);
	RUN(test_only_replace_and_errors);
	RUN(test_tensors_of_each_family);
	RUN(test_value_ranges);
	RUN(test_config_json);
	RUN(test_calibration_file);
	RUN(test_planted_routing);
	RUN(test_unpermute_to_lead);
	RUN(test_model_and_calib_open);
	remove_tree(dir1);
	remove_tree(dir2);
	return test_summary();
}
