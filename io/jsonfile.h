/* Writing a JSON document to a file safely: into PATH.tmp, every write and fclose checked, synced, then renamed
 * over PATH and its directory synced (io/durable.h), so a reader never sees half a report, nor a power cut an
 * empty one. */
#ifndef JSONF_JSONFILE_H
#define JSONF_JSONFILE_H

#include <stddef.h>

#include "io/error.h"

/* json is a cJSON * (kept opaque here so that callers need not include cJSON for this header). PATH "-" writes
 * to standard output. */
ms_status jsonf_write(const char *path, const void *json, ms_error *err);
/* A document already formatted (io/jsonedit.h), written byte for byte the same way. */
ms_status jsonf_write_bytes(const char *path, const char *text, size_t len, ms_error *err);
/* Any text (an SVG figure) the same way, a newline added. */
ms_status jsonf_write_text(const char *path, const char *text, ms_error *err);

#endif
