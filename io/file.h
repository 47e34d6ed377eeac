/* Whole small files read into memory: text to tokenize, a tokenizer.json. (Checkpoints are never read this way:
 * io/safetensors.h maps them.) */
#ifndef FILE_FILE_H
#define FILE_FILE_H

#include <stddef.h>

#include "io/error.h"

/* *data = the bytes of path (malloc'd, NUL-terminated after *len bytes; the caller frees). A directory, a missing
 * file or a read error is MS_ERR_IO naming the path. */
ms_status file_read_all(const char *path, char **data, size_t *len, ms_error *err);

#endif
