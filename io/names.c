#include "io/names.h"

#include <string.h>

int names_index(const char *const *names, int n, const char *name)
{
	for (int i = 0; name && i < n; i++)
		if (names[i] && strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

const char *names_at(const char *const *names, int n, int i)
{
	return i >= 0 && i < n && names[i] ? names[i] : "?";
}
