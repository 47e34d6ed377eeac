/* The search's figure as SVG (pipeline/search.h: srch_chart_svg), one writer for `moescope search --svg` and the
 * application's search panel. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pipeline/search.h"

/* Appends to a growing string; 0, or -1 when out of memory. */
typedef struct {
	char *s;
	size_t len, cap;
} strbuf;

__attribute__((format(printf, 2, 3))) static int sb_printf(strbuf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		const int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -1;
		if (b->s && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return 0;
		}
		const size_t cap = (b->cap + (size_t)n + 1) * 2;
		char *s = realloc(b->s, cap);
		if (!s)
			return -1;
		b->s = s;
		b->cap = cap;
	}
}

char *srch_chart_svg(const srch_result *r)
{
	enum { W = 560, H = 360, L = 70, R = 150, T = 30, B = 50 };
	static const char *const colour[SRCH_KIND_COUNT] = {"#1f77b4", "#d62728", "#2ca02c", "#7f7f7f"};
	double kmin = 1e300, kmax = -1e300, lmax = 0;
	for (int i = 0; i < r->n_cand; i++) {
		const srch_candidate *c = &r->cand[i];
		if (!c->confirmed)
			continue;
		kmin = fmin(kmin, c->kept);
		kmax = fmax(kmax, c->kept);
		lmax = fmax(lmax, c->kl);
	}
	if (kmax <= kmin) {
		kmin -= 1;
		kmax += 1;
	}
	if (lmax <= 0)
		lmax = 1;
	const double pw = W - L - R, ph = H - T - B;
	strbuf b = {0};
	int bad = sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
				"font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
				"fill=\"white\"/>\n", W, H);
	bad |= sb_printf(&b, "<text x=\"%d\" y=\"18\">KL(original || merged) on held-out tokens, budget %d of %d "
			 "experts</text>\n", L, r->keep, r->n_blocks * r->n_experts);
	bad |= sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n<line x1=\"%d\" "
			 "y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, T, L, H - B, L, H - B, W - R, H - B);
	bad |= sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">experts kept</text>\n", L + (int)pw / 2,
			 H - 12);
	bad |= sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.0f</text><text x=\"%d\" y=\"%d\" "
			 "text-anchor=\"end\">%.0f</text>\n", L + 8, H - B + 16, kmin, W - R, H - B + 16, kmax);
	bad |= sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text><text x=\"%d\" y=\"%d\" "
			 "text-anchor=\"end\">%.3g</text>\n", L - 6, H - B, L - 6, T + 4, lmax);
	for (int i = 0; i < r->n_cand; i++) {
		const srch_candidate *c = &r->cand[i];
		if (!c->confirmed)
			continue;
		const double x = L + 10 + (pw - 20) * (c->kept - kmin) / (kmax - kmin), y = H - B - ph * c->kl / lmax;
		bad |= sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>%s %d experts KL "
				 "%.6g</title></circle>\n", x, y, colour[c->kind], srch_kind_name(c->kind), c->kept, c->kl);
		if (i == r->best)
			bad |= sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"8\" fill=\"none\" stroke=\"black\"/>\n",
					 x, y);
	}
	for (int k = 0; k < SRCH_KIND_COUNT; k++)
		bad |= sb_printf(&b, "<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">%s</text>\n",
				 W - R + 20, T + 10 + 18 * k, colour[k], W - R + 30, T + 14 + 18 * k, srch_kind_name(k));
	bad |= sb_printf(&b, "<circle cx=\"%d\" cy=\"%d\" r=\"8\" fill=\"none\" stroke=\"black\"/><text x=\"%d\" "
			 "y=\"%d\">returned</text>\n</svg>", W - R + 20, T + 10 + 18 * SRCH_KIND_COUNT, W - R + 30,
			 T + 14 + 18 * SRCH_KIND_COUNT);
	if (bad) {
		free(b.s);
		return NULL;
	}
	return b.s;
}

