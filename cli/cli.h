/* Shared pieces of the headless commands: the command table, option parsing helpers, error reporting. */
#ifndef CLI_CLI_H
#define CLI_CLI_H

#include <stdint.h>

#include "io/error.h"

/* Exit statuses (docs/design.md §5). */
enum { CLI_OK = 0, CLI_USER_ERROR = 1, CLI_USAGE = 2 };

typedef struct {
	const char *name;
	int (*run)(int argc, char **argv);  /* argv[0] is the command name */
	const char *synopsis;               /* the usage line after "moescope " */
	const char *summary;                /* one line for `moescope --help` */
} cli_command;

extern const cli_command cli_commands[];
extern const int cli_command_count;

/* The one line every help text gives for --threads, which main() takes for every command. */
extern const char cli_threads_help[];

/* Prints "moescope: <err->msg>" on stderr and returns CLI_USER_ERROR. */
int cli_report(const ms_error *err);
/* Prints "moescope CMD: <message>" and "usage: ..." on stderr and returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the usage of a command on stdout (for --help) and returns CLI_OK. */
int cli_help(const char *cmd);

/* Parses a whole decimal number in [lo, hi]; 0 on success. */
int cli_parse_int(const char *s, long long lo, long long hi, long long *out);
/* Parses a finite number in [lo, hi]; 0 on success. */
int cli_parse_double(const char *s, double lo, double hi, double *out);
/* Parses a size like 5GB, 500MB, 1024 (bytes); 0 on success. */
int cli_parse_size(const char *s, uint64_t *out);
/* 1 when stderr is a terminal (progress is shown only then). */
int cli_progress_enabled(void);

/* Progress on stderr when it is a terminal: "label [####      ] 3/8". done == total ends the line. */
void cli_progress(const char *label, int done, int total);

#endif
