/* Fuzz target: mdl_open on a directory whose config.json is the input and whose model.safetensors is a small fixed
 * valid file, written once. The file holds one MoE block of 2 experts (d = 4, f = 4, F32) under the tensor names of
 * every family (mixtral, the mlp.experts families, switch encoder and decoder), so that a config of any family can
 * open. Properties: an opened model's blocks are found by label and their router and experts load. */
#include "io/model.h"

#include "tests/fuzz/fuzz_common.h"

#define FZ_E 2
#define FZ_D 4
#define FZ_F 4

/* Tensor names of the fixed model; every tensor is [4, 4] except the routers, [2, 4]. */
static const char *const routers[] = {
	"model.layers.0.block_sparse_moe.gate.weight",
	"model.layers.0.mlp.gate.weight",
	"encoder.block.1.layer.1.mlp.router.classifier.weight",
	"decoder.block.1.layer.2.mlp.router.classifier.weight",
};
/* Expert tensors: prefix, expert index, suffix. */
static const char *const expert_names[][2] = {
	{ "model.layers.0.block_sparse_moe.experts.", ".w1.weight" },
	{ "model.layers.0.block_sparse_moe.experts.", ".w2.weight" },
	{ "model.layers.0.block_sparse_moe.experts.", ".w3.weight" },
	{ "model.layers.0.mlp.experts.", ".gate_proj.weight" },
	{ "model.layers.0.mlp.experts.", ".up_proj.weight" },
	{ "model.layers.0.mlp.experts.", ".down_proj.weight" },
	{ "encoder.block.1.layer.1.mlp.experts.expert_", ".wi.weight" },
	{ "encoder.block.1.layer.1.mlp.experts.expert_", ".wo.weight" },
	{ "decoder.block.1.layer.2.mlp.experts.expert_", ".wi.weight" },
	{ "decoder.block.1.layer.2.mlp.experts.expert_", ".wo.weight" },
};

#define FZ_NROUTERS (sizeof routers / sizeof routers[0])
#define FZ_NPATTERNS (sizeof expert_names / sizeof expert_names[0])

/* Appends the header entry of tensor `name` [rows, FZ_D] at *offset. Names are sorted by the reader, so the order
 * here only fixes the data layout. */
static void header_entry(char *hdr, size_t cap, const char *name, int rows, size_t *offset)
{
	const size_t bytes = (size_t)rows * FZ_D * sizeof(float);
	size_t len = strlen(hdr);
	snprintf(hdr + len, cap - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
		 hdr[1] ? "," : "", name, rows, FZ_D, *offset, *offset + bytes);
	*offset += bytes;
}

/* safetensors by hand (8-byte little-endian header length, JSON padded with spaces to 8 bytes, data), so that
 * this target does not depend on the writer it may one day be used to check. */
static void write_fixed_model(const char *path)
{
	static char hdr[8192];
	size_t offset = 0;
	char name[128];
	strcpy(hdr, "{");
	for (size_t r = 0; r < FZ_NROUTERS; r++)
		header_entry(hdr, sizeof hdr, routers[r], FZ_E, &offset);
	for (size_t p = 0; p < FZ_NPATTERNS; p++)
		for (int e = 0; e < FZ_E; e++) {
			snprintf(name, sizeof name, "%s%d%s", expert_names[p][0], e, expert_names[p][1]);
			header_entry(hdr, sizeof hdr, name, FZ_F, &offset);
		}
	strcat(hdr, "}");
	while (strlen(hdr) % 8)
		strcat(hdr, " ");
	const uint64_t n = strlen(hdr);
	unsigned char len8[8];
	for (int k = 0; k < 8; k++)
		len8[k] = (unsigned char)(n >> (8 * k));
	float *x = malloc(offset); /* [offset / 4]: small distinct values */
	for (size_t k = 0; k < offset / sizeof *x; k++)
		x[k] = (float)((int)(k % 17) - 8) / 16.0f;
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(len8, 1, 8, f) != 8 || fwrite(hdr, 1, n, f) != n || fwrite(x, 1, offset, f) != offset ||
	    fclose(f) != 0)
		fz_fail("cannot write the fixed model", path);
	free(x);
}

static void exercise(const mdl_model *m)
{
	ms_error err;
	char name[512];
	const size_t rsize = (size_t)m->n_experts * (size_t)m->hidden, esize = (size_t)m->inter * (size_t)m->hidden;
	if (m->n_experts <= 0 || m->hidden <= 0 || m->inter <= 0 || rsize > FZ_MAX_FLOATS || esize > FZ_MAX_FLOATS)
		fz_fail("an opened model has impossible dimensions", m->model_type);
	float *router = malloc(rsize * sizeof *router), *w = malloc(3 * esize * sizeof *w); /* [E, d]; [3, f, d] */
	for (int b = 0; b < m->n_blocks; b++) {
		if (mdl_find_block(m, m->blocks[b].label) != b)
			fz_fail("a block is not found by its label", m->blocks[b].label);
		if (mdl_router_name(m, b, name, sizeof name) || !st_find(m->st, name))
			fz_fail("the router name is not a tensor of the model", name);
		if (mdl_load_router(m, b, router, &err))
			fz_fail("the router of an opened model does not load", err.msg);
		for (int e = 0; e < m->n_experts; e++)
			if (mdl_expert_name(m, b, e, MDL_UP, name, sizeof name) ||
			    mdl_load_expert(m, b, e, w, w + esize, w + 2 * esize, &err))
				fz_fail("an expert of an opened model does not load", err.msg);
	}
	free(router);
	free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	fz_init();
	if (!ready) {
		write_fixed_model(fz_path("model.safetensors"));
		ready = 1;
	}
	fz_write(fz_path("config.json"), data, size);
	mdl_model *m = NULL;
	ms_error err;
	ms_status st = mdl_open(fz_dir, &m, &err);
	if (st) {
		fz_check_error(st, &err, fz_dir);
		return 0;
	}
	fz_note(st, &err);
	exercise(m);
	mdl_close(m);
	return 0;
}
