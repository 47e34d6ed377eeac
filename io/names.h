/* Tables of named choices (similarity bases, grouping methods, layouts, routers, ...): every such enum is one
 * X-macro row list in its own header, X(VALUE, "name", "one line of help"), from which the enum, the name array,
 * the help array, the parser and the command-line help are all generated, so that a new choice is one new row.
 * io/error.h's MS_STATUS_TABLE is the same shape.
 *
 * A header declares its table with these generators:
 *
 *     #define FOO_TABLE(X) X(FOO_A, "a", "what a does") X(FOO_B, "b", "what b does")
 *     typedef enum { FOO_TABLE(NAMES_X_ENUM) FOO_COUNT } foo;
 *
 * and its .c file defines the arrays with NAMES_X_NAME and NAMES_X_HELP (designated, so the order of the rows is
 * the order of the values whatever it is). A table with more columns defines its own generators beside its rows. */
#ifndef NAMES_NAMES_H
#define NAMES_NAMES_H

#define NAMES_X_ENUM(value, name, help) value,
#define NAMES_X_NAME(value, name, help) [value] = name,
#define NAMES_X_HELP(value, name, help) [value] = help,

/* The index of `name` in names [n], or -1 when it is none of them (or NULL). Exact, case-sensitive match: the
 * names are what users type on the command line and what plan and autosave files store. */
int names_index(const char *const *names, int n, const char *name);

/* names[i] when 0 <= i < n, "?" otherwise: what a message prints for a value that came from a corrupted file. */
const char *names_at(const char *const *names, int n, int i);

#endif
