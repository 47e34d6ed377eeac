/* `moescope tui MODEL [CALIB] [--tokens FILE] [--script FILE] [--dump FILE] [--size WxH] [--no-color] [--ascii]
 * [--eval-tokens N]`
 * and `moescope tui --list-keys`: opens the model and runs the interactive application, on the terminal or, with
 * --script, without one. */
#include <getopt.h>
#include <langinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui/app.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/options.h"

typedef struct {
	const char *model, *calib, *script, *dump;
	const char *tokens, *text;  /* the model-level verdict's token ids, or its text */
	int ascii, mono, list_keys;
	int width, height;
	long long eval_tokens;
} tui_args;

static int parse_size(const char *s, tui_args *t)
{
	long long w, h;
	char buf[32];
	const char *x = strchr(s, 'x');
	if (!x || (size_t)(x - s) >= sizeof buf)
		return -1;
	memcpy(buf, s, (size_t)(x - s));
	buf[x - s] = '\0';
	if (cli_parse_int(buf, 20, 4096, &w) != 0 || cli_parse_int(x + 1, 8, 4096, &h) != 0)
		return -1;
	t->width = (int)w;
	t->height = (int)h;
	return 0;
}

static int parse_args(int argc, char **argv, tui_args *t)
{
	static const struct option longopts[] = {
		{"script", required_argument, NULL, 's'}, {"dump", required_argument, NULL, 'd'},
		{"size", required_argument, NULL, 'z'},   {"calib", required_argument, NULL, 'c'},
		{"no-color", no_argument, NULL, 'n'},     {"ascii", no_argument, NULL, 'a'},
		{"list-keys", no_argument, NULL, 'k'},    {"eval-tokens", required_argument, NULL, 't'},
		{"tokens", required_argument, NULL, 'o'}, {"text", required_argument, NULL, 'x'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	int c, rc = 0;
	optind = 0;
	opterr = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's': t->script = optarg; break;
		case 'd': t->dump = optarg; break;
		case 'c': t->calib = optarg; break;
		case 'o': t->tokens = optarg; break;
		case 'x': t->text = optarg; break;
		case 'n': t->mono = 1; break;
		case 'a': t->ascii = 1; break;
		case 'k': t->list_keys = 1; break;
		case 'z':
			if (parse_size(optarg, t) != 0)
				return cli_usage_error("tui", "--size: '%s' is not WxH (at least 20x8)", optarg);
			break;
		case 't': rc = opt_eval_tokens("tui", optarg, &t->eval_tokens); break;
		default: rc = opt_other("tui", c, argv, NULL);
		}
	}
	if (rc != 0)
		return rc;
	if (t->list_keys)
		return 0;
	if (t->text && t->tokens)
		return cli_usage_error("tui", "give at most one of --text FILE and --tokens FILE");
	if (optind >= argc || argc - optind > 2 || (t->calib && argc - optind == 2))
		return cli_usage_error("tui", "MODEL and at most one calibration set expected");
	t->model = argv[optind];
	if (argc - optind == 2)
		t->calib = argv[optind + 1];
	return 0;
}

/* The key table, one binding a line: key, action, where, description (tab-separated). */
static int list_keys(void)
{
	for (int i = 0; i < keys_count; i++) {
		char name[16], where[128];
		const keys_binding *k = &keys_table[i];
		printf("%s\t%s\t%s\t%s\n", keys_format(k->key, name, sizeof name), k->name,
		       keys_where(k->flags, where, sizeof where), k->description);
	}
	return CLI_OK;
}

/* UTF-8 glyphs unless asked for ASCII or the locale's character set is not UTF-8. */
static int want_ascii(int flag)
{
	const char *cs = nl_langinfo(CODESET);
	return flag || !cs || (strcmp(cs, "UTF-8") != 0 && strcmp(cs, "utf8") != 0);
}

static int run(const tui_args *t, mdl_model *m, calib *cal)
{
	app_config cfg = {
		.ascii = want_ascii(t->ascii), .mono = t->mono, .width = t->width, .height = t->height,
		.eval_tokens = t->eval_tokens, .commit = mrun_run, .commit_defaults = mrun_request_defaults(),
		.autosave = 1, .tokens = t->tokens, .text = t->text,
	};
	FILE *dump = NULL;
	if (t->dump && !(dump = fopen(t->dump, "w"))) {
		perror(t->dump);
		return CLI_USER_ERROR;
	}
	app a;
	ms_error err = {0};
	char msg[1200] = "";
	int rc = CLI_USER_ERROR;
	if (app_init(&a, m, cal, &cfg, &err) != 0) {
		cli_report(&err);
	} else {
		a.scheme = app_choose_scheme(t->mono, 256);
		rc = t->script ? app_run_script(&a, t->script, dump, msg, sizeof msg)
			       : app_run_terminal(&a, t->mono, dump, msg, sizeof msg);
		app_free(&a);  /* after endwin: the terminal is restored before anything is printed */
		if (msg[0])
			fprintf(stderr, "moescope tui: %s\n", msg);
	}
	if (dump && fclose(dump) != 0 && rc == CLI_OK) {
		perror(t->dump);
		rc = CLI_USER_ERROR;
	}
	return rc;
}

int cmd_tui(int argc, char **argv)
{
	tui_args t = {.width = 100, .height = 30, .eval_tokens = 2048};
	int rc = parse_args(argc, argv, &t);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	if (t.list_keys)
		return list_keys();
	mdl_model *m;
	calib *cal = NULL;
	if (opt_open(t.model, t.calib, &m, t.calib ? &cal : NULL))
		return CLI_USER_ERROR;
	rc = run(&t, m, cal);
	opt_close(m, cal);
	return rc;
}
