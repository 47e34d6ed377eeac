/* The factored checkpoint's config.json (io/factors.h). */
#include "io/factors.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "io/file.h"
#include "io/model.h"

const char *const fac_suffix[FAC_NPARTS] = {"_u", "_v", "_sparse_idx", "_sparse_val"};

/* auto_map while the checkpoint is factored: renamed in place, so that densify puts it back where it was. */
#define FAC_AUTO_MAP "moescope_auto_map"

static const char *const key_model_type[] = {"model_type"};
static const char *const key_auto_map[] = {"auto_map"};
static const char *const key_parked_auto_map[] = {FAC_AUTO_MAP};
static const char *const key_entry[] = {FAC_ENTRY};
static const char *const key_entry_type[] = {FAC_ENTRY, "model_type"};

/* The text of the value at path as a new malloc'd string, or NULL. */
static char *value_text(const jedit *d, const char *const *path, int n)
{
	size_t a, b, len;
	const char *t = jedit_text(d, &len);
	return jedit_find(d, path, n, &a, &b) ? strndup(t + a, b - a) : NULL;
}

ms_status fac_mark_config(jedit *d, const char *rank_mode, double sparse_ratio, ms_error *err)
{
	char *type = value_text(d, key_model_type, 1);   /* kept as spelled, densify writes it back */
	if (!type)
		return ms_fail(err, MS_ERR_CFG_FIELD, "config.json: no model_type to mark as factored");
	size_t a, b;
	ms_status st = MS_OK;
	/* the parking place of auto_map must be free, or densify would move a key the input had back as auto_map */
	if (jedit_find(d, key_parked_auto_map, 1, &a, &b))
		st = ms_fail(err, MS_ERR_CFG_FIELD, "config.json: key '%s' is taken; moescope needs it to mark a factored "
			     "checkpoint", FAC_AUTO_MAP);
	if (st == MS_OK && jedit_find(d, key_auto_map, 1, &a, &b))
		st = jedit_rename(d, key_auto_map, 1, FAC_AUTO_MAP, err);
	if (st == MS_OK)
		st = jedit_set(d, key_model_type, 1, "\"" MDL_FACTORS_MODEL_TYPE "\"", err);
	size_t cap = strlen(type) + 512;
	char *entry = malloc(cap);
	if (!entry)
		st = ms_fail(err, MS_ERR_NOMEM, "out of memory");
	if (st == MS_OK) {
		snprintf(entry, cap, "{\"format\": \"factors\", \"model_type\": %s, \"rank_mode\": \"%s\", "
			 "\"sparse_ratio\": %.9g, \"layout\": \"W = W_u @ W_v, plus W_sparse_val at the flat row-major "
			 "indices W_sparse_idx\", \"load\": \"moescope densify DIR --out DENSE_DIR writes a stock "
			 "checkpoint\"}", type, rank_mode, sparse_ratio);
		st = jedit_add(d, NULL, 0, FAC_ENTRY, entry, err);
	}
	free(entry);
	free(type);
	return st;
}

ms_status fac_unmark_config(jedit *d, ms_error *err)
{
	size_t a, b, len;
	const char *t = jedit_text(d, &len);
	const size_t marker = strlen("\"" MDL_FACTORS_MODEL_TYPE "\"");
	if (!jedit_find(d, key_model_type, 1, &a, &b) || b - a != marker ||
	    memcmp(t + a, "\"" MDL_FACTORS_MODEL_TYPE "\"", marker) != 0)
		return ms_fail(err, MS_ERR_CFG_FIELD, "config.json: model_type is not \"%s\": not a factored checkpoint",
			       MDL_FACTORS_MODEL_TYPE);
	char *type = value_text(d, key_entry_type, 2);
	if (!type || type[0] != '"') {
		free(type);
		return ms_fail(err, MS_ERR_CFG_FIELD, "config.json: field '%s.model_type' missing or not a string",
			       FAC_ENTRY);
	}
	ms_status st = jedit_remove(d, key_entry, 1, err);
	if (st == MS_OK && jedit_find(d, key_parked_auto_map, 1, &a, &b))
		st = jedit_rename(d, key_parked_auto_map, 1, "auto_map", err);
	if (st == MS_OK)
		st = jedit_set(d, key_model_type, 1, type, err);
	free(type);
	return st;
}

int fac_probe(const char *dir, fac_info *info, ms_error *err)
{
	char path[PATH_MAX];
	char *text = NULL;
	size_t len = 0;
	struct stat sb;
	memset(info, 0, sizeof *info);
	if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path || stat(path, &sb) != 0 ||
	    !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > FAC_CONFIG_LIMIT ||
	    file_read_all(path, &text, &len, NULL) != MS_OK)
		return 0;
	cJSON *cfg = cJSON_ParseWithLength(text, len);
	free(text);
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
	if (!cJSON_IsString(type) || strcmp(type->valuestring, MDL_FACTORS_MODEL_TYPE) != 0) {
		cJSON_Delete(cfg);
		return 0;
	}
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(cfg, FAC_ENTRY);
	const cJSON *fam = cJSON_GetObjectItemCaseSensitive(e, "model_type");
	const cJSON *mode = cJSON_GetObjectItemCaseSensitive(e, "rank_mode");
	const cJSON *ratio = cJSON_GetObjectItemCaseSensitive(e, "sparse_ratio");
	int rc = 1;
	if (!cJSON_IsString(fam) || !cJSON_IsString(mode) || !cJSON_IsNumber(ratio)) {
		ms_fail(err, MS_ERR_CFG_FIELD, "%s: model_type \"%s\" but field '%s' lacks model_type, rank_mode or "
			"sparse_ratio", path, MDL_FACTORS_MODEL_TYPE, FAC_ENTRY);
		rc = -1;
	} else {
		snprintf(info->model_type, sizeof info->model_type, "%s", fam->valuestring);
		snprintf(info->rank_mode, sizeof info->rank_mode, "%s", mode->valuestring);
		info->sparse_ratio = ratio->valuedouble;
		for (char *p = info->model_type; *p; p++)
			*p = (unsigned char)*p < 0x20 ? '?' : *p;
		for (char *p = info->rank_mode; *p; p++)
			*p = (unsigned char)*p < 0x20 ? '?' : *p;
	}
	cJSON_Delete(cfg);
	return rc;
}
