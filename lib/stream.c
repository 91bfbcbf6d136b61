/* stream.c: line-framed nonblocking streams, flushed once per loop turn. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream.h"

struct gk_stream {
	gk_loop *loop;
	int rfd, wfd;
	const gk_stream_ops *ops;
	void *arg;
	gk_buf in, out;
	size_t max_line;
	bool dirty, want_write, paused, busy, closing, skipping, eof;
	void (*on_too_long)(gk_stream *, void *);
	bool shutdown_pending;
	gk_stream *next_dirty;
};

/* Streams with output waiting for the end of the turn. */
static gk_stream *dirty_list;
static gk_loop *hooked_loop;

static void flush_all(gk_loop *loop, void *arg);
static void stream_io(gk_loop *loop, int fd, unsigned ev, void *arg);

static unsigned
wanted(const gk_stream *s, int fd)
{
	unsigned e = 0;
	if (fd == s->rfd && !s->paused && !s->eof)
		e |= GK_READ;
	if (fd == s->wfd && s->want_write)
		e |= GK_WRITE;
	return e;
}

static void
update_watch(gk_stream *s)
{
	if (s->rfd >= 0)
		gk_loop_modify(s->loop, s->rfd, wanted(s, s->rfd));
	if (s->wfd >= 0 && s->wfd != s->rfd)
		gk_loop_modify(s->loop, s->wfd, wanted(s, s->wfd));
}

gk_stream *
gk_stream_new(gk_loop *loop, int rfd, int wfd, const gk_stream_ops *ops,
              void *arg)
{
	gk_stream *s = gk_xcalloc(1, sizeof *s);
	s->loop = loop;
	s->rfd = rfd;
	s->wfd = wfd;
	s->ops = ops;
	s->arg = arg;
	s->max_line = GK_WIRE_MAX_LINE;
	if (hooked_loop != loop) {
		gk_loop_on_turn_end(loop, flush_all, NULL);
		hooked_loop = loop;
	}
	if (rfd >= 0)
		gk_loop_watch_any(loop, rfd, GK_READ, stream_io, s);
	if (wfd >= 0 && wfd != rfd)
		gk_loop_watch_any(loop, wfd, 0, stream_io, s);
	return s;
}

void
gk_stream_set_max_line(gk_stream *s, size_t max)
{
	s->max_line = max;
}

const char *
gk_stream_line_head(const gk_stream *s, size_t *len)
{
	*len = s->in.len;
	return s->in.data;
}

void
gk_stream_on_too_long(gk_stream *s, void (*fn)(gk_stream *, void *))
{
	s->on_too_long = fn;
}

int
gk_stream_rfd(const gk_stream *s)
{
	return s->rfd;
}

bool
gk_stream_write_open(const gk_stream *s)
{
	return s->wfd >= 0 && !s->closing;
}

size_t
gk_stream_pending(const gk_stream *s)
{
	return s->out.len;
}

static void
mark_dirty(gk_stream *s)
{
	if (!s->dirty) {
		s->dirty = true;
		s->next_dirty = dirty_list;
		dirty_list = s;
	}
}

void
gk_stream_write(gk_stream *s, const void *p, size_t n)
{
	if (s->wfd < 0 || s->closing)
		return;
	gk_buf_add(&s->out, p, n);
	mark_dirty(s);
}

void
gk_stream_write_line(gk_stream *s, const void *p, size_t n)
{
	if (s->wfd < 0 || s->closing)
		return;
	gk_buf_reserve(&s->out, n + 1);
	memcpy(s->out.data + s->out.len, p, n);
	s->out.data[s->out.len + n] = '\n';
	s->out.len += n + 1;
	mark_dirty(s);
}

static void
free_stream(gk_stream *s)
{
	if (s->rfd >= 0) {
		gk_loop_unwatch(s->loop, s->rfd);
		close(s->rfd);
	}
	if (s->wfd >= 0 && s->wfd != s->rfd) {
		gk_loop_unwatch(s->loop, s->wfd);
		close(s->wfd);
	}
	gk_buf_free(&s->in);
	gk_buf_free(&s->out);
	free(s);
}

void
gk_stream_close(gk_stream *s)
{
	if (s->closing)
		return;
	s->closing = true;
	/* Freed when it leaves the dirty list or its callback returns. */
	if (!s->busy && !s->dirty)
		free_stream(s);
}

static void
close_write_fd(gk_stream *s)
{
	if (s->wfd < 0)
		return;
	if (s->wfd == s->rfd)
		shutdown(s->wfd, SHUT_WR);
	else {
		gk_loop_unwatch(s->loop, s->wfd);
		close(s->wfd);
	}
	s->wfd = -1;
}

void
gk_stream_shutdown_write(gk_stream *s)
{
	if (s->out.len) {
		s->shutdown_pending = true;
		mark_dirty(s);
	} else
		close_write_fd(s);
}

void
gk_stream_pause(gk_stream *s, bool paused)
{
	if (s->paused == paused)
		return;
	s->paused = paused;
	update_watch(s);
}

/* Write what is pending, once.  Returns errno of a fatal error, or 0. */
static int
flush_one(gk_stream *s)
{
	if (s->wfd < 0 || !s->out.len)
		return 0;
	ssize_t n = write(s->wfd, s->out.data, s->out.len);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			n = 0;
		else
			return errno;
	}
	gk_buf_consume(&s->out, (size_t)n);
	bool want = s->out.len > 0;
	if (want != s->want_write) {
		s->want_write = want;
		update_watch(s);
	}
	if (!want && s->out.cap > (256u << 10))
		gk_buf_free(&s->out); /* do not keep a burst's memory */
	return 0;
}

/*
 * The write end failed (EPIPE: its reader is gone; ENOSPC, EIO): out of
 * the epoll set, which would report EPOLLERR on it every turn (whatever
 * was asked), and closed; a standard fd is pointed at /dev/null instead,
 * so that no file opened later takes its number.  A socket is left to its
 * read side, which sees the same failure.
 */
static void
drop_write_fd(gk_stream *s)
{
	if (s->wfd < 0 || s->wfd == s->rfd)
		return;
	gk_loop_unwatch(s->loop, s->wfd);
	if (s->wfd <= 2) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (null >= 0) {
			dup2(null, s->wfd);
			close(null);
		}
	} else
		close(s->wfd);
	s->wfd = -1;
	s->want_write = false;
}

static void
after_flush(gk_stream *s, int err)
{
	if (err) {
		s->out.len = 0;
		drop_write_fd(s);
		if (s->ops->on_close && !s->closing) {
			s->busy = true;
			s->ops->on_close(s, err, s->arg);
			s->busy = false;
		}
	} else if (s->shutdown_pending && !s->out.len) {
		s->shutdown_pending = false;
		close_write_fd(s);
	}
}

static void
flush_all(gk_loop *loop, void *arg)
{
	(void)loop;
	(void)arg;
	while (dirty_list) {
		gk_stream *s = dirty_list;
		dirty_list = s->next_dirty;
		s->dirty = false;
		if (s->closing) {
			if (!s->busy)
				free_stream(s);
			continue;
		}
		after_flush(s, flush_one(s));
		if (s->closing && !s->busy && !s->dirty)
			free_stream(s);
	}
}

/* The flags of inherited fds made non-blocking: O_NONBLOCK belongs to the
 * open file, which whoever started us shares (a shell's terminal, the
 * stdin of the next program of a script), so it is given back at exit. */
#define INHERITED_MAX 8
static struct {
	int fd, flags;
} inherited[INHERITED_MAX];
static unsigned ninherited;

static void
restore_inherited(void)
{
	for (unsigned i = 0; i < ninherited; i++)
		fcntl(inherited[i].fd, F_SETFL, inherited[i].flags);
}

int
gk__fd_nonblock_inherited(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl == -1)
		return -1;
	if (fl & O_NONBLOCK)
		return 0;
	for (unsigned i = 0; i < ninherited; i++)
		if (inherited[i].fd == fd)
			return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	if (ninherited < INHERITED_MAX) {
		if (!ninherited)
			atexit(restore_inherited);
		inherited[ninherited].fd = fd;
		inherited[ninherited++].flags = fl;
	}
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* The line at the head of s->in is past the maximum: said once, and the
 * stage told while its first bytes are still there (gk_stream_line_head),
 * so that it may find what the line was about. */
static void
line_too_long(gk_stream *s)
{
	char max[40];
	snprintf(max, sizeof max, "max_bytes=%zu", s->max_line);
	gk_log(GK_ERROR, "line too long: dropped", max);
	if (s->on_too_long)
		s->on_too_long(s, s->arg);
}

/*
 * deliver_lines for a buffer holding more than a line's maximum: a line
 * past it is dropped whether or not its end came in the same read (a fast
 * writer, or a regular file, can hand over a whole long line at once).
 * Apart from the common case so that a request costs no more.
 */
static void
deliver_lines_big(gk_stream *s)
{
	size_t start = 0;
	while (start < s->in.len && !s->closing) {
		char *p = s->in.data + start;
		char *nl = memchr(p, '\n', s->in.len - start);
		size_t len = nl ? (size_t)(nl - p) : s->in.len - start;
		if (len > s->max_line && !s->skipping) {
			gk_buf_consume(&s->in, start);
			start = 0;
			p = s->in.data;
			nl = nl ? p + len : NULL;
			s->skipping = true;
			line_too_long(s);
			if (s->closing)
				break;
		}
		if (!nl) {
			if (s->skipping) /* what came of a line being dropped */
				start = s->in.len;
			break;
		}
		*nl = 0;
		if (s->skipping)
			s->skipping = false;
		else
			s->ops->on_line(s, p, len, s->arg);
		start += len + 1;
	}
	gk_buf_consume(&s->in, start);
	if (!s->in.len && s->in.cap > (256u << 10))
		gk_buf_free(&s->in);
}

static void
deliver_lines(gk_stream *s)
{
	if (s->in.len > s->max_line) {
		deliver_lines_big(s);
		return;
	}
	/* Every line here is within the maximum, and so is what is left. */
	size_t start = 0;
	char *d = s->in.data;
	while (start < s->in.len && !s->closing) {
		char *nl = memchr(d + start, '\n', s->in.len - start);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (d + start));
		*nl = 0;
		if (s->skipping)
			s->skipping = false;
		else
			s->ops->on_line(s, d + start, len, s->arg);
		start += len + 1;
	}
	gk_buf_consume(&s->in, start);
	if (!s->in.len && s->in.cap > (256u << 10))
		gk_buf_free(&s->in);
}

/*
 * At the end of input, a last line without its LF is still a line, as
 * for jq or sort: a request piped in by printf would otherwise be lost
 * without a word, and a child that died mid-line has its cut line read
 * (and rejected, naming the request it answered).  Not one being dropped
 * for its length.
 */
static void
deliver_last_line(gk_stream *s)
{
	size_t len = s->in.len;
	bool skip = s->skipping;
	s->in.len = 0;
	s->skipping = false;
	if (!len || skip)
		return;
	s->in.data[len] = 0; /* gk_read_chunk leaves room for it */
	s->ops->on_line(s, s->in.data, len, s->arg);
}

size_t
gk_read_chunk(int fd, gk_buf *b, size_t max, bool *full, int *err)
{
	gk_buf_reserve(b, 65536);
	size_t room = b->cap - b->len - 1;
	if (max && room > max)
		room = max;
	for (;;) {
		ssize_t n = read(fd, b->data + b->len, room);
		if (n > 0) {
			b->len += (size_t)n;
			*full = (size_t)n == room;
			return (size_t)n;
		}
		if (n < 0 && errno == EINTR)
			continue;
		*err = n == 0 ? 0 : errno == EAGAIN ? -1 : errno;
		return 0;
	}
}

static void
stream_io(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	gk_stream *s = arg;
	if (s->closing)
		return;
	s->busy = true;
	if ((ev & GK_WRITE) && fd == s->wfd)
		after_flush(s, flush_one(s));
	if ((ev & GK_READ) && fd == s->rfd && !s->closing && !s->eof) {
		int err = -1;
		bool full;
		/* A short read means drained (level-triggered epoll); do not
		 * read again for EAGAIN. */
		while (gk_read_chunk(s->rfd, &s->in, 0, &full, &err) && full &&
		       s->in.len <= s->max_line)
			;
		if (s->in.len)
			deliver_lines(s);
		if (err >= 0 && !s->closing)
			deliver_last_line(s);
		if (err >= 0 && !s->closing) {
			s->eof = true;
			update_watch(s);
			if (s->ops->on_close)
				s->ops->on_close(s, err, s->arg);
		}
	}
	s->busy = false;
	if (s->closing && !s->dirty)
		free_stream(s);
}

void
gk_stream_flush_blocking(gk_stream *s)
{
	if (s->wfd < 0)
		return;
	fcntl(s->wfd, F_SETFL, fcntl(s->wfd, F_GETFL) & ~O_NONBLOCK);
	size_t off = 0;
	while (off < s->out.len) {
		ssize_t n = write(s->wfd, s->out.data + off, s->out.len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	s->out.len = 0;
}
