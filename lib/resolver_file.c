/*
 * resolver_file.c: file:/run/gk/orders, one endpoint per line, watched with
 * inotify on its directory, so that both an atomic rename (the SmartStack
 * way: a local agent writes a new file and renames it) and an in-place
 * rewrite are seen.  A rewrite in place (curl ... >FILE) truncates the file
 * and fills it over time: it is read once its writer closes it
 * (IN_CLOSE_WRITE), not while it is empty or half written.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resolver_source.h"

/* The largest file read, as the largest HTTP answer: 10000 endpoints are
 * well under it, and a runaway writer does not take the memory. */
#define MAX_FILE_BYTES (16u << 20)

struct file_state {
	gk_resolver *r;
	char *path, *dir, *base;
	int fd, wd;
	/* PATH a symbolic link: the directory of what it points to is
	 * watched too (twd, for a rewrite there), and any change in PATH's
	 * directory may have swapped the link (as Kubernetes updates a
	 * ConfigMap: a new directory, then a rename over "..data"). */
	bool link;
	int twd;
	char *tdir, *tbase;
	gk_timer settle, rewatch, writer;
	/* The file changed in place and its writer has not closed it yet;
	 * waited past WRITER_WAIT_MS. */
	bool writing, waited;
	gk_series *m_bad, *m_unclosed;
};

/* How long a writer may keep the file open after changing it before the
 * file is read all the same (then only when it is not empty and ends in
 * a newline: a truncated file being filled is no set). */
#define WRITER_WAIT_MS 2000

/* A directory removed (a RuntimeDirectory= of a unit restarted) is looked
 * for again this often, until it is back. */
#define REWATCH_MS 1000

#define WATCH_MASK                                                             \
	(IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MODIFY)

/* Where PATH leads now: watch that directory as well, when it is not
 * PATH's own. */
static void
follow(struct file_state *f)
{
	struct stat st;
	f->link = lstat(f->path, &st) == 0 && S_ISLNK(st.st_mode);
	char *real = f->link ? realpath(f->path, NULL) : NULL;
	char *tdir = NULL, *tbase = NULL;
	if (real) {
		char *d = gk_xstrdup(real), *b = gk_xstrdup(real);
		const char *dir = dirname(d);
		if (strcmp(dir, f->dir)) {
			tdir = gk_xstrdup(dir);
			tbase = gk_xstrdup(basename(b));
		}
		free(d), free(b), free(real);
	}
	if (tdir && f->tdir && !strcmp(tdir, f->tdir)) {
		free(f->tbase); /* the same directory: its watch stays */
		f->tbase = tbase;
		free(tdir);
		return;
	}
	if (f->twd >= 0) /* its directory may be gone, and the watch with it */
		inotify_rm_watch(f->fd, f->twd);
	free(f->tdir), free(f->tbase);
	f->tdir = f->tbase = NULL;
	/* IN_MASK_ADD, and no second watch of PATH's own directory spelled
	 * another way (inotify gives its watch again): removing it later
	 * would remove that one. */
	f->twd = tdir ? inotify_add_watch(f->fd, tdir, WATCH_MASK | IN_MASK_ADD)
	              : -1;
	if (f->twd == f->wd)
		f->twd = -1;
	if (f->twd >= 0) {
		f->tdir = tdir;
		f->tbase = tbase;
	} else
		free(tdir), free(tbase);
}

/* Read the file and publish its set; while_open: its writer still has it
 * open, so an empty file or a last line without its newline is a write
 * in progress, and the last good set is kept. */
static void
load(struct file_state *f, bool while_open)
{
	follow(f);
	FILE *fp = fopen(f->path, "r");
	if (!fp) {
		char w[600];
		snprintf(w, sizeof w, "%s: %s", f->path, strerror(errno));
		gk__resolver_error(f->r, w);
		return;
	}
	struct stat st;
	if (fstat(fileno(fp), &st) == 0 && st.st_size > MAX_FILE_BYTES) {
		fclose(fp);
		char w[100];
		snprintf(w, sizeof w, "file over %u bytes", MAX_FILE_BYTES);
		gk__resolver_error(f->r, w);
		return;
	}
	gk_endpoint *set = NULL;
	size_t n = 0, cap = 0;
	/* Whole lines, however long: a long line read in pieces would make
	 * its tail (say, an address in a long comment) a line of its own. */
	char *line = NULL;
	size_t linecap = 0;
	ssize_t got;
	unsigned lineno = 0;
	bool bad = false, ends_line = false;
	size_t total = 0;
	while ((got = getline(&line, &linecap, fp)) >= 0) {
		ends_line = line[got - 1] == '\n';
		lineno++;
		if ((total += (size_t)got) > MAX_FILE_BYTES)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			set = gk_xrealloc(set, cap * sizeof *set);
		}
		size_t len = (size_t)got;
		if (len && line[len - 1] == '\n')
			len--;
		int rc = gk__resolver_parse_line(line, len, &set[n]);
		if (rc == 0)
			n++;
		else if (rc < 0) {
			char w[64];
			snprintf(w, sizeof w, "line=%u", lineno);
			gk_log(GK_WARN, "resolver: bad line in endpoints file",
			       w);
			gk_counter_add(f->m_bad, 1);
			bad = true;
		}
	}
	free(line);
	fclose(fp);
	if (total > MAX_FILE_BYTES) {
		char w[100];
		snprintf(w, sizeof w, "file over %u bytes", MAX_FILE_BYTES);
		gk__resolver_error(f->r, w);
		free(set);
		return;
	}
	if (while_open && !ends_line) {
		char w[600];
		snprintf(w, sizeof w, "file=%s", f->path);
		gk_log(GK_DEBUG,
		       "endpoints file still being written: last good set kept",
		       w);
		free(set);
		return;
	}
	/* A file with only bad lines is an error, not an empty set. */
	if (bad && !n)
		gk__resolver_error(f->r, "no valid endpoint in file");
	else
		gk__resolver_publish(f->r, set, n);
	free(set);
}

static void
on_writer_wait(gk_loop *loop, void *arg)
{
	(void)loop;
	struct file_state *f = arg;
	f->waited = true;
	if (!f->writing)
		return;
	gk_counter_add(f->m_unclosed, 1);
	load(f, true);
}

static void
on_settle(gk_loop *loop, void *arg)
{
	struct file_state *f = arg;
	if (f->writing && !f->waited) {
		char w[600];
		snprintf(w, sizeof w, "file=%s", f->path);
		gk_log(
		    GK_DEBUG,
		    "endpoints file open for writing: read once it is closed",
		    w);
		if (!gk_timer_armed(&f->writer))
			gk_timer_start(loop, &f->writer, WRITER_WAIT_MS,
			               on_writer_wait, f);
		return;
	}
	load(f, f->writing);
}

/* The writer's state from an event about the file's own name: changed
 * in place (IN_MODIFY; IN_CREATE by open(2)) and not closed yet, or
 * done (closed, renamed over, removed). */
static void
track_writer(struct file_state *f, const struct inotify_event *e)
{
	if (!e->len || (e->mask & IN_ISDIR))
		return;
	if (!(e->wd == f->wd && !strcmp(e->name, f->base)) &&
	    !(e->wd == f->twd && f->tbase && !strcmp(e->name, f->tbase)))
		return;
	if (e->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE)) {
		f->writing = f->waited = false;
		gk_timer_stop(gk__resolver_loop(f->r), &f->writer);
	} else if (e->mask & IN_MODIFY)
		f->writing = true;
	else if (e->mask & IN_CREATE) {
		/* Made by open(2), to be written: a new regular file of one
		 * link.  A symbolic link (rm, then ln -s) or a hard link to
		 * a file written elsewhere is complete already. */
		char path[PATH_MAX];
		struct stat st;
		snprintf(path, sizeof path, "%s/%s",
		         e->wd == f->wd ? f->dir : f->tdir, e->name);
		if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_nlink == 1)
			f->writing = true;
	}
}

/* An event about the file: its name in its directory, anything there
 * when it is a link (which may have been swapped), or its target's name
 * where the link leads. */
static bool
concerns(const struct file_state *f, const struct inotify_event *e)
{
	if (e->wd == f->wd)
		return f->link || !strcmp(e->name, f->base);
	return e->wd == f->twd && f->tbase && !strcmp(e->name, f->tbase);
}

static void on_rewatch(gk_loop *loop, void *arg);

static void
rewatch(struct file_state *f)
{
	gk_loop *loop = gk__resolver_loop(f->r);
	if (f->wd >= 0) /* moved away: that directory is not ours now */
		inotify_rm_watch(f->fd, f->wd);
	f->wd = inotify_add_watch(f->fd, f->dir,
	                          WATCH_MASK | IN_DELETE_SELF | IN_MOVE_SELF);
	if (f->wd < 0)
		gk_timer_start(loop, &f->rewatch, REWATCH_MS, on_rewatch, f);
	/* the file as it is now, or the error of its absence */
	f->writing = f->waited = false;
	gk_timer_stop(loop, &f->writer);
	load(f, false);
}

static void
on_rewatch(gk_loop *loop, void *arg)
{
	(void)loop;
	rewatch(arg);
}

static void
on_inotify(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)ev;
	struct file_state *f = arg;
	char buf[4096]
	    __attribute__((aligned(__alignof__(struct inotify_event))));
	bool ours = false, lost = false;
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			if (e->len && concerns(f, e))
				ours = true;
			track_writer(f, e);
			if (e->wd == f->wd &&
			    (e->mask &
			     (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)))
				lost = true;
			p += sizeof *e + e->len;
		}
	}
	/* Writers touch a file several times in a row: read it once
	 * they are done. */
	if (lost)
		rewatch(f);
	else if (ours)
		gk_timer_start(loop, &f->settle, 20, on_settle, f);
}

static int
file_start(gk_resolver *r, const char *rest, void **state, const char **why)
{
	if (!*rest) {
		*why = "expected file:PATH";
		return -1;
	}
	struct file_state *f = gk_xcalloc(1, sizeof *f);
	f->r = r;
	f->path = gk_xstrdup(rest);
	char *d = gk_xstrdup(rest), *b = gk_xstrdup(rest);
	f->dir = gk_xstrdup(dirname(d));
	f->base = gk_xstrdup(basename(b));
	free(d);
	free(b);
	f->twd = -1;
	f->m_bad = gk_series_get(
	    gk_counter_new(
	        "gk_resolver_dropped_total",
	        "Endpoints a source left out: over the bound, or malformed",
	        "reason"),
	    "bad", (char *)0);
	f->m_unclosed = gk_metric_series(gk_counter_new(
	    "gk_resolver_file_unclosed_reads_total",
	    "Endpoints file reads made while its writer still had it open, "
	    "after waiting 2 s for it to close",
	    NULL));
	f->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (f->fd < 0 ||
	    (f->wd = inotify_add_watch(
	         f->fd, f->dir, WATCH_MASK | IN_DELETE_SELF | IN_MOVE_SELF)) <
	        0) {
		*why = "unable to watch the file's directory";
		if (f->fd >= 0)
			close(f->fd);
		free(f->path), free(f->dir), free(f->base), free(f);
		return -1;
	}
	gk_loop_watch(gk__resolver_loop(r), f->fd, GK_READ, on_inotify, f);
	*state = f;
	load(f, false);
	return 0;
}

static void
file_stop(void *state)
{
	struct file_state *f = state;
	gk_loop *loop = gk__resolver_loop(f->r);
	gk_timer_stop(loop, &f->settle);
	gk_timer_stop(loop, &f->rewatch);
	gk_timer_stop(loop, &f->writer);
	gk_loop_unwatch(loop, f->fd);
	close(f->fd);
	free(f->tdir), free(f->tbase);
	free(f->path), free(f->dir), free(f->base), free(f);
}

const gk_resolver_source gk_resolver_file = {"file", file_start, file_stop};
