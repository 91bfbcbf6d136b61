/*
 * fanout_input.c: the event stream of a fan-out (fanout.h): lines read
 * from a descriptor and pushed to every sink.  A pipe or a socket is read
 * whenever it is readable, so the writer never blocks on us; a regular
 * file, where nothing upstream can be held up, only as fast as the live
 * sinks take it.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fanout.h"
#include "stream.h"

struct gk_fanout_input {
	gk_fanout *f;
	gk_loop *loop;
	int fd;
	size_t max_line;
	gk_buf in;
	bool skipping; /* past a line too long, up to its newline */
	bool stopped;
	bool file_in; /* a regular file: see on_file_tick */
	bool closed;  /* fd was not open */
	gk_timer file_timer;
};

/* Push the whole lines of in->in; drop a line longer than the bound. */
static void
split(gk_fanout_input *in)
{
	size_t start = 0;
	for (;;) {
		char *nl =
		    memchr(in->in.data + start, '\n', in->in.len - start);
		if (!nl)
			break;
		size_t end = (size_t)(nl - in->in.data) + 1;
		if (in->skipping)
			in->skipping = false;
		else if (end - start > 1)
			gk_fanout_push(in->f, in->in.data + start, end - start);
		start = end;
	}
	gk_buf_consume(&in->in, start);
	if (in->in.len > in->max_line) {
		/* No sink could hold it: dropped everywhere, up to its
		 * newline. */
		if (!in->skipping)
			gk_fanout_too_long(in->f);
		in->skipping = true;
		in->in.len = 0;
	}
}

static void
on_read(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	(void)fd;
	(void)events;
	gk_fanout_input *in = arg;
	int err = -1;
	for (int round = 0; round < 16; round++) {
		size_t max = 0;
		if (in->file_in) {
			/* A file: a bit at a time, while the sinks keep up. */
			if (round && gk_fanout_busy(in->f))
				break;
			max = in->max_line / 4;
		}
		bool full;
		if (!gk_read_chunk(in->fd, &in->in, max, &full, &err))
			break;
		split(in);
		/* Let the sinks take this chunk before the next. */
		gk_fanout_pump(in->f);
		if (!full)
			break;
	}
	if (err >= 0)
		gk_fanout_end(in->f);
}

/*
 * A regular file is always readable (epoll cannot watch it): read from a
 * timer, and only while no live sink is busy.  A sink whose plugin took
 * nothing for a second (stuck, or dead) does not count: it drops as usual.
 */
static void
on_file_tick(gk_loop *loop, void *arg)
{
	gk_fanout_input *in = arg;
	if (in->stopped)
		return;
	bool busy = gk_fanout_busy(in->f);
	if (!busy)
		on_read(loop, in->fd, GK_READ, in);
	if (!in->stopped)
		gk_timer_start(loop, &in->file_timer, busy ? 2 : 0,
		               on_file_tick, in);
}

gk_fanout_input *
gk_fanout_input_new(gk_fanout *f, gk_loop *loop, int fd, size_t max_line)
{
	gk_fanout_input *in = gk_xcalloc(1, sizeof *in);
	in->f = f;
	in->loop = loop;
	in->fd = fd;
	in->max_line = max_line;
	if (gk__fd_nonblock_inherited(fd) == -1)
		in->closed = true;
	return in;
}

void
gk_fanout_input_start(gk_fanout_input *in)
{
	if (in->closed)
		on_read(in->loop, in->fd, 0, in); /* fails: the end */
	else if (gk_loop_watch(in->loop, in->fd, GK_READ, on_read, in) < 0) {
		in->file_in = true;
		gk_timer_start(in->loop, &in->file_timer, 0, on_file_tick, in);
	}
}

void
gk_fanout_input_stop(gk_fanout_input *in)
{
	if (in->stopped)
		return;
	in->stopped = true;
	if (in->in.len && !in->skipping) { /* a last line without newline */
		gk_buf_addc(&in->in, '\n');
		gk_fanout_push(in->f, in->in.data, in->in.len);
		in->in.len = 0;
	}
	gk_loop_unwatch(in->loop, in->fd);
}

void
gk_fanout_input_free(gk_fanout_input *in)
{
	if (!in)
		return;
	gk_timer_stop(in->loop, &in->file_timer);
	gk_loop_unwatch(in->loop, in->fd);
	gk_buf_free(&in->in);
	free(in);
}
