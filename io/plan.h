/* The grouping plan (docs/design.md §4.1): which group every expert of every MoE block joins, and which member is the
 * group's dominant. Stored as RFC 4180 CSV, one row per expert:
 *   layer,expert,group,dominant,frequency,similarity_to_dominant,stable_rank_gate,stable_rank_up,stable_rank_down
 * group is 0..G-1, or -1 for an expert dropped by pruning. The first five columns are required on import; the
 * others are for people and are read back when present (NAN when absent or empty). */
#ifndef PLAN_PLAN_H
#define PLAN_PLAN_H

#include <stdio.h>

#include "io/error.h"

typedef struct {
	int n_blocks;
	int n_experts;
	char (*labels)[32];   /* [n_blocks]: "3", "encoder.1", as mdl_block.label */
	int *group;           /* [n_blocks * n_experts]: group of expert e of block b at b * n_experts + e; -1 dropped */
	unsigned char *dominant; /* [n_blocks * n_experts]: 1 for the dominant member of its group */
	double *frequency;    /* [n_blocks * n_experts] */
	double *similarity;   /* [n_blocks * n_experts] similarity to the group's dominant */
	double *stable_rank;  /* [n_blocks * n_experts * 3]: gate, up, down (NAN where unknown or absent) */
} plan;

/* Allocates a plan for the given blocks in which every expert is its own group and its own dominant. */
int plan_init(plan *p, int n_blocks, int n_experts, const char *const *labels);
void plan_free(plan *p);
int plan_copy(plan *dst, const plan *src);

/* Number of groups of block b (max group + 1; 0 when every expert is dropped). */
int plan_groups(const plan *p, int b);

/* Checks the plan's invariants: groups numbered 0..G-1 without holes, exactly one dominant per group, dropped
 * experts not dominant. The message names the block label and group. */
ms_status plan_validate(const plan *p, ms_error *err);

/* Writes the CSV (into path + ".tmp", synced, then renamed and its directory synced: io/durable.h), checking
 * every write and fclose. */
ms_status plan_write_csv(const char *path, const plan *p, ms_error *err);
/* Writes the CSV to an open stream (validated first; flushed, not closed). Messages name `name`. */
ms_status plan_write_csv_stream(FILE *f, const char *name, const plan *p, ms_error *err);

/* Reads a CSV for a model whose blocks carry `labels`. Every problem gives its own status and a message
 * "PATH: line L, column C: ..." for the first one found: bad CSV, wrong header, text in a number, unknown layer,
 * expert out of range, an expert listed twice or missing, groups not numbered 0..G-1, a group without exactly one
 * dominant. */
ms_status plan_read_csv(const char *path, int n_blocks, int n_experts, const char *const *labels, plan *out,
			ms_error *err);

/* The same reader on the bytes buf [len] (no NUL needed), for a plan held in memory or embedded in another file:
 * messages read "NAME: line L, column C: ...", counting buf's first line as first_line (>= 1), so that they point
 * into the file the bytes came from. */
ms_status plan_read_csv_buffer(const char *name, long first_line, const char *buf, size_t len, int n_blocks,
			       int n_experts, const char *const *labels, plan *out, ms_error *err);

#endif
