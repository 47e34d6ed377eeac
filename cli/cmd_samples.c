/* `moescope samples DIR [--only NAME]`: writes the sample models and calibration sets of samples/samples.h, one
 * directory per sample, and says what it wrote. */
#include <stdio.h>
#include <string.h>

#include "samples/samples.h"
#include "cli/cli.h"
#include "cli/commands.h"

static int samples_help(void)
{
	printf("usage: moescope samples DIR [--only NAME]\n\n"
	       "Writes small, complete Hugging Face checkpoints with calibration sets and planted structure into\n"
	       "DIR/NAME/ (config.json, model*.safetensors, calib.safetensors, truth.json). The same bytes on every\n"
	       "run; an earlier sample in DIR is replaced.\n\n"
	       "  --only NAME   write only this sample\n\nsamples:\n");
	for (int i = 0; i < samples_count; i++)
		printf("  %-14s %s\n", samples_table[i].name, samples_table[i].description);
	return CLI_OK;
}

static int known_sample(const char *name)
{
	for (int i = 0; i < samples_count; i++)
		if (strcmp(samples_table[i].name, name) == 0)
			return 1;
	return 0;
}

/* Fills *dir and *only from argv; returns -1 when done, or the exit status to leave with. */
static int parse_args(int argc, char **argv, const char **dir, const char **only)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
			return samples_help();
		if (strcmp(a, "--only") == 0) {
			if (++i == argc)
				return cli_usage_error("samples", "--only needs a sample name");
			*only = argv[i];
		} else if (strncmp(a, "--only=", 7) == 0) {
			*only = a + 7;
		} else if (a[0] == '-' && a[1]) {
			return cli_usage_error("samples", "unknown option '%s'", a);
		} else if (*dir) {
			return cli_usage_error("samples", "one DIR only, got '%s' and '%s'", *dir, a);
		} else {
			*dir = a;
		}
	}
	if (!*dir || !**dir)
		return cli_usage_error("samples", "DIR is missing");
	if (*only && !known_sample(*only))
		return cli_usage_error("samples", "unknown sample '%s' (see moescope samples --help)", *only);
	return -1;
}

int cmd_samples(int argc, char **argv)
{
	const char *dir = NULL, *only = NULL;
	int rc = parse_args(argc, argv, &dir, &only);
	if (rc >= 0)
		return rc;
	for (int i = 0; i < samples_count; i++) {
		const char *name = samples_table[i].name;
		if (only && strcmp(only, name) != 0)
			continue;
		if (cli_progress_enabled())
			fprintf(stderr, "writing %s/%s ...\n", dir, name);
		ms_error err = {0};
		if (samples_write(dir, name, &err) != MS_OK)
			return cli_report(&err);
		printf("%s/%s: %s\n", dir, name, samples_table[i].description);
	}
	return CLI_OK;
}
