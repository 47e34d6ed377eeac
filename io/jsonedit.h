/* A JSON document edited in place: the original bytes are kept, and only the members a caller changes, adds or
 * removes differ. moescope rewrites a checkpoint's config.json with it, so that every field it does not touch
 * keeps its exact spelling (10000.0 stays 10000.0, 1e-06 stays 1e-06, key order, indentation and unicode escapes
 * stay as written), which a round trip through parsed numbers would not preserve.
 *
 * The document is untrusted: it must be one JSON object as RFC 8259 defines it (no NaN or Infinity, no comments,
 * no trailing commas, no raw control characters in strings, nothing but white space after it), nested at most
 * JEDIT_MAX_DEPTH deep. An object holding the same key twice is refused, with both places: Python's json keeps the
 * last value and cJSON the first, so the readers of such a file disagree on what it says. Keys are compared as
 * decoded text ("num\u005fexperts" is "num_experts"). Bytes above 0x7f pass through unchecked.
 *
 * A member is addressed by a path of keys from the top object down through nested objects, e.g. {"text_config",
 * "num_experts"}. Every edit re-checks the whole document, so the text is valid JSON after each one. */
#ifndef JEDIT_JSONEDIT_H
#define JEDIT_JSONEDIT_H

#include <stddef.h>

#include "io/error.h"

#define JEDIT_MAX_DEPTH 256

typedef struct jedit jedit;

/* Checks text [len] (copied) and returns the document. name names it in messages: "NAME: line L column C: what",
 * MS_ERR_CFG_JSON. */
ms_status jedit_parse(const char *name, const char *text, size_t len, jedit **out, ms_error *err);
void jedit_free(jedit *d);

/* The document's current bytes (not NUL-terminated beyond len; a NUL follows them). */
const char *jedit_text(const jedit *d, size_t *len);

/* The bytes of the value of the member at path [n]: 1 and its span [*start, *end) in jedit_text, or 0 when
 * there is no such member (or a key on the way is not an object). */
int jedit_find(const jedit *d, const char *const *path, int n, size_t *start, size_t *end);

/* Replaces the value of the member at path by `value`, which must be one JSON value (its text is inserted as
 * given). MS_ERR_ARG when the member does not exist. */
ms_status jedit_set(jedit *d, const char *const *path, int n, const char *value, ms_error *err);

/* Adds member key: value at the end of the object at path (n = 0: the top object), spaced like the object's
 * first member. MS_ERR_ARG when the key is already there or the path does not lead to an object. */
ms_status jedit_add(jedit *d, const char *const *path, int n, const char *key, const char *value, ms_error *err);

/* Renames the member at path to key (its value and place unchanged). MS_ERR_ARG when it does not exist or key
 * is taken. */
ms_status jedit_rename(jedit *d, const char *const *path, int n, const char *key, ms_error *err);

/* Removes the member at path and the comma that separated it. MS_ERR_ARG when it does not exist. */
ms_status jedit_remove(jedit *d, const char *const *path, int n, ms_error *err);

#endif
