/*
 * stream.h: a line-framed, nonblocking byte stream on one or two fds
 * (internal).  Reads drain the fd into the stream's buffer and hand out
 * whole lines; writes are appended and flushed once at the end of the loop
 * turn, so a burst of messages costs one write(2).
 */
#ifndef GK_STREAM_H
#define GK_STREAM_H

#include "gokit.h"

typedef struct gk_stream gk_stream;

/* The longest wire line (gk-wire(5)): a stream's default bound. */
#define GK_WIRE_MAX_LINE (16u << 20)

typedef struct gk_stream_ops {
	/* A line without its newline (NUL-terminated in place). */
	void (*on_line)(gk_stream *s, char *line, size_t len, void *arg);
	/* EOF (err 0) or an error on either fd.  The stream is still open:
	 * the callback closes it (gk_stream_close) when it is done with it. */
	void (*on_close)(gk_stream *s, int err, void *arg);
} gk_stream_ops;

/* Make an fd we inherited (stdin, stdout) non-blocking, its flags given
 * back at exit; -1 with errno when it is not open. */
int gk__fd_nonblock_inherited(int fd);

/* rfd or wfd may be -1 for a one-way stream; rfd == wfd for sockets. */
gk_stream *gk_stream_new(gk_loop *loop, int rfd, int wfd,
    const gk_stream_ops *ops, void *arg);
/* Lines longer than this are dropped (counted, and reported by event). */
void gk_stream_set_max_line(gk_stream *s, size_t max);
/* fn is called (arg as for the ops) when a line past the maximum begins,
 * as it is being dropped; it may close the stream. */
void gk_stream_on_too_long(gk_stream *s, void (*fn)(gk_stream *, void *));
/* In fn: the first bytes of the line being dropped (at least the maximum
 * line length of them; no NUL at the end). */
const char *gk_stream_line_head(const gk_stream *s, size_t *len);
void gk_stream_write(gk_stream *s, const void *p, size_t n);
/* A line: p then '\n'. */
void gk_stream_write_line(gk_stream *s, const void *p, size_t n);
size_t gk_stream_pending(const gk_stream *s);
/* Stop reading (backpressure, or draining), or start again. */
void gk_stream_pause(gk_stream *s, bool paused);
/* Close the write side after pending output is written (EOF for a child). */
void gk_stream_shutdown_write(gk_stream *s);
/* Close both fds and free; safe inside the stream's own callbacks. */
void gk_stream_close(gk_stream *s);
/* At exit: write everything pending, blocking. */
void gk_stream_flush_blocking(gk_stream *s);
bool gk_stream_write_open(const gk_stream *s);
int gk_stream_rfd(const gk_stream *s);

/*
 * One read(2) from the nonblocking fd onto the end of b, again after EINTR:
 * into the room b has once 64 KiB of it is made, or at most max bytes
 * (0: no bound).  Returns the bytes read, with *full set when they filled
 * the room (more may be waiting); 0 when nothing more comes now, with *err
 * -1 (EAGAIN: drained), 0 (EOF) or the errno.  What every reader of lines
 * on a loop does (streams, the exporter plugins' stdin, the fan-out).
 */
size_t gk_read_chunk(int fd, gk_buf *b, size_t max, bool *full, int *err);

#endif
