/*
 * pool.c: gk-pool's logic.  N copies of a handler that answers one request
 * at a time (it reads a request line on stdin and writes its response line
 * on stdout before it reads the next), each on its own pair of pipes.  A
 * request goes to an idle copy, taken round-robin so that the load spreads;
 * when every copy is busy it waits in a FIFO, bounded by the runtime's
 * --max-inflight.
 *
 * A copy that dies is restarted with exponential backoff (100ms doubling
 * to 5s, back to 100ms after 10s up); the request it held is answered 502.
 *
 * Cancellation: a copy handles one request and cannot be asked to drop
 * it, so when the request it works on is cancelled (the client went away)
 * or its deadline passes (the runtime answers 504), the copy is killed
 * with SIGKILL and restarted at once, without backoff.  A handler whose
 * requests often time out therefore restarts often: give it a deadline it
 * can keep.
 *
 * Each copy runs in a process group of its own (gk_spawn), out of the
 * reach of a Ctrl-C to the stack: gk-pool drains, and at its end closes
 * every copy's stdin and waits for the copies to exit (SIGTERM to a
 * copy's group after 5s, SIGKILL 2s later).  A kill (and a copy's exit)
 * reaches the copy's group: what the copy started there goes with it.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"
#include "procspawn.h"
#include "req_queue.h"
#include "stream.h"

struct copy {
	unsigned index;
	pid_t pid;
	gk_stream *s;
	gk_req *req;   /* the request it works on */
	gk_buf sent;   /* its id, unescaped */
	gk_buf last;   /* the id of the request it answered last */
	bool up;       /* running, and its pipes open */
	bool killed;   /* we killed it: restart at once */
	uint64_t started, backoff_ms;
	gk_timer restart;
};

struct rstate {
	struct copy *copy;
	gk_req_link link; /* waiting for an idle copy */
};

static struct {
	gk_stage *st;
	gk_loop *loop;
	gk_pool_config cfg;
	struct copy *copy;
	unsigned rr, up, busy;
	gk_req_queue queue;
	gk_series *m_busy, *m_size, *m_restarts;
} pool;

size_t
gk_pool_req_state_size(void)
{
	return sizeof(struct rstate);
}

static struct rstate *
rs(gk_req *req)
{
	return gk_req_state(req);
}

static void
gauges(void)
{
	gk_gauge_set(pool.m_busy, (double)pool.busy);
	gk_gauge_set(pool.m_size, (double)pool.up);
}

/* ---- copies ---- */

static bool spawn_copy(struct copy *c);
static void schedule_restart(struct copy *c, bool now);
static void dispatch(void);

static void
log_copy(enum gk_level level, const char *msg, const struct copy *c,
    const char *k, const char *v)
{
	char cmd[512], idx[32], pid[32], kv[512];
	snprintf(cmd, sizeof cmd, "cmd=%s", pool.cfg.argv[0]);
	snprintf(idx, sizeof idx, "copy=%u", c->index);
	snprintf(pid, sizeof pid, "child_pid=%d", (int)c->pid);
	if (k)
		snprintf(kv, sizeof kv, "%s=%s", k, v);
	gk_log(level, msg, cmd, idx, pid, k ? kv : NULL);
}

/* The copy stops taking requests; its request, if any, is answered. */
static void
copy_down(struct copy *c, int status, const char *reason)
{
	if (c->up) {
		c->up = false;
		pool.up--;
	}
	if (c->s) {
		gk_stream_close(c->s);
		c->s = NULL;
	}
	gk_req *req = c->req;
	if (req) {
		c->req = NULL;
		rs(req)->copy = NULL;
		pool.busy--;
		gk_answer(req, status, NULL, "bad gateway\n", reason);
	}
	gauges();
}

static void
kill_copy(struct copy *c)
{
	if (c->pid > 0 && !gk__signal_group(c->pid, SIGKILL))
		kill(c->pid, SIGKILL);
}

static void
on_restart(gk_loop *loop, void *arg)
{
	(void)loop;
	struct copy *c = arg;
	if (!gk_stage_draining(pool.st) && !c->pid && !spawn_copy(c)) {
		char e[128];
		snprintf(e, sizeof e, "%s", strerror(errno));
		log_copy(GK_ERROR, "unable to spawn a copy", c, "error", e);
		schedule_restart(c, false);
	}
}

static void
schedule_restart(struct copy *c, bool now)
{
	if (gk_stage_draining(pool.st))
		return;
	uint64_t delay = 0;
	if (!now) {
		if (gk_loop_now(pool.loop) - c->started >= 10000)
			c->backoff_ms = 100;
		delay = c->backoff_ms;
		c->backoff_ms = c->backoff_ms * 2 > 5000 ? 5000
							 : c->backoff_ms * 2;
	}
	gk_counter_add(pool.m_restarts, 1);
	gk_timer_start(pool.loop, &c->restart, delay, on_restart, c);
}

static void
on_copy_exit(gk_loop *loop, pid_t pid, int ws, void *arg)
{
	(void)loop;
	struct copy *c = arg;
	char what[32];
	if (WIFSIGNALED(ws)) {
		const char *sig = sigabbrev_np(WTERMSIG(ws));
		snprintf(what, sizeof what, "%s", sig ? sig : "?");
	} else
		snprintf(what, sizeof what, "%d", WEXITSTATUS(ws));
	bool killed = c->killed;
	/* What it left running in its group goes with it. */
	if (gk__signal_group(pid, killed ? SIGKILL : SIGTERM) && !killed)
		log_copy(GK_WARN, "copy left processes behind: sending TERM", c,
		    NULL, NULL);
	if (killed)
		log_copy(GK_INFO, "copy killed for a cancelled request", c,
		    NULL, NULL);
	else if (!gk_stage_draining(pool.st))
		log_copy(GK_ERROR, "copy exited", c,
		    WIFSIGNALED(ws) ? "signal" : "status", what);
	c->pid = 0;
	c->killed = false;
	copy_down(c, 502, "copy exited");
	schedule_restart(c, killed);
}

static void
copy_line(gk_stream *s, char *line, size_t len, void *arg)
{
	(void)s;
	struct copy *c = arg;
	if (!len)
		return;
	gk_wire_error err;
	gk_msg *m = gk_msg_new(line, len, &err);
	if (!m) {
		/* It broke the protocol: its state is unknown. */
		log_copy(GK_ERROR, "invalid line from copy: restarting it", c,
		    "reason", err.reason);
		copy_down(c, 502, "invalid response");
		kill_copy(c);
		return;
	}
	gk_buf id = {0};
	gk_json_string(gk_msg_get(m, "id"), &id);
	gk_req *req = c->req;
	bool again = c->last.len == id.len &&
	    !memcmp(id.data, c->last.data, id.len);
	if (!req || id.len != c->sent.len ||
	    memcmp(id.data, c->sent.data, id.len)) {
		/* A second answer to the request it answered last is only
		 * an extra line: the copy is in step.  Any other id while
		 * it works on a request leaves that request without an
		 * answer for ever, and the copy's state unknown. */
		if (again || !req)
			log_copy(GK_WARN,
			    again ? "second response for a request of the "
				    "copy: dropped"
				  : "response for no request of the copy: "
				    "dropped",
			    c, "id", gk_buf_cstr(&id));
		else {
			log_copy(GK_ERROR,
			    "response with another id from copy: restarting it",
			    c, "id", gk_buf_cstr(&id));
			copy_down(c, 502, "invalid response");
			kill_copy(c);
		}
		gk_buf_free(&id);
		gk_msg_free(m);
		return;
	}
	gk_buf_free(&c->last);
	c->last = id;
	c->req = NULL;
	rs(req)->copy = NULL;
	pool.busy--;
	gauges();
	gk_json rid = gk_msg_get(gk_req_msg(req), "id");
	gk_msg_set(m, "id", rid.p, rid.len);
	gk_pass(req, m);
	dispatch();
}

static void
copy_close(gk_stream *s, int err, void *arg)
{
	(void)s;
	struct copy *c = arg;
	/* Its stdout closed (or a write failed): it cannot serve; the
	 * exit that follows restarts it. */
	log_copy(GK_WARN, "copy closed its pipes", c, "error",
	    err ? strerror(err) : "eof");
	copy_down(c, 502, "copy exited");
	kill_copy(c);
}

/* A line past the wire's 16 MiB: its request cannot be answered from it,
 * and the copy's state is as unknown as after any other invalid line. */
static void
copy_too_long(gk_stream *s, void *arg)
{
	(void)s;
	struct copy *c = arg;
	log_copy(GK_ERROR, "invalid line from copy: restarting it", c,
	    "reason", "line too long");
	copy_down(c, 502, "invalid response");
	kill_copy(c);
}

static const gk_stream_ops copy_ops = {copy_line, copy_close};

/* false, errno set, when it could not be spawned. */
static bool
spawn_copy(struct copy *c)
{
	int w, r;
	c->started = gk_loop_now(pool.loop);
	pid_t pid = gk_spawn(pool.cfg.argv, &w, &r);
	if (pid < 0)
		return false;
	c->pid = pid;
	c->last.len = 0;
	c->s = gk_stream_new(pool.loop, r, w, &copy_ops, c);
	gk_stream_on_too_long(c->s, copy_too_long);
	c->up = true;
	pool.up++;
	gauges();
	gk_loop_child(pool.loop, pid, on_copy_exit, c);
	dispatch();
	return true;
}

static void
assign(struct copy *c, gk_req *req)
{
	gk_msg *m = gk_req_msg(req);
	c->req = req;
	c->sent.len = 0;
	gk_json_string(gk_msg_get(m, "id"), &c->sent);
	rs(req)->copy = c;
	pool.busy++;
	gauges();
	gk_stream_write_line(c->s, m->line.data, m->line.len);
}

/* An idle copy, round-robin; NULL when all are busy or down. */
static struct copy *
idle_copy(void)
{
	for (unsigned k = 0; k < pool.cfg.n; k++) {
		struct copy *c = &pool.copy[(pool.rr + k) % pool.cfg.n];
		if (c->up && !c->req) {
			pool.rr = (c->index + 1) % pool.cfg.n;
			return c;
		}
	}
	return NULL;
}

static void
dispatch(void)
{
	struct copy *c;
	while (pool.queue.head && (c = idle_copy())) {
		gk_req *req = pool.queue.head;
		gk_req_queue_remove(&pool.queue, req);
		assign(c, req);
	}
}

void
gk_pool_request(gk_stage *st, gk_req *req)
{
	(void)st;
	struct copy *c = pool.queue.head ? NULL : idle_copy();
	if (c)
		assign(c, req);
	else
		gk_req_queue_push(&pool.queue, req);
}

void
gk_pool_done(gk_stage *st, gk_req *req, int status)
{
	(void)st;
	(void)status;
	struct rstate *s = rs(req);
	gk_req_queue_remove(&pool.queue, req);
	struct copy *c = s->copy;
	if (!c)
		return;
	/* Cancelled or past its deadline while the copy works on it. */
	s->copy = NULL;
	c->req = NULL;
	pool.busy--;
	c->killed = true;
	copy_down(c, 0, NULL);
	kill_copy(c);
}

void
gk_pool_drain(gk_stage *st)
{
	(void)st;
	for (unsigned i = 0; i < pool.cfg.n; i++) {
		struct copy *c = &pool.copy[i];
		gk_timer_stop(pool.loop, &c->restart);
		if (c->s)
			gk_stream_shutdown_write(c->s);
	}
}

/* The copies still running; with sig, each copy's group signalled. */
static unsigned
running(int sig)
{
	unsigned n = 0;
	for (unsigned i = 0; i < pool.cfg.n; i++) {
		struct copy *c = &pool.copy[i];
		if (c->pid <= 0)
			continue;
		int ws;
		if (waitpid(c->pid, &ws, WNOHANG) == c->pid) {
			c->pid = 0;
			continue;
		}
		if (sig && !gk__signal_group(c->pid, sig))
			kill(c->pid, sig);
		n++;
	}
	return n;
}

void
gk_pool_stop(gk_stage *st)
{
	(void)st;
	/* The loop is over and the stage's answers are written: wait here,
	 * with EOF on their stdin (gk_pool_drain), for the copies to exit,
	 * as the runtime waits for a south child. */
	static const struct {
		unsigned ms;
		int sig;
		const char *msg;
	} step[] = {
	    {5000, SIGTERM, "copies did not exit: sending TERM"},
	    {2000, SIGKILL, "copies did not exit: sending KILL"},
	    {1000, 0, NULL},
	};
	for (size_t k = 0; k < sizeof step / sizeof *step; k++) {
		for (unsigned t = 0; t < step[k].ms; t += 20) {
			if (!running(0))
				return;
			nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
		}
		unsigned n = running(0);
		if (step[k].msg && n) {
			char f[32];
			snprintf(f, sizeof f, "copies=%u", n);
			gk_log(GK_WARN, step[k].msg, f);
			running(step[k].sig);
		}
	}
}

int
gk_pool_start(gk_stage *st, const gk_pool_config *cfg)
{
	pool.st = st;
	pool.loop = gk_stage_loop(st);
	pool.cfg = *cfg;
	if (!pool.cfg.n) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		pool.cfg.n = n > 0 ? (unsigned)n : 1;
	}
	pool.m_busy = gk_metric_series(gk_gauge_new("gk_pool_busy",
	    "Copies working on a request", NULL));
	pool.m_size = gk_metric_series(gk_gauge_new("gk_pool_size",
	    "Copies running", NULL));
	pool.queue.link_off = offsetof(struct rstate, link);
	pool.queue.gauge = gk_metric_series(gk_gauge_new("gk_pool_queue",
	    "Requests waiting for an idle copy", NULL));
	pool.m_restarts = gk_metric_series(gk_counter_new(
	    "gk_pool_restarts_total", "Restarts of copies", NULL));
	gk_gauge_set(gk_metric_series(gk_gauge_new("gk_pool_copies",
	    "The number of copies asked for (-n)", NULL)),
	    (double)pool.cfg.n);
	pool.copy = gk_xcalloc(pool.cfg.n, sizeof *pool.copy);
	for (unsigned i = 0; i < pool.cfg.n; i++) {
		struct copy *c = &pool.copy[i];
		c->index = i;
		c->backoff_ms = 100;
		/* At start a copy that cannot be spawned is fatal: the
		 * command is wrong, and no restart will mend it. */
		if (!spawn_copy(c))
			gk_fatal(GK_EXIT_OSERR, "unable to spawn %s: %s",
			    pool.cfg.argv[0], strerror(errno));
	}
	gauges();
	return 0;
}
