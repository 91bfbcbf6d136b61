/*
 * fanout.c: one event stream fed to several exporter plugin processes
 * (fanout.h): the sinks, their bounded buffers, the plugins' lives
 * (start, restart with backoff, what a dead one left unread) and the drain
 * at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "export.h"
#include "fanout.h"
#include "plugin_exec.h"

#define CHUNK 65536
#define MAX_ENDS 8192

struct sink {
	gk_fanout *f;
	char name[64];  /* the plugin name */
	char label[80]; /* sink label: name, or name#N when repeated */
	char **argv;    /* argv[0] is set to "gk-export-NAME" at exec */
	pid_t pid;
	int fd;  /* write end of the child's stdin, -1 when none */
	int rfd; /* its read end, kept to count what a dead plugin left */
	bool want_write, closed_for_eof;
	uint64_t closed_ms;   /* when its stdin was closed at the end */
	uint64_t progress_ms; /* when its plugin last took bytes */
	uint64_t kill_at_ms;  /* SIGTERM sent: SIGKILL after this */
	uint64_t started_ms;
	gk_equeue *q;
	gk_buf cur; /* events moved out of q, being written */
	size_t cur_off;
	size_t ends[MAX_ENDS]; /* where each event in cur ends */
	size_t nends;
	uint64_t dropped_told;
	gk_backoff backoff;
	gk_timer restart;
	gk_series *m_sent, *m_dropped, *m_restarts, *m_lost, *m_queue;
};

struct gk_fanout {
	gk_loop *loop;
	gk_fanout_opts o;
	struct sink sink[GK_FANOUT_MAX_SINKS];
	int nsinks;
	gk_fanout_input *in;
	bool eof, terminating;
	gk_timer tick, kill_timer;
	gk_timer drain_timer; /* the drain timeout, to the ms (on_tick is 1 s) */
	uint64_t eof_ms;
	gk_metric *f_sent, *f_dropped, *f_restarts, *f_lost, *f_queue;
	gk_series *m_raw, *m_surrogates;
	gk_buf wrap;
};

static void pump(struct sink *s);
static void sync_queue_gauge(struct sink *s);
static void maybe_finish(gk_fanout *f);

/* ------------------------------------------------------------------ */
/* Plugins: start, exit, restart                                       */
/* ------------------------------------------------------------------ */

static void
sink_io(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	(void)fd;
	(void)events;
	pump(arg);
}

static void on_child(gk_loop *loop, pid_t pid, int wstatus, void *arg);

static void
sink_start(struct sink *s)
{
	gk_fanout *f = s->f;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		gk_logf(GK_ERROR, "sink %s: pipe: %s", s->label,
		        strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		gk_logf(GK_ERROR, "sink %s: fork: %s", s->label,
		        strerror(errno));
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
		gk_plugin_exec(s->name, s->argv);
		fprintf(
		    stderr,
		    "{\"type\":\"log\",\"level\":\"error\",\"proc\":"
		    "\"gk-exporter\",\"msg\":\"unable to run plugin gk-export-%s: "
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
	s->started_ms = s->progress_ms = gk_loop_now(f->loop);
	gk_loop_watch(f->loop, s->fd, 0, sink_io, s);
	gk_loop_child(f->loop, pid, on_child, s);
	char fl[100], g[40];
	snprintf(fl, sizeof fl, "sink=%s", s->label);
	snprintf(g, sizeof g, "plugin_pid=%d", (int)pid);
	gk_log(GK_INFO, "plugin started", fl, g);
}

static void
on_restart(gk_loop *loop, void *arg)
{
	(void)loop;
	struct sink *s = arg;
	if (!s->f->terminating && !s->f->eof)
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
	sync_queue_gauge(s);
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
		size_t want =
		    (size_t)avail < sizeof buf ? (size_t)avail : sizeof buf;
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
	gk_loop_unwatch(s->f->loop, s->fd);
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
	if (s->f->eof) {
		if (!s->closed_for_eof) {
			/* Died while draining: what it had not taken is
			 * dropped. */
			discard(s);
			s->closed_for_eof = true;
		}
		gk_log(lost ? GK_WARN : GK_INFO, "plugin exited", f, g, h);
		maybe_finish(s->f);
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
	gk_loop_modify(s->f->loop, s->fd, want ? GK_WRITE : 0);
}

static void
pump(struct sink *s)
{
	gk_fanout *f = s->f;
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
		s->progress_ms = gk_loop_now(f->loop);
		for (size_t i = 0; i < s->nends; i++)
			if (s->ends[i] > before && s->ends[i] <= s->cur_off)
				done++;
		gk_counter_add(s->m_sent, (double)done);
	}
	if (s->cur.cap > 4 * CHUNK)
		gk_buf_free(&s->cur);
	set_want_write(s, false);
	sync_queue_gauge(s);
	if (f->eof && !s->closed_for_eof && !gk_equeue_count(s->q)) {
		/* Everything is written: EOF tells the plugin to drain. */
		s->closed_for_eof = true;
		s->closed_ms = gk_loop_now(f->loop);
		close_pipe(s);
	}
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

void
gk_fanout_push(gk_fanout *f, const char *line, size_t len)
{
	/* len counts the newline.  A line that is not an event is wrapped
	 * as a log event with "raw":true: every sink gets events only. */
	size_t n = len - 1;
	if (n && line[n - 1] == '\r')
		n--;
	if (!n)
		return;
	if (is_object(line, n)) {
		/* as it came */
	} else if (gk__event_mend_surrogates(line, n, &f->wrap) &&
	           is_object(f->wrap.data, f->wrap.len)) {
		/* A lone surrogate escape: the event, with U+FFFD for it
		 * (gk__event_mend_surrogates), not a raw line. */
		gk_counter_add(f->m_surrogates, 1);
		gk_buf_addc(&f->wrap, '\n');
		line = f->wrap.data;
		len = f->wrap.len;
	} else {
		gk_counter_add(f->m_raw, 1);
		gk_buf_reset(&f->wrap);
		gk_event_wrap_raw(&f->wrap, line, n);
		gk_buf_addc(&f->wrap, '\n');
		line = f->wrap.data;
		len = f->wrap.len;
	}
	/* The input drops a line past the bound while it is still partial;
	 * one that came whole in a read (or grew past it when wrapped) is
	 * the same case, and must not read as "oldest events dropped". */
	if (len > f->o.buffer_bytes) {
		gk_fanout_too_long(f);
		return;
	}
	for (int i = 0; i < f->nsinks; i++) {
		struct sink *s = &f->sink[i];
		size_t d = gk_equeue_push(s->q, line, len);
		if (d)
			gk_counter_add(s->m_dropped, (double)d);
	}
}

void
gk_fanout_pump(gk_fanout *f)
{
	for (int i = 0; i < f->nsinks; i++) {
		struct sink *s = &f->sink[i];
		if (s->fd >= 0 && !s->want_write)
			pump(s);
	}
}

static void
on_turn_end(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_fanout_pump(arg);
}

void
gk_fanout_too_long(gk_fanout *f)
{
	for (int i = 0; i < f->nsinks; i++)
		gk_counter_add(f->sink[i].m_dropped, 1);
	char fl[64];
	snprintf(fl, sizeof fl, "max_bytes=%zu", f->o.buffer_bytes);
	gk_log(GK_ERROR, "event longer than the sink buffer: dropped", fl);
}

bool
gk_fanout_busy(const gk_fanout *f)
{
	uint64_t now = gk_loop_now(f->loop);
	for (int i = 0; i < f->nsinks; i++) {
		const struct sink *s = &f->sink[i];
		if (s->fd >= 0 && now - s->progress_ms < 1000 &&
		    gk_equeue_bytes(s->q) > f->o.buffer_bytes / 2)
			return true;
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* Drain, ticks, ending                                                */
/* ------------------------------------------------------------------ */

static void tick_sink(gk_fanout *f, struct sink *s);

static void
on_drain_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_fanout *f = arg;
	for (int i = 0; i < f->nsinks; i++)
		tick_sink(f, &f->sink[i]);
}

/*
 * The input ended, or TERM/INT: no more events.  Each sink gets what its
 * buffer holds, then EOF on its stdin (a plugin's signal to deliver what
 * it has and exit); a sink whose plugin is down loses its buffer, counted
 * as dropped.  on_tick closes the sinks that take longer than the drain
 * timeout; on_kill ends the plugins that do not exit after that.
 */
void
gk_fanout_end(gk_fanout *f)
{
	if (f->eof)
		return;
	if (f->in)
		gk_fanout_input_stop(f->in);
	f->eof = true;
	f->eof_ms = gk_loop_now(f->loop);
	/* The sinks are checked when the drain timeout has passed, not at
	 * the next 1 s tick after it. */
	gk_timer_start(f->loop, &f->drain_timer, f->o.drain_ms + 1,
	               on_drain_timeout, f);
	for (int i = 0; i < f->nsinks; i++) {
		struct sink *s = &f->sink[i];
		gk_timer_stop(f->loop, &s->restart);
		if (s->fd < 0) {
			s->closed_for_eof = true;
			size_t left = discard(s);
			if (left) {
				char fl[100], g[40];
				snprintf(fl, sizeof fl, "sink=%s", s->label);
				snprintf(g, sizeof g, "dropped=%zu", left);
				gk_log(GK_WARN,
				       "plugin down at drain: events "
				       "dropped",
				       fl, g);
			}
		} else {
			pump(s);
		}
	}
	maybe_finish(f);
}

static void
maybe_finish(gk_fanout *f)
{
	for (int i = 0; i < f->nsinks; i++)
		if (f->sink[i].pid)
			return;
	if (f->eof || f->terminating)
		gk_loop_stop(f->loop);
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
	s->kill_at_ms = gk_loop_now(s->f->loop) + 2000;
}

/* Say what a full buffer dropped since last told (at most once a tick). */
static void
tell_dropped(struct sink *s)
{
	uint64_t d = gk_equeue_dropped(s->q);
	if (d == s->dropped_told)
		return;
	char f[100], g[40], h[40];
	snprintf(f, sizeof f, "sink=%s", s->label);
	snprintf(g, sizeof g, "dropped=%llu", (unsigned long long)d);
	snprintf(h, sizeof h, "since_last=%llu",
	         (unsigned long long)(d - s->dropped_told));
	gk_log(GK_WARN, "sink buffer full: oldest events dropped", f, g, h);
	s->dropped_told = d;
}

static void
tick_sink(gk_fanout *f, struct sink *s)
{
	uint64_t now = gk_loop_now(f->loop);
	tell_dropped(s);
	/* Draining after EOF: a sink that does not take its events within
	 * the drain timeout is closed anyway. */
	if (f->eof && !s->closed_for_eof && now - f->eof_ms > f->o.drain_ms) {
		size_t left = discard(s);
		char fl[100], g[40];
		snprintf(fl, sizeof fl, "sink=%s", s->label);
		snprintf(g, sizeof g, "dropped=%zu", left);
		gk_log(GK_WARN, "drain timeout: sink closed", fl, g);
		s->closed_for_eof = true;
		s->closed_ms = now;
		close_pipe(s);
		/* It did not read: it will not drain either. */
		stop_plugin(s);
	}
	/* Its buffer all in the pipe, but the plugin has not read the pipe
	 * within the drain timeout either (stuck): it has not taken its
	 * events, so it is stopped as a sink closed by the timeout is.
	 * Without this, gk-exporter waited for it for ever at the end of
	 * input, and on TERM killed it without a TERM.  What it left
	 * unread is counted lost when it exits. */
	if (f->eof && s->closed_for_eof && s->pid && !s->kill_at_ms &&
	    now - f->eof_ms > f->o.drain_ms && unread_bytes(s) > 0) {
		char fl[100], g[40];
		snprintf(fl, sizeof fl, "sink=%s", s->label);
		snprintf(g, sizeof g, "unread_bytes=%d", unread_bytes(s));
		gk_log(GK_WARN, "drain timeout: plugin left its input unread",
		       fl, g);
		stop_plugin(s);
	}
	/* On TERM, a plugin that has read everything and still runs a
	 * second later (a server, such as prometheus) is told to stop
	 * too. */
	if (f->terminating && s->pid && !s->kill_at_ms && s->closed_for_eof &&
	    now - s->closed_ms >= 1000 && !unread_bytes(s))
		stop_plugin(s);
	if (s->pid && s->kill_at_ms && now >= s->kill_at_ms) {
		char fl[100];
		snprintf(fl, sizeof fl, "sink=%s", s->label);
		gk_log(GK_WARN, "plugin did not exit: killed", fl);
		kill(s->pid, SIGKILL);
		s->kill_at_ms = UINT64_MAX;
	}
}

static void
on_tick(gk_loop *loop, void *arg)
{
	gk_fanout *f = arg;
	for (int i = 0; i < f->nsinks; i++)
		tick_sink(f, &f->sink[i]);
	gk_timer_start(loop, &f->tick, 1000, on_tick, f);
}

static void
on_kill(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_fanout *f = arg;
	for (int i = 0; i < f->nsinks; i++)
		if (f->sink[i].pid) {
			char fl[100];
			snprintf(fl, sizeof fl, "sink=%s", f->sink[i].label);
			gk_log(GK_WARN, "plugin did not exit: killed", fl);
			kill(f->sink[i].pid, SIGKILL);
		}
}

void
gk_fanout_term(gk_fanout *f)
{
	if (f->terminating) { /* a second one: now */
		on_kill(f->loop, f);
		return;
	}
	f->terminating = true;
	gk_fanout_end(f);
	/* The last resort, whatever the plugins do. */
	gk_timer_start(f->loop, &f->kill_timer, f->o.drain_ms + 4000, on_kill,
	               f);
}

void
gk_fanout_signal(gk_fanout *f, int signo)
{
	for (int i = 0; i < f->nsinks; i++)
		if (f->sink[i].pid)
			kill(f->sink[i].pid, signo);
}

void
gk_fanout_finish(gk_fanout *f)
{
	for (int i = 0; i < f->nsinks; i++)
		tell_dropped(&f->sink[i]);
}

/* ------------------------------------------------------------------ */
/* Setting up                                                          */
/* ------------------------------------------------------------------ */

gk_fanout *
gk_fanout_new(gk_loop *loop, const gk_fanout_opts *o)
{
	gk_fanout *f = gk_xcalloc(1, sizeof *f);
	f->loop = loop;
	f->o = *o;
	if (!f->o.buffer_bytes)
		f->o.buffer_bytes = 4u << 20;
	f->f_sent =
	    gk_counter_new("gk_exporter_sent_total",
	                   "Events written to each sink's plugin", "sink");
	f->f_dropped = gk_counter_new(
	    "gk_exporter_dropped_total",
	    "Events never written whole to a sink's plugin: buffer full, "
	    "drain timeout, plugin down at the end",
	    "sink");
	f->f_restarts = gk_counter_new("gk_exporter_restarts_total",
	                               "Restarts of a sink's plugin", "sink");
	f->f_lost = gk_counter_new(
	    "gk_exporter_lost_total",
	    "Events written to a plugin and left unread when it exited",
	    "sink");
	f->f_queue = gk_gauge_new("gk_exporter_queue_bytes",
	                          "Bytes in a sink's buffer", "sink");
	f->m_surrogates = gk_metric_series(gk_counter_new(
	    "gk_exporter_lone_surrogates_total",
	    "Events holding a lone UTF-16 surrogate escape, passed on with "
	    "U+FFFD in its place",
	    NULL));
	f->m_raw = gk_metric_series(gk_counter_new(
	    "gk_exporter_raw_total",
	    "Lines that were not JSON, wrapped as raw log events", NULL));
	return f;
}

static bool
name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

/* "NAME:A,B\,C" -> name NAME, argv {-, "A", "B,C", NULL} */
static int
parse_spec(const char *spec, struct sink *s, const char **why)
{
	const char *colon = strchr(spec, ':');
	size_t nl = colon ? (size_t)(colon - spec) : strlen(spec);
	if (!nl || nl >= sizeof s->name) {
		*why = "expected NAME[:ARG,ARG...]";
		return -1;
	}
	for (size_t i = 0; i < nl; i++)
		if (!name_char(spec[i])) {
			*why = "plugin name: letters, digits, '-', '_', '.'";
			return -1;
		}
	memcpy(s->name, spec, nl);
	s->name[nl] = 0;
	size_t cap = 4, n = 1;
	s->argv = gk_xcalloc(cap, sizeof *s->argv);
	if (colon) {
		gk_buf arg = {0};
		for (const char *p = colon + 1;; p++) {
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
				s->argv =
				    gk_xrealloc(s->argv, cap * sizeof *s->argv);
			}
			s->argv[n++] =
			    gk_xstrdup(arg.len ? gk_buf_cstr(&arg) : "");
			arg.len = 0;
			if (!*p)
				break;
		}
		gk_buf_free(&arg);
	}
	s->argv[n] = NULL;
	return 0;
}

int
gk_fanout_add(gk_fanout *f, const char *spec, const char **why)
{
	if (f->nsinks == GK_FANOUT_MAX_SINKS) {
		*why = "at most 32";
		return -1;
	}
	struct sink *s = &f->sink[f->nsinks];
	memset(s, 0, sizeof *s);
	if (parse_spec(spec, s, why) < 0)
		return -1;
	int same = 0;
	for (int j = 0; j < f->nsinks; j++)
		if (!strcmp(f->sink[j].name, s->name))
			same++;
	/* Through a copy: GCC's -Wrestrict cannot tell the two members of
	 * one struct apart. */
	char label[sizeof s->label];
	if (same)
		snprintf(label, sizeof label, "%s#%d", s->name, same + 1);
	else
		snprintf(label, sizeof label, "%s", s->name);
	memcpy(s->label, label, sizeof label);
	f->nsinks++;
	s->f = f;
	s->fd = s->rfd = -1;
	s->q = gk_equeue_new(f->o.buffer_bytes, f->o.buffer_events);
	gk_backoff_init(&s->backoff, 100, 30000);
	s->m_sent = gk_series_get(f->f_sent, s->label, (char *)0);
	s->m_dropped = gk_series_get(f->f_dropped, s->label, (char *)0);
	s->m_restarts = gk_series_get(f->f_restarts, s->label, (char *)0);
	s->m_lost = gk_series_get(f->f_lost, s->label, (char *)0);
	s->m_queue = gk_series_get(f->f_queue, s->label, (char *)0);
	return 0;
}

void
gk_fanout_start(gk_fanout *f, int fd)
{
	f->in = gk_fanout_input_new(f, f->loop, fd, f->o.buffer_bytes);
	gk_loop_on_turn_end(f->loop, on_turn_end, f);
	for (int i = 0; i < f->nsinks; i++)
		sink_start(&f->sink[i]);
	gk_fanout_input_start(f->in);
	gk_timer_start(f->loop, &f->tick, 1000, on_tick, f);
}

void
gk_fanout_free(gk_fanout *f)
{
	if (!f)
		return;
	gk_timer_stop(f->loop, &f->tick);
	gk_timer_stop(f->loop, &f->kill_timer);
	gk_timer_stop(f->loop, &f->drain_timer);
	gk_fanout_input_free(f->in);
	for (int i = 0; i < f->nsinks; i++) {
		struct sink *s = &f->sink[i];
		gk_timer_stop(f->loop, &s->restart);
		close_pipe(s);
		if (s->rfd >= 0)
			close(s->rfd);
		for (char **a = s->argv + 1; *a; a++)
			free(*a);
		free(s->argv);
		gk_equeue_free(s->q);
		gk_buf_free(&s->cur);
	}
	gk_buf_free(&f->wrap);
	free(f);
}
