/* The headless commands, one per file cli/cmd_*.c. argv[0] is the command name. Each returns an exit status
 * (cli/cli.h) and handles --help. */
#ifndef CMD_COMMANDS_H
#define CMD_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_samples(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_tui(int argc, char **argv);
int cmd_capture(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_densify(int argc, char **argv);
int cmd_search(int argc, char **argv);

#endif
