/*
 * logfile.c: an appending, rotating log file (see gk_logfile in
 * logship.h).
 *
 * Records wait in a gk_equeue (its bound is --buffer; past it the oldest
 * are dropped and counted).  At the end of each loop turn up to 64 KiB of
 * them move to a write buffer, where they are no longer dropped, and are
 * written with O_APPEND, so a file that logrotate truncated (copytruncate)
 * is written from its new end.  A write that fails (ENOSPC, EDQUOT, EIO,
 * ...) leaves the records where they are and is tried again with backoff;
 * nothing is lost until the bound is passed, and each loss is counted and
 * told in an event.  Rotation renames PATH.(N-1) to PATH.N ... PATH to
 * PATH.1 and opens a new PATH; it happens between records only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logship.h"

#define CHUNK 65536
#define MAX_ENDS 4096

struct gk_logfile {
	gk_export *ex;
	gk_loop *loop;
	gk_logfile_opts o;
	char *path;
	int fd;
	uint64_t size;
	gk_equeue *q;
	gk_buf cur;
	size_t cur_off;
	size_t ends[MAX_ENDS];
	size_t nends;
	size_t qbytes_seen;
	bool dirty, blocked, want_rotate, want_reopen, unsynced;
	int block_err;
	uint64_t blocked_since_ms, dropped_base, dropped_told, told_ms;
	gk_backoff backoff;
	gk_timer retry, rotate_timer;
	void (*drained)(gk_logfile *, void *);
	void *drained_arg;
	gk_series *m_rotations, *m_fsyncs, *m_reopens, *m_blocked;
};

static void flush(gk_logfile *f);
static size_t abandon(void *arg);

static void
sync_gauge(gk_logfile *f)
{
	size_t now = gk_equeue_bytes(f->q) + (f->cur.len - f->cur_off);
	gk_export_queue_change(f->ex, (int64_t)now - (int64_t)f->qbytes_seen);
	f->qbytes_seen = now;
}

static int
open_file(gk_logfile *f)
{
	int fd = open(f->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	              f->o.mode ? f->o.mode : 0644);
	if (fd < 0)
		return -1;
	struct stat st;
	f->size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	f->fd = fd;
	return 0;
}

static void
do_fsync(gk_logfile *f)
{
	if (f->fd >= 0 && f->unsynced && fdatasync(f->fd) == 0) {
		gk_counter_add(f->m_fsyncs, 1);
		f->unsynced = false;
	}
}

static void
close_file(gk_logfile *f)
{
	if (f->fd < 0)
		return;
	if (f->o.fsync != GK_FSYNC_NEVER)
		do_fsync(f);
	close(f->fd);
	f->fd = -1;
}

/* Records cut by a failure or a reopen start again, whole. */
static void
rewind_partial(gk_logfile *f)
{
	size_t keep_from = 0, i = 0;
	while (i < f->nends && f->ends[i] <= f->cur_off)
		keep_from = f->ends[i++];
	gk_buf_consume(&f->cur, keep_from);
	for (size_t j = i; j < f->nends; j++)
		f->ends[j - i] = f->ends[j] - keep_from;
	f->nends -= i;
	f->cur_off = 0;
}

static void
log_path(enum gk_level level, const char *msg, const gk_logfile *f, int err)
{
	char p[300], e[160];
	snprintf(p, sizeof p, "path=%s", f->path);
	if (err) {
		snprintf(e, sizeof e, "error=%s", strerror(err));
		gk_log(level, msg, p, e);
	} else {
		gk_log(level, msg, p);
	}
}

static void
rotate_now(gk_logfile *f)
{
	f->want_rotate = false;
	close_file(f);
	size_t n = strlen(f->path) + 32;
	char *from = gk_xmalloc(n), *to = gk_xmalloc(n);
	for (unsigned i = f->o.keep; i > 1; i--) {
		snprintf(from, n, "%s.%u", f->path, i - 1);
		snprintf(to, n, "%s.%u", f->path, i);
		if (rename(from, to) < 0 && errno != ENOENT)
			log_path(GK_ERROR, "rotation: cannot rename", f, errno);
	}
	snprintf(to, n, "%s.1", f->path);
	if (rename(f->path, to) < 0 && errno != ENOENT)
		log_path(GK_ERROR, "rotation: cannot rename", f, errno);
	free(from);
	free(to);
	gk_counter_add(f->m_rotations, 1);
	if (open_file(f) < 0)
		log_path(GK_ERROR, "cannot open the log file", f, errno);
	else
		log_path(GK_INFO, "log file rotated", f, 0);
}

static void
reopen_now(gk_logfile *f)
{
	f->want_reopen = false;
	close_file(f);
	gk_counter_add(f->m_reopens, 1);
	if (open_file(f) == 0)
		log_path(GK_INFO, "log file reopened", f, 0);
}

static void
on_retry(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_logfile *f = arg;
	if (f->blocked) {
		/* Say what the bound cost so far, every 10s at most. */
		uint64_t lost = gk_equeue_dropped(f->q) - f->dropped_told;
		uint64_t now = gk_loop_now(f->loop);
		if (lost && now - f->told_ms >= 10000) {
			char p[300], d[64];
			snprintf(p, sizeof p, "path=%s", f->path);
			snprintf(d, sizeof d, "dropped=%llu",
			         (unsigned long long)lost);
			gk_log(GK_WARN, "buffer full: events dropped", p, d);
			f->dropped_told += lost;
			f->told_ms = now;
		}
	}
	flush(f);
}

static void
block(gk_logfile *f, int err)
{
	gk_export_error(f->ex, 1);
	if (!f->blocked) {
		f->blocked = true;
		f->block_err = err;
		f->blocked_since_ms = gk_loop_now(f->loop);
		f->told_ms = f->blocked_since_ms;
		f->dropped_base = gk_equeue_dropped(f->q);
		gk_counter_add(f->m_blocked, 1);
		char p[300], e[160], b[64];
		snprintf(p, sizeof p, "path=%s", f->path);
		snprintf(e, sizeof e, "error=%s", strerror(err));
		snprintf(b, sizeof b, "buffer_bytes=%zu", f->o.max_buffer);
		gk_log(GK_ERROR, "cannot write the log file: holding events", p,
		       e, b);
	}
	gk_timer_start(f->loop, &f->retry, gk_backoff_next(&f->backoff),
	               on_retry, f);
}

static void
unblock(gk_logfile *f)
{
	if (!f->blocked)
		return;
	f->blocked = false;
	gk_backoff_reset(&f->backoff);
	uint64_t lost = gk_equeue_dropped(f->q) - f->dropped_base;
	f->dropped_told = gk_equeue_dropped(f->q);
	char p[300], d[64], s[64];
	snprintf(p, sizeof p, "path=%s", f->path);
	snprintf(d, sizeof d, "dropped=%llu", (unsigned long long)lost);
	snprintf(
	    s, sizeof s, "blocked_ms=%llu",
	    (unsigned long long)(gk_loop_now(f->loop) - f->blocked_since_ms));
	gk_log(lost ? GK_WARN : GK_INFO, "writing the log file again", p, d, s);
}

static void
fill_cur(gk_logfile *f)
{
	const char *p;
	size_t n;
	uint64_t at = f->size;
	while (f->nends < MAX_ENDS && f->cur.len < CHUNK &&
	       gk_equeue_peek(f->q, &p, &n)) {
		if (f->o.max_size && at + f->cur.len > 0 &&
		    at + f->cur.len + n > f->o.max_size) {
			f->want_rotate = true;
			break;
		}
		gk_buf_add(&f->cur, p, n);
		f->ends[f->nends++] = f->cur.len;
		gk_equeue_pop(f->q);
		if (f->o.fsync == GK_FSYNC_ALWAYS)
			break;
	}
}

static void
check_drained(gk_logfile *f)
{
	if (f->drained && !gk_logfile_pending(f)) {
		void (*fn)(gk_logfile *, void *) = f->drained;
		f->drained = NULL;
		if (f->o.fsync != GK_FSYNC_NEVER)
			do_fsync(f);
		fn(f, f->drained_arg);
	}
}

static void
flush(gk_logfile *f)
{
	f->dirty = false;
	if (gk_timer_armed(&f->retry) && f->blocked) {
		sync_gauge(f);
		return; /* wait for the retry */
	}
	gk_timer_stop(f->loop, &f->retry);
	if (f->want_reopen && f->cur_off == 0)
		reopen_now(f);
	if (f->fd < 0 && open_file(f) < 0) {
		block(f, errno);
		sync_gauge(f);
		return;
	}
	struct stat st;
	if (fstat(f->fd, &st) == 0) /* truncated by copytruncate? */
		f->size = (uint64_t)st.st_size;
	bool wrote = false;
	for (;;) {
		if (f->cur_off == f->cur.len) {
			f->cur.len = f->cur_off = 0;
			f->nends = 0;
			if (f->want_rotate)
				rotate_now(f);
			if (f->want_reopen)
				reopen_now(f);
			if (f->fd < 0 && open_file(f) < 0) {
				block(f, errno);
				break;
			}
			fill_cur(f);
			if (!f->cur.len) {
				if (f->want_rotate)
					continue; /* rotate, then go on */
				unblock(f);
				break;
			}
		}
		ssize_t w = write(f->fd, f->cur.data + f->cur_off,
		                  f->cur.len - f->cur_off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int err = w < 0 ? errno : ENOSPC;
			/* Write the rest of a cut record later, in place. */
			block(f, err);
			break;
		}
		size_t before = f->cur_off;
		f->cur_off += (size_t)w;
		f->size += (uint64_t)w;
		f->unsynced = wrote = true;
		size_t done = 0;
		for (size_t i = 0; i < f->nends; i++)
			if (f->ends[i] > before && f->ends[i] <= f->cur_off)
				done++;
		if (done && f->o.fsync == GK_FSYNC_ALWAYS)
			do_fsync(f);
		gk_export_sent(f->ex, done);
	}
	if (wrote && f->o.fsync == GK_FSYNC_BATCH)
		do_fsync(f);
	sync_gauge(f);
	check_drained(f);
}

static void
on_turn_end(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_logfile *f = arg;
	if (f->dirty)
		flush(f);
}

static uint64_t
next_rotation_ms(const gk_logfile *f)
{
	uint64_t now = gk_realtime_ms();
	if (f->o.daily) {
		time_t t = (time_t)(now / 1000);
		struct tm tm;
		localtime_r(&t, &tm);
		tm.tm_mday++;
		tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		tm.tm_isdst = -1;
		time_t next = mktime(&tm);
		return next > t ? (uint64_t)(next - t) * 1000 - now % 1000
		                : 1000;
	}
	uint64_t p = f->o.rotate_ms;
	return (now / p + 1) * p - now;
}

static void
on_rotate_timer(gk_loop *loop, void *arg)
{
	gk_logfile *f = arg;
	if (f->size > 0 || f->cur.len) {
		f->want_rotate = true;
		f->dirty = true;
		flush(f);
	}
	gk_timer_start(loop, &f->rotate_timer, next_rotation_ms(f),
	               on_rotate_timer, f);
}

gk_logfile *
gk_logfile_new(gk_export *ex, const gk_logfile_opts *o)
{
	gk_logfile *f = gk_xcalloc(1, sizeof *f);
	f->ex = ex;
	f->loop = gk_export_loop(ex);
	f->o = *o;
	f->path = gk_xstrdup(o->path);
	f->fd = -1;
	if (!f->o.keep)
		f->o.keep = 1;
	if (!f->o.max_buffer)
		f->o.max_buffer = 4u << 20;
	if (open_file(f) < 0) {
		int err = errno;
		free(f->path);
		free(f);
		errno = err;
		return NULL;
	}
	f->q = gk_equeue_new(f->o.max_buffer, 0);
	gk_backoff_init(&f->backoff, 100, 2000);
	gk_export_hold(ex, abandon, f);
	f->m_rotations = gk_metric_series(gk_counter_new(
	    "gk_export_file_rotations_total", "Log files rotated", NULL));
	f->m_fsyncs = gk_metric_series(gk_counter_new(
	    "gk_export_file_fsyncs_total", "fdatasync calls made", NULL));
	f->m_reopens = gk_metric_series(
	    gk_counter_new("gk_export_file_reopens_total",
	                   "Log file reopened (SIGHUP)", NULL));
	f->m_blocked = gk_metric_series(gk_counter_new(
	    "gk_export_file_blocked_total",
	    "Times writing stopped on an error (a full disk), events held",
	    NULL));
	gk_loop_on_turn_end(f->loop, on_turn_end, f);
	if (f->o.rotate_ms || f->o.daily)
		gk_timer_start(f->loop, &f->rotate_timer, next_rotation_ms(f),
		               on_rotate_timer, f);
	return f;
}

void
gk_logfile_add(gk_logfile *f, const void *p, size_t n)
{
	size_t d = gk_equeue_push(f->q, p, n);
	if (d)
		gk_export_dropped(f->ex, d);
	f->dirty = true;
	/* A large backlog: write now rather than at the turn's end. */
	if (gk_equeue_bytes(f->q) >= CHUNK && !f->blocked)
		flush(f);
}

void
gk_logfile_reopen(gk_logfile *f)
{
	f->want_reopen = true;
	if (f->cur_off)
		rewind_partial(f);
	f->dirty = true;
	if (f->blocked) {
		/* The new file may be writable: try now. */
		gk_timer_stop(f->loop, &f->retry);
	}
	flush(f);
}

void
gk_logfile_rotate(gk_logfile *f)
{
	f->want_rotate = true;
	f->dirty = true;
	flush(f);
}

size_t
gk_logfile_pending(const gk_logfile *f)
{
	size_t n = gk_equeue_count(f->q);
	for (size_t i = 0; i < f->nends; i++)
		if (f->ends[i] > f->cur_off)
			n++;
	return n;
}

void
gk_logfile_drain(gk_logfile *f, void (*fn)(gk_logfile *, void *), void *arg)
{
	f->drained = fn;
	f->drained_arg = arg;
	flush(f);
	check_drained(f);
}

/* The drain timeout: what is queued or not completely written is given
 * up (export.h, gk_export_hold). */
static size_t
abandon(void *arg)
{
	gk_logfile *f = arg;
	size_t n = gk_logfile_pending(f);
	while (gk_equeue_count(f->q))
		gk_equeue_pop(f->q);
	f->cur.len = f->cur_off = 0;
	f->nends = 0;
	f->drained = NULL;
	sync_gauge(f);
	return n;
}

void
gk_logfile_free(gk_logfile *f)
{
	if (!f)
		return;
	gk_export_unhold(f->ex, f);
	close_file(f);
	gk_timer_stop(f->loop, &f->retry);
	gk_timer_stop(f->loop, &f->rotate_timer);
	gk_export_queue_change(f->ex, -(int64_t)f->qbytes_seen);
	gk_equeue_free(f->q);
	gk_buf_free(&f->cur);
	free(f->path);
	free(f);
}
