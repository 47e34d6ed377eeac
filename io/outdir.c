#include "io/outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/durable.h"

struct outdir {
	char final[PATH_MAX];
	char tmp[PATH_MAX];
	int replace;           /* final exists and force was given */
};

int outdir_remove_tree(const char *path)
{
	struct stat sb;
	if (lstat(path, &sb) != 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(sb.st_mode))
		return unlink(path);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int rc = 0;
	struct dirent *ent;
	char child[PATH_MAX];
	while ((ent = readdir(d)) != NULL) {
		if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
			continue;
		if (snprintf(child, sizeof child, "%s/%s", path, ent->d_name) >= (int)sizeof child ||
		    outdir_remove_tree(child) != 0)
			rc = -1;
	}
	closedir(d);
	return rmdir(path) == 0 ? rc : -1;
}

/* Splits path into its parent directory and last component (trailing slashes ignored). */
static int split_path(const char *path, char *parent, size_t plen, char *name, size_t nlen)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return -1;
	size_t n = strlen(buf);
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	char *slash = strrchr(buf, '/');
	const char *base = slash ? slash + 1 : buf;
	if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return -1;
	if (snprintf(name, nlen, "%s", base) >= (int)nlen)
		return -1;
	if (!slash)
		return snprintf(parent, plen, ".") >= (int)plen ? -1 : 0;
	if (slash == buf)
		return snprintf(parent, plen, "/") >= (int)plen ? -1 : 0;
	*slash = '\0';
	return snprintf(parent, plen, "%s", buf) >= (int)plen ? -1 : 0;
}

/* Refuses an output that is the input or lies inside it (a later rename would destroy or nest the input). */
static ms_status check_not_input(const char *parent, const char *name, const char *input_dir, ms_error *err)
{
	char in_real[PATH_MAX], parent_real[PATH_MAX], out_real[PATH_MAX];
	if (!input_dir || !realpath(input_dir, in_real))
		return MS_OK;
	if (!realpath(parent, parent_real))
		return ms_fail(err, MS_ERR_IO, "%s: output's parent directory: %s", parent, strerror(errno));
	if (snprintf(out_real, sizeof out_real, "%s/%s", strcmp(parent_real, "/") ? parent_real : "", name) >=
	    (int)sizeof out_real)
		return ms_fail(err, MS_ERR_ARG, "%s: output path too long", name);
	size_t n = strlen(in_real);
	if (strcmp(out_real, in_real) == 0 || (strncmp(out_real, in_real, n) == 0 && out_real[n] == '/'))
		return ms_fail(err, MS_ERR_ARG, "%s: the output would replace or sit inside the input model %s", out_real,
			       in_real);
	return MS_OK;
}

ms_status outdir_begin(const char *final_dir, const char *input_dir, int force, outdir **out, ms_error *err)
{
	*out = NULL;
	char parent[PATH_MAX], name[NAME_MAX + 1];
	if (split_path(final_dir, parent, sizeof parent, name, sizeof name) != 0)
		return ms_fail(err, MS_ERR_ARG, "%s: not a usable output directory name", final_dir);
	ms_status st = check_not_input(parent, name, input_dir, err);
	if (st != MS_OK)
		return st;
	struct stat sb;
	int exists = lstat(final_dir, &sb) == 0;
	if (exists && !force)
		return ms_fail(err, MS_ERR_EXISTS, "%s: already exists (use --force to replace it)", final_dir);
	if (exists && !S_ISDIR(sb.st_mode))
		return ms_fail(err, MS_ERR_EXISTS, "%s: exists and is not a directory", final_dir);
	outdir *o = calloc(1, sizeof *o);
	if (!o)
		return ms_fail(err, MS_ERR_NOMEM, "out of memory");
	o->replace = exists;
	if (snprintf(o->final, sizeof o->final, "%s", final_dir) >= (int)sizeof o->final ||
	    snprintf(o->tmp, sizeof o->tmp, "%s/.%s.moescope-XXXXXX", parent, name) >= (int)sizeof o->tmp) {
		free(o);
		return ms_fail(err, MS_ERR_ARG, "%s: output path too long", final_dir);
	}
	if (!mkdtemp(o->tmp)) {
		st = ms_fail(err, MS_ERR_IO, "%s: cannot create a directory beside it: %s", final_dir, strerror(errno));
		free(o);
		return st;
	}
	/* mkdtemp makes the directory private; the output should get the permissions of any new directory. */
	mode_t mask = umask(0);
	umask(mask);
	chmod(o->tmp, 0777 & ~mask);
	*out = o;
	return MS_OK;
}

const char *outdir_tmp_path(const outdir *o)
{
	return o->tmp;
}

int outdir_file(const outdir *o, const char *name, char *buf, size_t len)
{
	return snprintf(buf, len, "%s/%s", o->tmp, name) >= (int)len ? -1 : 0;
}

ms_status outdir_copy_file(const outdir *o, const char *src, const char *name, ms_error *err)
{
	char dst[PATH_MAX];
	if (outdir_file(o, name, dst, sizeof dst) != 0)
		return ms_fail(err, MS_ERR_ARG, "%s: path too long", name);
	int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return ms_fail(err, MS_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
	FILE *f = fopen(dst, "wxe");
	ms_status st = f ? MS_OK : ms_fail(err, MS_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
	char buf[1 << 16];
	ssize_t n;
	while (st == MS_OK && (n = read(in, buf, sizeof buf)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			st = ms_fail(err, MS_ERR_IO, "%s: read failed: %s", src, strerror(errno));
		else if (fwrite(buf, 1, (size_t)n, f) != (size_t)n)
			st = ms_fail(err, MS_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
	}
	if (f && st != MS_OK)
		fclose(f);
	else if (f)
		st = dur_fclose(f, dst, err);
	close(in);
	return st;
}

ms_status outdir_commit(outdir *o, ms_error *err)
{
	/* Every file was synced as it was closed; the directory's own entries follow before it takes the name. */
	ms_status st = dur_sync_dir(o->tmp, err);
	char aside[PATH_MAX] = "";
	if (st == MS_OK && o->replace) {
		if (snprintf(aside, sizeof aside, "%s.old-moescope-%ld", o->tmp, (long)getpid()) >= (int)sizeof aside ||
		    rename(o->final, aside) != 0)
			st = ms_fail(err, MS_ERR_IO, "%s: cannot move the old output aside: %s", o->final, strerror(errno));
	}
	int renamed = 0;
	if (st == MS_OK)
		st = dur_rename(o->tmp, o->final, &renamed, err);
	if (!renamed) {
		if (aside[0])
			rename(aside, o->final);
		outdir_abort(o);
		return st;
	}
	/* In place, though when the parent's sync failed (st says so) the new name may not survive a power cut. */
	if (aside[0])
		outdir_remove_tree(aside);
	free(o);
	return st;
}

void outdir_abort(outdir *o)
{
	if (!o)
		return;
	outdir_remove_tree(o->tmp);
	free(o);
}

ms_status outdir_make_dirs(const char *dir, unsigned mode, ms_error *err)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
		return ms_fail(err, MS_ERR_ARG, "%.64s...: path too long", dir);
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		const char c = *p;
		*p = '\0';
		if (mkdir(path, (mode_t)mode) != 0 && errno != EEXIST)
			return ms_fail(err, MS_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
		*p = c;
		if (!c)
			break;
	}
	struct stat sb;
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return ms_fail(err, MS_ERR_IO, "%s: not a directory", dir);
	return MS_OK;
}

/* Files a rewritten checkpoint must not inherit: weights in any format and, with skip_reports, moescope's own. */
static int skip_aux_file(const char *name, int skip_reports)
{
	static const char *const suffixes[] = {
		".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".h5",
		".msgpack", ".gguf",
	};
	if (name[0] == '.' || strcmp(name, "config.json") == 0)
		return 1;
	if (skip_reports && (strcmp(name, "moescope_plan.csv") == 0 || strcmp(name, "moescope_report.json") == 0))
		return 1;
	size_t n = strlen(name);
	for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
		size_t k = strlen(suffixes[i]);
		if (n >= k && strcmp(name + n - k, suffixes[i]) == 0)
			return 1;
	}
	return 0;
}

ms_status outdir_copy_aux(const outdir *o, const char *in_dir, int skip_reports, ms_error *err)
{
	DIR *d = opendir(in_dir);
	if (!d)
		return MS_OK;
	ms_status st = MS_OK;
	struct dirent *ent;
	char src[PATH_MAX];
	while (st == MS_OK && (ent = readdir(d)) != NULL) {
		struct stat sb;
		if (skip_aux_file(ent->d_name, skip_reports) ||
		    snprintf(src, sizeof src, "%s/%s", in_dir, ent->d_name) >= (int)sizeof src ||
		    lstat(src, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > (256 << 20))
			continue;
		st = outdir_copy_file(o, src, ent->d_name, err);
	}
	closedir(d);
	return st;
}
