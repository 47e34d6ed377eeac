#include "io/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[] = {
#define MS_X_NAME(name, text) #name,
	MS_STATUS_TABLE(MS_X_NAME)
#undef MS_X_NAME
};

static const char *const status_texts[] = {
#define MS_X_TEXT(name, text) text,
	MS_STATUS_TABLE(MS_X_TEXT)
#undef MS_X_TEXT
};

const char *ms_status_name(ms_status code)
{
	if ((unsigned)code >= MS_STATUS_COUNT)
		return "MS_UNKNOWN";
	return status_names[code];
}

const char *ms_status_text(ms_status code)
{
	if ((unsigned)code >= MS_STATUS_COUNT)
		return "unknown status";
	return status_texts[code];
}

ms_status ms_fail(ms_error *err, ms_status code, const char *fmt, ...)
{
	if (!err)
		return code;
	err->code = code;
	if (!fmt || !*fmt) {
		snprintf(err->msg, sizeof err->msg, "%s", ms_status_text(code));
		return code;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	return code;
}

void ms_error_prefix(ms_error *err, const char *prefix)
{
	if (!err || !prefix || !*prefix)
		return;
	/* Shift the message right and put "prefix: " in front, truncating the tail if the whole does not fit. */
	const size_t cap = sizeof err->msg;
	size_t plen = strlen(prefix), mlen = strnlen(err->msg, cap - 1);
	if (plen + 2 >= cap)
		plen = cap - 3;
	if (plen + 2 + mlen >= cap)
		mlen = cap - 1 - plen - 2;
	memmove(err->msg + plen + 2, err->msg, mlen);
	memcpy(err->msg, prefix, plen);
	err->msg[plen] = ':';
	err->msg[plen + 1] = ' ';
	err->msg[plen + 2 + mlen] = '\0';
}

void ms_error_clear(ms_error *err)
{
	if (!err)
		return;
	err->code = MS_OK;
	err->msg[0] = '\0';
}
