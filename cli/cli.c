#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "pipeline/pipeline.h"
#include "pipeline/merge_run.h"

const char cli_threads_help[] =
	"--threads N  threads to use (default: one per core); results are bit-identical for any N";

int cli_report(const ms_error *err)
{
	const char *msg = err && err->msg[0] ? err->msg : ms_status_text(err ? err->code : MS_OK);
	/* One line whatever a file put in the message: control bytes (a newline in a tensor name) become '?'. */
	fputs("moescope: ", stderr);
	for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
		fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, stderr);
	fputc('\n', stderr);
	return CLI_USER_ERROR;
}

static const cli_command *find_command(const char *cmd)
{
	for (int i = 0; i < cli_command_count; i++)
		if (strcmp(cli_commands[i].name, cmd) == 0)
			return &cli_commands[i];
	return NULL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "moescope %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	const cli_command *c = find_command(cmd);
	if (c)
		fprintf(stderr, "usage: moescope %s\n", c->synopsis);
	return CLI_USAGE;
}

/* The options whose value is one of a table's names (io/names.h): --help lists them from the tables themselves,
 * so the help cannot fall behind a new row. */
static const struct {
	const char *option;
	const char *const *names, *const *help;
	int n;
} choices[] = {
	{"--similarity", sim_base_names, sim_base_help, SIM_BASE_COUNT},
	{"--method", grp_method_names, grp_method_help, GRP_METHOD_COUNT},
	{"--linkage", grp_linkage_names, grp_linkage_help, GRP_LINK_COUNT},
	{"--layout", pipe_layout_names, pipe_layout_help, PIPE_LAYOUT_COUNT},
	{"--router", rfit_method_names, rfit_method_help, RFIT_METHOD_COUNT},
	{"--refit", pipe_refit_names, pipe_refit_help, PIPE_REFIT_COUNT},
	{"--align", align_ref_names, align_ref_help, ALIGN_COUNT},
	{"--weighting", merge_weighting_names, merge_weighting_help, MERGE_WEIGHTING_COUNT},
	{"--compress-format", mrun_format_names, mrun_format_help, MRUN_FORMAT_COUNT},
};

/* Whether the synopsis mentions the option as a whole word ("--rank" is not "--rank-energy"). */
static int mentions(const char *synopsis, const char *option)
{
	size_t n = strlen(option);
	for (const char *p = strstr(synopsis, option); p; p = strstr(p + 1, option))
		if (p[n] == ' ' || p[n] == ']' || p[n] == '\0')
			return 1;
	return 0;
}

int cli_help(const char *cmd)
{
	const cli_command *c = find_command(cmd);
	if (!c)
		return CLI_USAGE;
	printf("usage: moescope %s\n\n%s\n\n", c->synopsis, c->summary);
	for (size_t i = 0; i < sizeof choices / sizeof choices[0]; i++) {
		if (!mentions(c->synopsis, choices[i].option))
			continue;
		printf("%s, one of:\n", choices[i].option);
		for (int k = 0; k < choices[i].n; k++)
			printf("  %-16s %s\n", choices[i].names[k], choices[i].help[k]);
		putchar('\n');
	}
	printf("%s\n", cli_threads_help);
	return CLI_OK;
}

int cli_parse_int(const char *s, long long lo, long long hi, long long *out)
{
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

int cli_parse_double(const char *s, double lo, double hi, double *out)
{
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

int cli_parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *suffix; uint64_t mult; } units[] = {
		{"", 1}, {"B", 1}, {"KB", 1000ULL}, {"MB", 1000000ULL}, {"GB", 1000000000ULL},
		{"KIB", 1ULL << 10}, {"MIB", 1ULL << 20}, {"GIB", 1ULL << 30},
	};
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || !isfinite(v) || v <= 0)
		return -1;
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcasecmp(end, units[i].suffix) == 0) {
			double bytes = v * (double)units[i].mult;
			if (bytes < 1 || bytes > 1e18)
				return -1;
			*out = (uint64_t)bytes;
			return 0;
		}
	}
	return -1;
}

int cli_progress_enabled(void)
{
	return isatty(STDERR_FILENO);
}

void cli_progress(const char *label, int done, int total)
{
	if (!cli_progress_enabled() || total <= 0)
		return;
	const int width = 30;
	int fill = (int)((long long)done * width / total);
	fprintf(stderr, "\r%s [", label);
	for (int i = 0; i < width; i++)
		fputc(i < fill ? '#' : ' ', stderr);
	fprintf(stderr, "] %d/%d", done, total);
	if (done >= total)
		fputc('\n', stderr);
	fflush(stderr);
}
