/* `moescope tokenize TOKENIZER --text FILE [--special] [--decode] [--skip-special]`: the ids of a text file as
 * Hugging Face tokenizers gives them for a model's tokenizer.json, or, with --decode, the text of a file of
 * ids. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"
#include "io/file.h"
#include "cli/cli.h"
#include "cli/commands.h"

/* Ids separated by whitespace or commas (a JSON list's brackets are accepted too). */
static ms_status parse_ids(const char *path, const char *s, int32_t **ids, size_t *n, ms_error *err)
{
	size_t cap = 256, k = 0, line = 1;
	int32_t *v = malloc(cap * sizeof *v);
	if (!v)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
	while (*s) {
		if (*s == '\n')
			line++;
		if (strchr(" \t\r\n,[]", *s)) {
			s++;
			continue;
		}
		char *end;
		errno = 0;
		long long x = strtoll(s, &end, 10);
		if (end == s || errno || x < 0 || x > INT32_MAX || !(*end == 0 || strchr(" \t\r\n,[]", *end))) {
			free(v);
			return ms_fail(err, MS_ERR_ARG, "%s: line %zu: '%.20s' is not a token id", path, line, s);
		}
		if (k == cap) {
			int32_t *w = realloc(v, 2 * cap * sizeof *w);
			if (!w) {
				free(v);
				return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", path);
			}
			v = w;
			cap *= 2;
		}
		v[k++] = (int32_t)x;
		s = end;
	}
	*ids = v;
	*n = k;
	return MS_OK;
}

static int run(const char *tok_path, const char *file, int special, int decode, int skip_special)
{
	ms_error err = {0};
	tok_tokenizer *t;
	char *data = NULL;
	size_t len = 0;
	if (tok_open(tok_path, &t, &err) != MS_OK)
		return cli_report(&err);
	if (file_read_all(file, &data, &len, &err) != MS_OK) {
		tok_free(t);
		return cli_report(&err);
	}
	int32_t *ids = NULL;
	size_t n = 0;
	ms_status rc;
	if (decode) {
		char *text = NULL;
		size_t tl = 0;
		rc = parse_ids(file, data, &ids, &n, &err);
		if (!rc)
			rc = tok_decode(t, ids, n, skip_special, &text, &tl, &err);
		if (!rc)
			fwrite(text, 1, tl, stdout);
		free(text);
	} else {
		rc = tok_encode(t, data, len, special, &ids, &n, &err);
		for (size_t i = 0; !rc && i < n; i++)
			printf(i ? " %d" : "%d", (int)ids[i]);
		if (!rc)
			putchar('\n');
	}
	free(ids);
	free(data);
	tok_free(t);
	if (rc)
		return cli_report(&err);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ms_fail(&err, MS_ERR_IO, "tokenize: cannot write to standard output");
		return cli_report(&err);
	}
	return CLI_OK;
}

int cmd_tokenize(int argc, char **argv)
{
	const char *tok = NULL, *file = NULL;
	int special = 0, decode = 0, skip = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return cli_help("tokenize");
		if (strcmp(argv[i], "--special") == 0)
			special = 1;
		else if (strcmp(argv[i], "--decode") == 0)
			decode = 1;
		else if (strcmp(argv[i], "--skip-special") == 0)
			skip = 1;
		else if (strcmp(argv[i], "--text") == 0) {
			if (i + 1 >= argc)
				return cli_usage_error("tokenize", "--text needs a FILE");
			file = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1])
			return cli_usage_error("tokenize", "unknown option '%s'", argv[i]);
		else if (tok)
			return cli_usage_error("tokenize", "one TOKENIZER only ('%s' given after '%s')", argv[i], tok);
		else
			tok = argv[i];
	}
	if (!tok)
		return cli_usage_error("tokenize", "TOKENIZER (a model directory or its tokenizer.json) missing");
	if (!file)
		return cli_usage_error("tokenize", "--text FILE missing");
	if (decode && special)
		return cli_usage_error("tokenize", "--special is for encoding; --decode keeps every id it is given");
	if (skip && !decode)
		return cli_usage_error("tokenize", "--skip-special is for --decode");
	return run(tok, file, special, decode, skip);
}
