#include "io/durable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static dur_hook_fn hook;
static void *hook_ctx;

void dur_set_hook(dur_hook_fn fn, void *ctx)
{
	hook = fn;
	hook_ctx = ctx;
}

/* 0, or -1 with errno set: the hook's answer first, then the operation itself. */
static int ask_hook(dur_op op, const char *path, const char *to)
{
	int e = hook ? hook(hook_ctx, op, path, to) : 0;
	if (e) {
		errno = e;
		return -1;
	}
	return 0;
}

static int sync_fd(int fd, dur_op op, const char *path)
{
	if (ask_hook(op, path, NULL) != 0)
		return -1;
	int rc;
	do
		rc = fsync(fd);
	while (rc != 0 && errno == EINTR);
	/* EINVAL: this file system cannot sync the object (POSIX); there is nothing more durable to ask for. */
	return rc != 0 && errno == EINVAL ? 0 : rc;
}

static ms_status io_fail(ms_error *err, const char *path, const char *what, int e)
{
	return ms_fail(err, MS_ERR_IO, "%s: %s: %s", path, what, e ? strerror(e) : "unknown error");
}

ms_status dur_fclose(FILE *f, const char *path, ms_error *err)
{
	const char *what = NULL;
	int e = 0;
	errno = 0;
	if (ferror(f) || fflush(f) != 0) {
		what = "write failed";
		e = errno;
	} else if (sync_fd(fileno(f), DUR_SYNC_FILE, path) != 0) {
		what = "fsync failed";
		e = errno;
	}
	errno = 0;
	if (fclose(f) != 0 && !what) {
		what = "close failed";
		e = errno;
	}
	return what ? io_fail(err, path, what, e) : MS_OK;
}

ms_status dur_sync_dir(const char *dir, ms_error *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return io_fail(err, dir, "cannot open the directory to sync it", errno);
	ms_status st = sync_fd(fd, DUR_SYNC_DIR, dir) != 0 ? io_fail(err, dir, "fsync failed", errno) : MS_OK;
	close(fd);
	return st;
}

/* The directory part of path ("." for a bare name, "/" for a name at the root); NULL when out of memory. */
static char *parent_dir(const char *path)
{
	char *dir = malloc(strlen(path) + 2);
	if (!dir)
		return NULL;
	strcpy(dir, path);
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		dir[--n] = '\0';
	char *slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	return dir;
}

ms_status dur_rename(const char *from, const char *to, int *renamed, ms_error *err)
{
	if (renamed)
		*renamed = 0;
	if (ask_hook(DUR_RENAME, from, to) != 0 || rename(from, to) != 0)
		return ms_fail(err, MS_ERR_IO, "%s: cannot rename %s into place: %s", to, from, strerror(errno));
	if (renamed)
		*renamed = 1;
	char *dir = parent_dir(to);
	if (!dir)
		return ms_fail(err, MS_ERR_NOMEM, "%s: out of memory", to);
	ms_status st = dur_sync_dir(dir, err);
	free(dir);
	return st;
}
