/* Token id files: decimal ids, one sequence per line, spaces, tabs or commas between ids. Sequences longer than
 * seq_len are split into pieces of seq_len (the last shorter), each its own sequence: positions restart. */
#ifndef TOK_TOKENS_H
#define TOK_TOKENS_H

#include <stdint.h>

#include "io/error.h"

typedef struct {
	int64_t T;              /* tokens */
	int32_t *ids;           /* [T] */
	int n_seq;
	int64_t *seq_start;     /* [n_seq + 1]: sequence i is ids[seq_start[i] .. seq_start[i + 1]) */
} tok_set;

/* Reads path. Every id must be below vocab; at most max_tokens are kept (all when max_tokens <= 0), the last
 * sequence cut short. Messages name the file, the line and the column: a field that is not a decimal id, an id
 * outside the vocabulary, a file without ids. */
ms_status tokset_read_ids(const char *path, int vocab, int seq_len, int64_t max_tokens, tok_set *out, ms_error *err);
/* The same from ids already in memory (a tokenized text): one stream split into sequences of seq_len; name is
 * what messages call the source. */
ms_status tokset_from_ids(const char *name, const int32_t *ids, int64_t n, int vocab, int seq_len,
			  int64_t max_tokens, tok_set *out, ms_error *err);
void tokset_free(tok_set *s);

#endif
