/*
 * resolver_output.c: an endpoint set written out, as the lines the file:
 * source reads back (and gk-client --endpoints), or as JSON; and the
 * atomic replacement of a file (temporary file in the same directory,
 * fsync, rename), so that a reader never sees half a set.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resolver.h"

void
gk_resolver_format_lines(gk_buf *out, const gk_endpoint *set, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		gk_buf_addf(out, "%s %u %s", set[i].addr, set[i].weight,
		    set[i].tags[0] ? set[i].tags : "-");
		/* priority=0 is said when the tags could read as a priority
		 * (the reader takes a last word priority=N as one). */
		if (set[i].priority || !strncmp(set[i].tags, "priority=", 9))
			gk_buf_addf(out, " priority=%u", set[i].priority);
		gk_buf_addc(out, '\n');
	}
}

void
gk_resolver_format_json(gk_buf *out, const gk_endpoint *set, size_t n)
{
	gk_jw w;
	gk_jw_init(&w, out);
	gk_jw_object(&w);
	gk_jw_key(&w, "endpoints");
	gk_jw_array(&w);
	for (size_t i = 0; i < n; i++) {
		const gk_endpoint *e = &set[i];
		gk_jw_object(&w);
		gk_jw_key(&w, "addr");
		gk_jw_cstr(&w, e->addr);
		/* host without the brackets of an IPv6 address */
		const char *colon = strrchr(e->addr, ':');
		const char *h = e->addr;
		size_t hn = colon ? (size_t)(colon - h) : strlen(h);
		if (hn >= 2 && h[0] == '[' && h[hn - 1] == ']')
			h++, hn -= 2;
		gk_jw_key(&w, "host");
		gk_jw_string(&w, h, hn);
		gk_jw_key(&w, "port");
		gk_jw_int(&w, colon ? atoi(colon + 1) : 0);
		gk_jw_key(&w, "weight");
		gk_jw_int(&w, e->weight);
		gk_jw_key(&w, "priority");
		gk_jw_int(&w, e->priority);
		gk_jw_key(&w, "tags");
		gk_jw_comma_list(&w, e->tags);
		gk_jw_object_end(&w);
	}
	gk_jw_array_end(&w);
	gk_jw_object_end(&w);
}

int
gk_write_file_atomic(const char *path, const char *data, size_t len)
{
	char *d = gk_xstrdup(path), *b = gk_xstrdup(path);
	char *tmp = gk_xmalloc(strlen(path) + 32);
	/* A dot file beside it: readers watching the directory for the
	 * file's own name ignore it until the rename. */
	const char *dir = dirname(d);
	sprintf(tmp, "%s/.%s.XXXXXX", dir, basename(b));
	free(b);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		free(tmp);
		free(d);
		return -1;
	}
	int err = 0;
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			break;
		}
		off += (size_t)w;
	}
	if (!err && fchmod(fd, 0644) < 0)
		err = errno;
	if (!err && fsync(fd) < 0)
		err = errno;
	if (close(fd) < 0 && !err)
		err = errno;
	if (!err && rename(tmp, path) < 0)
		err = errno;
	if (err)
		unlink(tmp);
	else {
		/* The rename is in the directory: synced too, or a power
		 * loss may bring the old set back.  Best effort: some file
		 * systems refuse fsync on a directory. */
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	free(d);
	free(tmp);
	errno = err;
	return err ? -1 : 0;
}
