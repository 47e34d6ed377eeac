/* Synthetic MoE checkpoints of real shapes for `make bench` and bench/bigmodel.sh: deterministic (the same bytes on
 * every run and machine), written tensor by tensor through io/safetensors' streaming writer so that a 12 GB model
 * never sits in memory, and with structure an analysis can find.
 *
 * Every value is a pure function of (tensor, row, column) through a counter-based hash (splitmix64's finaliser),
 * so any row can be produced alone and in any order. The experts of a block are noisy, neuron-permuted copies of
 * a few prototypes (expert e copies prototype e mod P), and each prototype carries a rank-one spike of twice the
 * noise's top singular value, so stable ranks are far below full rank, as in trained experts:
 *   gate, up [f, d]:  w[i][j] = s (a U_p[pi(i)][j] + b U_e[i][j]) + k u_p[pi(i)] v_p[j]
 *   down [d, f]:      w[i][j] = s (a U_p[i][pi(j)] + b U_e[i][j]) + k u_p[i] v_p[pi(j)]
 * with U uniform in [-1, 1), a = 0.8, b = 0.6, pi = expert e's permutation of its f neurons, u, v unit vectors.
 * Routers lean towards their prototype; calibration tokens come from skewed clusters, so usage is imbalanced. */
#ifndef SYN_SYNTH_H
#define SYN_SYNTH_H

#include <stdint.h>

#include "io/error.h"

typedef struct {
	const char *name;         /* "olmoe", "mixtral": also the family's model_type */
	int E, top_k, d, f;
	int layers;               /* decoder layers, each an MoE block */
	int64_t T;                /* calibration tokens per block */
	int prototypes;           /* P: experts are noisy permuted copies of this many prototypes */
	int full;                 /* also write embeddings, attention and norms (what a real checkpoint holds) */
	int vocab;                /* with full: embedding rows */
} syn_shape;

/* The two shapes docs/design.md §7 names, one block each and 4096 calibration tokens. */
syn_shape syn_olmoe(void);
syn_shape syn_mixtral(void);

/* Tensor names of the family (mixtral or olmoe); 0, or -1 when buf is too small. */
int syn_router_name(const syn_shape *s, int layer, char *buf, size_t len);
int syn_expert_name(const syn_shape *s, int layer, int e, int mat, char *buf, size_t len);

/* Writes DIR/config.json and the weights (DIR/model.safetensors, or shards of at most max_shard bytes and an
 * index; max_shard 0 means one file) in BF16. DIR must exist. */
ms_status syn_write_model(const char *dir, const syn_shape *s, uint64_t max_shard, ms_error *err);

/* Writes DIR/calib.safetensors: every block's "<prefix>.input" [T, d] in BF16. */
ms_status syn_write_calib(const char *dir, const syn_shape *s, ms_error *err);

/* Bytes syn_write_model writes for the tensors (headers aside). */
uint64_t syn_model_bytes(const syn_shape *s);

#endif
