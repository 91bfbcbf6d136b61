/*
 * gk-exporter: run an exporter plugin, or feed one event stream to several.
 *
 *   gk-exporter NAME [ARGS...]           exec gk-export-NAME ARGS...
 *   gk-exporter --to NAME[:ARGS] ...     fan out stdin to each plugin
 *
 * In fan-out mode every sink has its own bounded buffer: a plugin that is
 * slow, stuck or dead never holds up the others, and stdin is always read,
 * so the stack that writes the events never blocks on us.  Past its bound
 * a sink drops its oldest events and says so (an event, at most once a
 * second, and gk_exporter_dropped_total{sink}).  A plugin that exits is
 * started again with backoff.  See gk-exporter(1).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "export.h"

#define MAX_SINKS 32
#define CHUNK 65536
#define MAX_ENDS 8192

struct sink {
	int index;
	char name[64]; /* the plugin name */
	char label[80]; /* sink label: name, or name#N when repeated */
	char **argv;    /* argv[0] is "gk-export-NAME" */
	pid_t pid;
	int fd;  /* write end of the child's stdin, -1 when none */
	int rfd; /* its read end, kept to count what a dead plugin left */
	bool want_write, closed_for_eof;
	uint64_t closed_ms;  /* when its stdin was closed at the end */
	uint64_t progress_ms; /* when its plugin last took bytes */
	uint64_t kill_at_ms; /* SIGTERM sent: SIGKILL after this */
	uint64_t started_ms;
	gk_equeue *q;
	gk_buf cur; /* events moved out of q, being written */
	size_t cur_off;
	size_t ends[MAX_ENDS];
	size_t nends;
	uint64_t dropped_told;
	gk_backoff backoff;
	gk_timer restart;
	gk_series *m_sent, *m_dropped, *m_restarts, *m_lost, *m_queue;
};

static struct {
	gk_loop *loop;
	struct sink sink[MAX_SINKS];
	int nsinks;
	size_t buffer_bytes, buffer_events;
	gk_buf in;
	bool eof, terminating, skipping;
	bool file_in; /* stdin is a regular file: see on_file_tick */
	gk_timer tick, kill_timer, file_timer;
	uint64_t eof_ms, drain_ms;
	char selfdir[PATH_MAX];
	gk_metric *f_sent, *f_dropped, *f_restarts, *f_lost, *f_queue;
	gk_series *m_raw;
	gk_buf wrap;
} X;

/* ------------------------------------------------------------------ */
/* Finding and starting plugins                                        */
/* ------------------------------------------------------------------ */

static void
find_selfdir(void)
{
	ssize_t n = readlink("/proc/self/exe", X.selfdir, sizeof X.selfdir - 1);
	if (n <= 0) {
		X.selfdir[0] = 0;
		return;
	}
	X.selfdir[n] = 0;
	char *slash = strrchr(X.selfdir, '/');
	if (slash)
		*slash = 0;
}

/*
 * Exec gk-export-NAME: from $GK_EXPORTER_DIR, then the install's libexec
 * directory, then next to this program (../libexec/gokit and, in the build
 * tree, ../exporters), then PATH.  Returns only on failure.
 */
static void
exec_plugin(const char *name, char **argv)
{
	char prog[128], path[PATH_MAX + 200];
	snprintf(prog, sizeof prog, "gk-export-%s", name);
	argv[0] = prog;
	if (strchr(name, '/')) {
		errno = EINVAL;
		return;
	}
	const char *dirs[4] = {getenv("GK_EXPORTER_DIR"), GK_LIBEXEC, NULL,
	                       NULL};
	char d1[PATH_MAX + 32], d2[PATH_MAX + 32];
	if (X.selfdir[0]) {
		snprintf(d1, sizeof d1, "%s/../libexec/gokit", X.selfdir);
		snprintf(d2, sizeof d2, "%s/../exporters", X.selfdir);
		dirs[2] = d1;
		dirs[3] = d2;
	}
	for (int i = 0; i < 4; i++) {
		if (!dirs[i] || !*dirs[i])
			continue;
		snprintf(path, sizeof path, "%s/%s", dirs[i], prog);
		if (access(path, X_OK) == 0)
			execv(path, argv);
	}
	execvp(prog, argv);
}

static void sink_io(gk_loop *loop, int fd, unsigned events, void *arg);
static void on_child(gk_loop *loop, pid_t pid, int wstatus, void *arg);
static void maybe_finish(void);
static void start_drain(void);
static bool sinks_busy(void);
static void on_kill(gk_loop *loop, void *arg);

static void
sink_start(struct sink *s)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		gk_logf(GK_ERROR, "sink %s: pipe: %s", s->label, strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		gk_logf(GK_ERROR, "sink %s: fork: %s", s->label, strerror(errno));
		close(p[0]);
		close(p[1]);
		return;
	}
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		dup2(p[0], 0);
		exec_plugin(s->name, s->argv);
		fprintf(stderr,
		    "{\"type\":\"log\",\"level\":\"error\",\"proc\":"
		    "\"gk-exporter\",\"msg\":\"cannot run plugin gk-export-%s: "
		    "%s\"}\n",
		    s->name, strerror(errno));
		_exit(127);
	}
	/* The read end stays open here (close-on-exec): when the plugin
	 * dies, what it left unread in the pipe is counted as lost. */
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	s->rfd = p[0];
	s->fd = p[1];
	s->pid = pid;
	s->want_write = false;
	s->kill_at_ms = 0;
	s->started_ms = s->progress_ms = gk_loop_now(X.loop);
	gk_loop_watch(X.loop, s->fd, 0, sink_io, s);
	gk_loop_child(X.loop, pid, on_child, s);
	char f[100], g[40];
	snprintf(f, sizeof f, "sink=%s", s->label);
	snprintf(g, sizeof g, "plugin_pid=%d", (int)pid);
	gk_log(GK_INFO, "plugin started", f, g);
}

static void
on_restart(gk_loop *loop, void *arg)
{
	(void)loop;
	struct sink *s = arg;
	if (!X.terminating && !X.eof)
		sink_start(s);
}

/* Drop what the sink holds and has not written whole (the rest of cur,
 * its buffer), counted; returns the count. */
static size_t
discard(struct sink *s)
{
	size_t n = gk_equeue_count(s->q);
	for (size_t i = 0; i < s->nends; i++)
		if (s->ends[i] > s->cur_off)
			n++;
	s->cur.len = s->cur_off = 0;
	s->nends = 0;
	while (gk_equeue_count(s->q))
		gk_equeue_pop(s->q);
	gk_counter_add(s->m_dropped, (double)n);
	return n;
}

/* Close the read end; returns the events left unread in the pipe. */
static size_t
close_rfd(struct sink *s)
{
	size_t lines = 0;
	if (s->rfd < 0)
		return 0;
	/* Only what is there: the read end is blocking (it is the plugin's
	 * stdin, and O_NONBLOCK would be shared with it). */
	char buf[65536];
	int avail = 0;
	while (ioctl(s->rfd, FIONREAD, &avail) == 0 && avail > 0) {
		size_t want = (size_t)avail < sizeof buf ? (size_t)avail
		                                         : sizeof buf;
		ssize_t n = read(s->rfd, buf, want);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	}
	close(s->rfd);
	s->rfd = -1;
	return lines;
}

static void
close_pipe(struct sink *s)
{
	if (s->fd < 0)
		return;
	gk_loop_unwatch(X.loop, s->fd);
	close(s->fd);
	s->fd = -1;
	s->want_write = false;
}

static void
on_child(gk_loop *loop, pid_t pid, int wstatus, void *arg)
{
	(void)pid;
	struct sink *s = arg;
	/* Written to it whole but never read: lost.  An event we were in
	 * the middle of writing is dropped; those not begun stay in cur
	 * for the plugin started next. */
	size_t lost = close_rfd(s);
	gk_counter_add(s->m_lost, (double)lost);
	for (size_t i = 0; i < s->nends; i++) {
		if (s->ends[i] <= s->cur_off)
			continue;
		size_t start = i ? s->ends[i - 1] : 0;
		if (start < s->cur_off) {
			gk_counter_add(s->m_dropped, 1);
			s->cur_off = s->ends[i];
		}
		break;
	}
	close_pipe(s);
	s->pid = 0;
	char f[100], g[64], h[40];
	snprintf(f, sizeof f, "sink=%s", s->label);
	if (WIFEXITED(wstatus))
		snprintf(g, sizeof g, "status=%d", WEXITSTATUS(wstatus));
	else
		snprintf(g, sizeof g, "signal=%d", WTERMSIG(wstatus));
	snprintf(h, sizeof h, "lost_events=%zu", lost);
	if (X.eof) {
		if (!s->closed_for_eof) {
			/* Died while draining: what it had not taken is
			 * dropped. */
			discard(s);
			s->closed_for_eof = true;
		}
		gk_log(lost ? GK_WARN : GK_INFO, "plugin exited", f, g, h);
		maybe_finish();
		return;
	}
	/* Backoff starts over after a plugin that ran for a while. */
	if (gk_loop_now(loop) - s->started_ms > 10000)
		gk_backoff_reset(&s->backoff);
	uint64_t d = gk_backoff_next(&s->backoff);
	char r[40];
	snprintf(r, sizeof r, "restart_in_ms=%llu", (unsigned long long)d);
	gk_log(GK_ERROR, "plugin exited: restarting", f, g, h, r);
	gk_counter_add(s->m_restarts, 1);
	gk_timer_start(loop, &s->restart, d, on_restart, s);
}

/* ------------------------------------------------------------------ */
/* Feeding                                                             */
/* ------------------------------------------------------------------ */

static void
sync_queue_gauge(struct sink *s)
{
	gk_gauge_set(s->m_queue,
	    (double)(gk_equeue_bytes(s->q) + s->cur.len - s->cur_off));
}

static void
fill(struct sink *s)
{
	const char *p;
	size_t n;
	while (s->nends < MAX_ENDS && s->cur.len < CHUNK &&
	       gk_equeue_peek(s->q, &p, &n)) {
		gk_buf_add(&s->cur, p, n);
		s->ends[s->nends++] = s->cur.len;
		gk_equeue_pop(s->q);
	}
}

static void
set_want_write(struct sink *s, bool want)
{
	if (s->fd < 0 || want == s->want_write)
		return;
	s->want_write = want;
	gk_loop_modify(X.loop, s->fd, want ? GK_WRITE : 0);
}

static void
pump(struct sink *s)
{
	if (s->fd < 0)
		return;
	for (;;) {
		if (s->cur_off == s->cur.len) {
			s->cur.len = s->cur_off = 0;
			s->nends = 0;
			fill(s);
			if (!s->cur.len)
				break;
		}
		ssize_t w = write(s->fd, s->cur.data + s->cur_off,
		    s->cur.len - s->cur_off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				set_want_write(s, true);
				sync_queue_gauge(s);
				return;
			}
			/* EPIPE: the plugin is gone; on_child restarts it. */
			close_pipe(s);
			sync_queue_gauge(s);
			return;
		}
		size_t before = s->cur_off, done = 0;
		s->cur_off += (size_t)w;
		s->progress_ms = gk_loop_now(X.loop);
		for (size_t i = 0; i < s->nends; i++)
			if (s->ends[i] > before && s->ends[i] <= s->cur_off)
				done++;
		gk_counter_add(s->m_sent, (double)done);
	}
	if (s->cur.cap > 4 * CHUNK)
		gk_buf_free(&s->cur);
	set_want_write(s, false);
	sync_queue_gauge(s);
	if (X.eof && !s->closed_for_eof && !gk_equeue_count(s->q)) {
		/* Everything is written: EOF tells the plugin to drain. */
		s->closed_for_eof = true;
		s->closed_ms = gk_loop_now(X.loop);
		close_pipe(s);
	}
}

static void
sink_io(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	(void)fd;
	(void)events;
	pump(arg);
}

/* True when line (without its newline) is one JSON object. */
static bool
is_object(const char *line, size_t len)
{
	size_t i = 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i == len || line[i] != '{')
		return false;
	gk_wire_error err;
	return gk_json_validate(line, len, &err) == 0;
}

static void
push_line(const char *line, size_t len)
{
	/* len counts the newline.  A line that is not an event is wrapped
	 * as a log event with "raw":true: every sink gets events only. */
	size_t n = len - 1;
	if (n && line[n - 1] == '\r')
		n--;
	if (!n)
		return;
	if (!is_object(line, n)) {
		gk_counter_add(X.m_raw, 1);
		gk_buf_reset(&X.wrap);
		gk_event_wrap_raw(&X.wrap, line, n);
		gk_buf_addc(&X.wrap, '\n');
		line = X.wrap.data;
		len = X.wrap.len;
	}
	for (int i = 0; i < X.nsinks; i++) {
		struct sink *s = &X.sink[i];
		size_t d = gk_equeue_push(s->q, line, len);
		if (d)
			gk_counter_add(s->m_dropped, (double)d);
	}
}

static void
on_turn_end(gk_loop *loop, void *arg)
{
	(void)loop;
	(void)arg;
	for (int i = 0; i < X.nsinks; i++) {
		struct sink *s = &X.sink[i];
		if (s->fd >= 0 && !s->want_write)
			pump(s);
	}
}

static void
on_stdin(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	(void)events;
	(void)arg;
	int err = -1;
	for (int round = 0; round < 16; round++) {
		gk_buf_reserve(&X.in, CHUNK);
		size_t room = X.in.cap - X.in.len - 1;
		if (X.file_in) {
			/* A file: a bit at a time, while the sinks keep up. */
			if (round && sinks_busy())
				break;
			if (room > X.buffer_bytes / 4)
				room = X.buffer_bytes / 4;
		}
		ssize_t n = read(fd, X.in.data + X.in.len, room);
		if (n > 0) {
			X.in.len += (size_t)n;
			size_t start = 0;
			for (;;) {
				char *nl = memchr(X.in.data + start, '\n',
				    X.in.len - start);
				if (!nl)
					break;
				size_t end = (size_t)(nl - X.in.data) + 1;
				if (X.skipping)
					X.skipping = false;
				else if (end - start > 1)
					push_line(X.in.data + start,
					    end - start);
				start = end;
			}
			gk_buf_consume(&X.in, start);
			if (X.in.len > X.buffer_bytes) {
				/* No sink could hold it: drop it everywhere,
				 * up to its newline. */
				if (!X.skipping) {
					for (int i = 0; i < X.nsinks; i++)
						gk_counter_add(
						    X.sink[i].m_dropped, 1);
					char f[64];
					snprintf(f, sizeof f, "max_bytes=%zu",
					    X.buffer_bytes);
					gk_log(GK_ERROR, "event longer than the "
					                 "sink buffer: dropped", f);
				}
				X.skipping = true;
				X.in.len = 0;
			}
			/* Let the sinks take this chunk before the next. */
			on_turn_end(loop, NULL);
			if ((size_t)n < room)
				break;
			continue;
		}
		if (n == 0)
			err = 0;
		else if (errno == EINTR)
			continue;
		else if (errno != EAGAIN)
			err = errno;
		break;
	}
	if (err < 0)
		return;
	start_drain();
}

/*
 * stdin ended, or TERM/INT: no more events.  Each sink gets what its
 * buffer holds, then EOF on its stdin (a plugin's signal to deliver what
 * it has and exit); a sink whose plugin is down loses its buffer, counted
 * as dropped.  on_tick closes the sinks that take longer than the drain
 * timeout; on_kill ends the plugins that do not exit after that.
 */
static void
start_drain(void)
{
	if (X.eof)
		return;
	if (X.in.len && !X.skipping) { /* a last line without newline */
		gk_buf_addc(&X.in, '\n');
		push_line(X.in.data, X.in.len);
		X.in.len = 0;
	}
	gk_loop_unwatch(X.loop, 0);
	X.eof = true;
	X.eof_ms = gk_loop_now(X.loop);
	for (int i = 0; i < X.nsinks; i++) {
		struct sink *s = &X.sink[i];
		gk_timer_stop(X.loop, &s->restart);
		if (s->fd < 0) {
			s->closed_for_eof = true;
			size_t left = discard(s);
			if (left) {
				char f[100], g[40];
				snprintf(f, sizeof f, "sink=%s", s->label);
				snprintf(g, sizeof g, "dropped=%zu", left);
				gk_log(GK_WARN, "plugin down at drain: events "
				                "dropped", f, g);
			}
		} else {
			pump(s);
		}
	}
	maybe_finish();
}

/*
 * stdin is a regular file: nothing upstream can be held up, so it is read
 * only as fast as the sinks take it, except a sink whose plugin took
 * nothing for a second (stuck, or dead): that one drops as usual.
 */
static bool
sinks_busy(void)
{
	uint64_t now = gk_loop_now(X.loop);
	for (int i = 0; i < X.nsinks; i++) {
		struct sink *s = &X.sink[i];
		if (s->fd >= 0 && now - s->progress_ms < 1000 &&
		    gk_equeue_bytes(s->q) > X.buffer_bytes / 2)
			return true;
	}
	return false;
}

static void
on_file_tick(gk_loop *loop, void *arg)
{
	(void)arg;
	if (X.eof)
		return;
	bool busy = sinks_busy();
	if (!busy)
		on_stdin(loop, 0, GK_READ, NULL);
	if (!X.eof)
		gk_timer_start(loop, &X.file_timer, busy ? 2 : 0, on_file_tick,
		    NULL);
}

/* ------------------------------------------------------------------ */
/* Ticks, drops, ending                                                */
/* ------------------------------------------------------------------ */

static void
maybe_finish(void)
{
	for (int i = 0; i < X.nsinks; i++)
		if (X.sink[i].pid)
			return;
	if (X.eof || X.terminating)
		gk_loop_stop(X.loop);
}

/* Bytes written to the plugin's pipe that it has not read yet. */
static int
unread_bytes(const struct sink *s)
{
	int avail = 0;
	if (s->rfd < 0 || ioctl(s->rfd, FIONREAD, &avail) < 0)
		return 0;
	return avail;
}

/* SIGTERM now, SIGKILL 2 s later if it still runs (on_tick). */
static void
stop_plugin(struct sink *s)
{
	if (!s->pid || s->kill_at_ms)
		return;
	kill(s->pid, SIGTERM);
	s->kill_at_ms = gk_loop_now(X.loop) + 2000;
}

static void
on_tick(gk_loop *loop, void *arg)
{
	(void)arg;
	for (int i = 0; i < X.nsinks; i++) {
		struct sink *s = &X.sink[i];
		uint64_t d = gk_equeue_dropped(s->q);
		if (d != s->dropped_told) {
			char f[100], g[40], h[40];
			snprintf(f, sizeof f, "sink=%s", s->label);
			snprintf(g, sizeof g, "dropped=%llu",
			    (unsigned long long)d);
			snprintf(h, sizeof h, "since_last=%llu",
			    (unsigned long long)(d - s->dropped_told));
			gk_log(GK_WARN, "sink buffer full: oldest events dropped",
			    f, g, h);
			s->dropped_told = d;
		}
		/* Draining after EOF: a sink that does not take its events
		 * within the drain timeout is closed anyway. */
		if (X.eof && !s->closed_for_eof &&
		    gk_loop_now(loop) - X.eof_ms > X.drain_ms) {
			size_t left = discard(s);
			char f[100], g[40];
			snprintf(f, sizeof f, "sink=%s", s->label);
			snprintf(g, sizeof g, "dropped=%zu", left);
			gk_log(GK_WARN, "drain timeout: sink closed", f, g);
			s->closed_for_eof = true;
			s->closed_ms = gk_loop_now(loop);
			close_pipe(s);
			/* It did not read: it will not drain either. */
			stop_plugin(s);
		}
		/* On TERM, a plugin that has read everything and still runs
		 * a second later (a server, such as prometheus) is told to
		 * stop too. */
		if (X.terminating && s->pid && !s->kill_at_ms &&
		    s->closed_for_eof &&
		    gk_loop_now(loop) - s->closed_ms >= 1000 &&
		    !unread_bytes(s))
			stop_plugin(s);
		if (s->pid && s->kill_at_ms && gk_loop_now(loop) >= s->kill_at_ms) {
			char f[100];
			snprintf(f, sizeof f, "sink=%s", s->label);
			gk_log(GK_WARN, "plugin did not exit: killed", f);
			kill(s->pid, SIGKILL);
			s->kill_at_ms = UINT64_MAX;
		}
	}
	gk_timer_start(loop, &X.tick, 1000, on_tick, NULL);
}

static void
on_kill(gk_loop *loop, void *arg)
{
	(void)loop;
	(void)arg;
	for (int i = 0; i < X.nsinks; i++)
		if (X.sink[i].pid) {
			char f[100];
			snprintf(f, sizeof f, "sink=%s", X.sink[i].label);
			gk_log(GK_WARN, "plugin did not exit: killed", f);
			kill(X.sink[i].pid, SIGKILL);
		}
}

static void
on_term(gk_loop *loop, int signo, void *arg)
{
	(void)signo;
	(void)arg;
	if (X.terminating) { /* a second one: now */
		on_kill(loop, NULL);
		return;
	}
	X.terminating = true;
	start_drain();
	/* The last resort, whatever the plugins do. */
	gk_timer_start(loop, &X.kill_timer, X.drain_ms + 4000, on_kill, NULL);
}

static void
on_hup(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)arg;
	for (int i = 0; i < X.nsinks; i++)
		if (X.sink[i].pid)
			kill(X.sink[i].pid, signo);
}

/* USR1 is not passed on: its default action ends a plugin that does not
 * handle it (a script).  Each plugin writes its own snapshots. */
static void
on_usr1(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)signo;
	(void)arg;
	gk_metrics_snapshot();
}

static uint64_t metrics_ms;
static gk_timer metrics_timer;

static void
on_metrics(gk_loop *loop, void *arg)
{
	(void)arg;
	gk_metrics_snapshot();
	gk_timer_start(loop, &metrics_timer, metrics_ms, on_metrics, NULL);
}

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

/* "NAME:A,B\,C" -> name NAME, argv {-, "A", "B,C", NULL} */
static void
parse_to(const char *spec, struct sink *s)
{
	const char *colon = strchr(spec, ':');
	size_t nl = colon ? (size_t)(colon - spec) : strlen(spec);
	if (!nl || nl >= sizeof s->name)
		gk_usage_error("bad --to: %s (expected NAME[:ARG,ARG...])",
		    spec);
	memcpy(s->name, spec, nl);
	s->name[nl] = 0;
	for (size_t i = 0; i < nl; i++) {
		char c = s->name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.'))
			gk_usage_error("bad --to: %s (plugin name: letters, "
			               "digits, '-', '_', '.')",
			    spec);
	}
	size_t cap = 4, n = 1;
	s->argv = gk_xcalloc(cap, sizeof *s->argv);
	if (colon) {
		gk_buf arg = {0};
		const char *p = colon + 1;
		for (;; p++) {
			if (*p == '\\' && (p[1] == ',' || p[1] == '\\')) {
				gk_buf_addc(&arg, *++p);
				continue;
			}
			if (*p && *p != ',') {
				gk_buf_addc(&arg, *p);
				continue;
			}
			if (n + 2 > cap) {
				cap *= 2;
				s->argv = gk_xrealloc(s->argv,
				    cap * sizeof *s->argv);
			}
			s->argv[n++] = gk_xstrdup(arg.len ? gk_buf_cstr(&arg)
			                                  : "");
			arg.len = 0;
			if (!*p)
				break;
		}
		gk_buf_free(&arg);
	}
	s->argv[n] = NULL;
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gk-exporter NAME [ARGS...]\n"
	    "       gk-exporter [--buffer SIZE] [--buffer-events N] "
	    "--to NAME[:ARG,ARG...] ...\n"
	    "Run the exporter plugin gk-export-NAME, or feed the events on "
	    "stdin to several.\n"
	    "  --to NAME[:ARGS]     a sink: plugin NAME with ARGS split on "
	    "commas (\\, for a comma)\n"
	    "  --buffer SIZE        per-sink buffer bound (4m)\n"
	    "  --buffer-events N    per-sink bound in events (none)\n"
	    "  --drain-timeout DUR  at EOF or TERM, time given to the sinks "
	    "(5s)\n"
	    "  -h, --help           this help\n"
	    "  -V, --version        version\n");
}

int
main(int argc, char **argv)
{
	gk_events_init("gk-exporter");
	find_selfdir();
	X.buffer_bytes = 4u << 20;
	X.drain_ms = 5000;
	const char *tos[MAX_SINKS];
	int ntos = 0;
	static const struct option opts[] = {
	    {"to", required_argument, NULL, 't'},
	    {"buffer", required_argument, NULL, 'b'},
	    {"buffer-events", required_argument, NULL, 'n'},
	    {"drain-timeout", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	uint64_t v;
	opterr = 0;
	/* '+': options end at the plugin name (gk-exporter NAME -l ...). */
	while ((c = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (ntos == MAX_SINKS)
				gk_usage_error("too many --to: %s (at most 32)",
				    optarg);
			tos[ntos++] = optarg;
			break;
		case 'b':
			if (gk_parse_size(optarg, &X.buffer_bytes) < 0 ||
			    X.buffer_bytes < 4096)
				gk_usage_error("bad --buffer: %s (expected a "
				               "size of at least 4k, e.g. 4m)",
				    optarg);
			break;
		case 'n':
			if (gk_parse_uint(optarg, 1, 100000000, &v) < 0)
				gk_usage_error("bad --buffer-events: %s "
				               "(expected a count)",
				    optarg);
			X.buffer_events = v;
			break;
		case 'd':
			if (gk_parse_duration_ms(optarg, &X.drain_ms) < 0)
				gk_usage_error("bad --drain-timeout: %s "
				               "(expected a duration, e.g. 5s)",
				    optarg);
			break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("gk-exporter %s\n", GK_VERSION); return 0;
		case ':':
			gk_usage_error("%s: expected a value (see --help)",
			    argv[optind - 1]);
			break;
		default:
			if (optopt)
				gk_usage_error("unknown option -%c (see --help)",
				    optopt);
			gk_usage_error("unknown option %s (see --help)",
			    argv[optind - 1]);
		}
	}
	if (!ntos) {
		if (optind >= argc)
			gk_usage_error("expected a plugin NAME [ARGS...] or "
			               "--to NAME[:ARGS] (see --help)");
		const char *name = argv[optind];
		if (!*name || strchr(name, '/'))
			gk_usage_error("bad plugin name: %s (expected NAME, "
			               "e.g. prometheus)",
			    name);
		exec_plugin(name, argv + optind);
		gk_fatal(127, "cannot run plugin gk-export-%s: %s", name,
		    strerror(errno));
	}
	if (optind < argc)
		gk_usage_error("unexpected argument: %s (with --to, every sink "
		               "is a --to)",
		    argv[optind]);

	signal(SIGPIPE, SIG_IGN);
	X.loop = gk_loop_new();
	X.f_sent = gk_counter_new("gk_exporter_sent_total",
	    "Events written to each sink's plugin", "sink");
	X.f_dropped = gk_counter_new("gk_exporter_dropped_total",
	    "Events never written whole to a sink's plugin: buffer full, "
	    "drain timeout, plugin down at the end", "sink");
	X.f_restarts = gk_counter_new("gk_exporter_restarts_total",
	    "Restarts of a sink's plugin", "sink");
	X.f_lost = gk_counter_new("gk_exporter_lost_total",
	    "Events written to a plugin and left unread when it exited",
	    "sink");
	X.f_queue = gk_gauge_new("gk_exporter_queue_bytes",
	    "Bytes in a sink's buffer", "sink");
	X.m_raw = gk_metric_series(gk_counter_new("gk_exporter_raw_total",
	    "Lines that were not JSON, wrapped as raw log events", NULL));
	for (int i = 0; i < ntos; i++) {
		struct sink *s = &X.sink[X.nsinks];
		s->index = X.nsinks++;
		s->fd = s->rfd = -1;
		parse_to(tos[i], s);
		int same = 0;
		for (int j = 0; j < s->index; j++)
			if (!strcmp(X.sink[j].name, s->name))
				same++;
		/* Through a copy: GCC's -Wrestrict cannot tell the two
		 * members of one struct apart. */
		char label[sizeof s->label];
		if (same)
			snprintf(label, sizeof label, "%s#%d", s->name, same + 1);
		else
			snprintf(label, sizeof label, "%s", s->name);
		memcpy(s->label, label, sizeof label);
		s->q = gk_equeue_new(X.buffer_bytes, X.buffer_events);
		gk_backoff_init(&s->backoff, 100, 30000);
		s->m_sent = gk_series_get(X.f_sent, s->label, (char *)0);
		s->m_dropped = gk_series_get(X.f_dropped, s->label, (char *)0);
		s->m_restarts = gk_series_get(X.f_restarts, s->label, (char *)0);
		s->m_lost = gk_series_get(X.f_lost, s->label, (char *)0);
		s->m_queue = gk_series_get(X.f_queue, s->label, (char *)0);
	}
	int fl = fcntl(0, F_GETFL);
	if (fl != -1)
		fcntl(0, F_SETFL, fl | O_NONBLOCK);
	gk_loop_signal(X.loop, SIGTERM, on_term, NULL);
	gk_loop_signal(X.loop, SIGINT, on_term, NULL);
	gk_loop_signal(X.loop, SIGHUP, on_hup, NULL);
	gk_loop_signal(X.loop, SIGUSR1, on_usr1, NULL);
	gk_loop_on_turn_end(X.loop, on_turn_end, NULL);
	for (int i = 0; i < X.nsinks; i++)
		sink_start(&X.sink[i]);
	if (fl == -1)
		on_stdin(X.loop, 0, 0, NULL);
	else if (gk_loop_watch(X.loop, 0, GK_READ, on_stdin, NULL) < 0) {
		/* A regular file: always readable, epoll cannot watch it. */
		X.file_in = true;
		gk_timer_start(X.loop, &X.file_timer, 0, on_file_tick, NULL);
	}
	gk_timer_start(X.loop, &X.tick, 1000, on_tick, NULL);
	const char *mi = getenv("GK_METRICS_INTERVAL");
	metrics_ms = 10000;
	if (mi && *mi && gk_parse_duration_ms(mi, &metrics_ms) < 0)
		metrics_ms = 10000;
	if (metrics_ms)
		gk_timer_start(X.loop, &metrics_timer, metrics_ms, on_metrics,
		    NULL);
	gk_loop_run(X.loop);
	on_tick(X.loop, NULL); /* say what was dropped, last */
	gk_metrics_snapshot();
	gk_events_flush();
	return 0;
}
