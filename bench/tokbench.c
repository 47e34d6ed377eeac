/* `make bench` (tokenizer row): encoding throughput of text/ on a few MB of English and of mixed-script text,
 * in MB/s, for each test tokenizer given, beside Hugging Face's JavaScript tokenizers on the same files when
 * node and the package are present (tests/tokenizer/make_expected.mjs --bench). No test asserts a time.
 * Usage: tokbench DATA_DIR TOKENIZER.json... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/file.h"
#include "text/tokenizer.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The whole file, NUL-terminated (io/file.h), or NULL. */
static char *slurp(const char *path, size_t *len)
{
	char *data;
	return file_read_all(path, &data, len, NULL) == MS_OK ? data : NULL;
}

/* About `size` bytes of pieces of the given corpus texts, cut at spaces, picked by a fixed generator. */
static int make_text(const char *out, const char *const *sources, int n_src, size_t size)
{
	char *src[16];
	size_t len[16];
	for (int i = 0; i < n_src; i++)
		if (!(src[i] = slurp(sources[i], &len[i])) || len[i] < 2)
			return -1;
	FILE *f = fopen(out, "wb");
	if (!f)
		return -1;
	unsigned long long s = 88172645463325252ULL;
	size_t done = 0;
	while (done < size) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		int k = (int)(s % (unsigned)n_src);
		size_t a = (size_t)(s >> 8) % len[k], b = a + 40 + (size_t)(s >> 20) % 400;
		while (a > 0 && src[k][a - 1] != ' ' && src[k][a - 1] != '\n')
			a--; /* whole words (and whole UTF-8 characters) */
		if (b > len[k])
			b = len[k];
		while (b < len[k] && src[k][b] != ' ')
			b++;
		fwrite(src[k] + a, 1, b - a, f);
		done += b - a;
	}
	for (int i = 0; i < n_src; i++)
		free(src[i]);
	return fclose(f);
}

static double encode_mbps(const char *json, const char *text, size_t len, size_t *n_ids)
{
	tok_tokenizer *t;
	ms_error err;
	if (tok_open(json, &t, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	double best = 1e30;
	for (int r = 0; r < 3; r++) {
		int32_t *ids;
		double t0 = now();
		if (tok_encode(t, text, len, 0, &ids, n_ids, &err)) {
			fprintf(stderr, "%s\n", err.msg);
			tok_free(t);
			return -1;
		}
		double dt = now() - t0;
		best = dt < best ? dt : best;
		free(ids);
	}
	tok_free(t);
	return (double)len / 1e6 / best;
}

static double js_mbps(const char *file, const char *json)
{
	char cmd[2048];
	snprintf(cmd, sizeof cmd, "command -v node >/dev/null 2>&1 && node tests/tokenizer/make_expected.mjs --bench '%s' '%s' 2>/dev/null",
	         file, json);
	FILE *p = popen(cmd, "r");
	double v = -1;
	if (p) {
		if (fscanf(p, "%lf", &v) != 1)
			v = -1;
		pclose(p);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: tokbench DATA_DIR TOKENIZER.json...\n");
		return 2;
	}
	static const char *const english[] = {"tests/tokenizer/corpus/01-prose.txt"};
	static const char *const mixed[] = {"tests/tokenizer/corpus/01-prose.txt", "tests/tokenizer/corpus/02-code.txt",
	                                    "tests/tokenizer/corpus/05-accents.txt", "tests/tokenizer/corpus/06-cjk.txt",
	                                    "tests/tokenizer/corpus/07-emoji.txt", "tests/tokenizer/corpus/08-rtl.txt",
	                                    "tests/tokenizer/corpus/11-mixed.txt"};
	char path[2][1024];
	snprintf(path[0], sizeof path[0], "%s/tok_english.txt", argv[1]);
	snprintf(path[1], sizeof path[1], "%s/tok_mixed.txt", argv[1]);
	if (make_text(path[0], english, 1, 4u << 20) || make_text(path[1], mixed, 7, 4u << 20)) {
		fprintf(stderr, "tokbench: cannot write the texts under %s (run from the repository root)\n", argv[1]);
		return 1;
	}
	printf("%-16s %-8s %8s %10s %10s %10s %8s\n", "tokenizer", "text", "MB", "ids", "C MB/s", "JS MB/s", "C/JS");
	for (int i = 2; i < argc; i++) {
		const char *name = strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i];
		for (int k = 0; k < 2; k++) {
			size_t len, n_ids = 0;
			char *text = slurp(path[k], &len);
			if (!text)
				return 1;
			double c = encode_mbps(argv[i], text, len, &n_ids), js = js_mbps(path[k], argv[i]);
			char jsb[32] = "-", ratio[32] = "-";
			if (js > 0) {
				snprintf(jsb, sizeof jsb, "%.2f", js);
				snprintf(ratio, sizeof ratio, "%.1fx", c / js);
			}
			printf("%-16s %-8s %8.2f %10zu %10.2f %10s %8s\n", name, k ? "mixed" : "english", (double)len / 1e6, n_ids, c,
			       jsb, ratio);
			fflush(stdout);
			free(text);
		}
	}
	return 0;
}
