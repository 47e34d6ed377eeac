/* The sample models that `make run` opens and the tests use: small, complete Hugging Face checkpoints with
 * calibration sets and planted structure (experts derived from a few prototypes with noise and a neuron
 * permutation, routers correlated within a prototype, imbalanced usage). Deterministic: the same bytes on every
 * run. Beside each model, truth.json records every expert's prototype and permutation. */
#ifndef SAMPLES_SAMPLES_H
#define SAMPLES_SAMPLES_H

#include "io/error.h"

typedef struct {
	const char *name;         /* directory name under DIR */
	const char *description;
} samples_entry;

extern const samples_entry samples_table[];
extern const int samples_count;

/* Writes DIR/NAME/{config.json, model*.safetensors, calib.safetensors, truth.json} for every sample (or only
 * `only` when not NULL). DIR is created when missing. */
ms_status samples_write(const char *dir, const char *only, ms_error *err);

#endif
