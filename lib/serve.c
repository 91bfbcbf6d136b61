/*
 * serve.c: gk_serve(3), a C function as the handler of a stage.  The
 * function runs in the loop's thread, or with -j N on worker threads; the
 * loop never blocks on it.  Requests come from stdin, wire sockets, or an
 * HTTP listener (--http), all through the stage runtime.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "runtime.h"

struct gk_request {
	const gk_msg *msg;
	char **strs; /* strings handed out, freed with the request */
	size_t nstrs, capstrs;
	const char *method, *path, *query, *remote, *id, *body;
	size_t body_len;
	bool have_body;
};

struct gk_response {
	int status;
	gk_buf headers; /* "name\0value\0" per header, names lowercased */
	gk_buf body;
};

struct job {
	struct job *next, *prev; /* prev: in todo only */
	bool taken;              /* by a worker: out of todo */
	gk_req *req;   /* NULL once the request is gone */
	gk_msg *msg;   /* the worker's own copy of the request */
	gk_buf answer; /* the response line */
};

static struct {
	gk_handler *fn;
	void *arg;
	unsigned workers;
	pthread_t *threads;
	bool *ended; /* worker i has returned: it can be joined */
	pthread_mutex_t mu;
	pthread_cond_t cv, ended_cv;
	struct job *todo, *todo_tail, *done;
	unsigned alive, busy; /* workers not returned; in the handler */
	size_t queued;        /* jobs in todo */
	bool quit;
	int efd;
	gk_series *m_left, *m_queued;
} serve = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
    .ended_cv = PTHREAD_COND_INITIALIZER};

static const char *
keep(gk_request *r, gk_buf *b)
{
	if (r->nstrs == r->capstrs) {
		r->capstrs = r->capstrs ? r->capstrs * 2 : 8;
		r->strs = gk_xrealloc(r->strs, r->capstrs * sizeof *r->strs);
	}
	char *s = gk_buf_cstr(b);
	b->data = NULL;
	b->len = b->cap = 0;
	r->strs[r->nstrs++] = s;
	return s;
}

static const char *
string_member(gk_request *r, gk_json v, const char *dflt)
{
	gk_buf b = {0};
	if (gk_json_string(v, &b) < 0) {
		gk_buf_free(&b);
		return dflt;
	}
	return keep(r, &b);
}

static const char *
member(const gk_request *rc, const char *key, const char **cache,
    const char *dflt)
{
	gk_request *r = (gk_request *)rc;
	if (!*cache)
		*cache = string_member(r, gk_msg_get(r->msg, key), dflt);
	return *cache;
}

const char *
gk_request_method(const gk_request *r)
{
	return member(r, "method", (const char **)&((gk_request *)r)->method,
	    "GET");
}

const char *
gk_request_path(const gk_request *r)
{
	return member(r, "path", (const char **)&((gk_request *)r)->path, "/");
}

const char *
gk_request_query(const gk_request *r)
{
	return member(r, "query", (const char **)&((gk_request *)r)->query, "");
}

const char *
gk_request_remote(const gk_request *r)
{
	return member(r, "remote", (const char **)&((gk_request *)r)->remote,
	    "");
}

const char *
gk_request_id(const gk_request *r)
{
	return member(r, "id", (const char **)&((gk_request *)r)->id, "");
}

const char *
gk_request_trace_id(const gk_request *r)
{
	gk_json t = gk_json_member(gk_msg_get(r->msg, "trace"), "trace_id");
	return t.type == GK_JSON_STRING ? string_member((gk_request *)r, t, NULL)
	                                : NULL;
}

const char *
gk_request_header(const gk_request *rc, const char *name)
{
	gk_request *r = (gk_request *)rc;
	return string_member(r, gk__msg_header_value(r->msg, name), NULL);
}

const char *
gk_request_body(const gk_request *rc, size_t *len)
{
	gk_request *r = (gk_request *)rc;
	if (!r->have_body) {
		r->have_body = true;
		/* As body_invalid checked it: body_b64 unescaped, then
		 * decoded (a JSON writer may send "\/" for "/"). */
		gk_buf b = {0};
		const char *why;
		if (gk_msg_body(r->msg, &b, &why) < 0)
			b.len = 0; /* not reached: answered 400 before */
		r->body_len = b.len;
		r->body = keep(r, &b);
	}
	if (len)
		*len = r->body_len;
	return r->body;
}

gk_json
gk_request_field(const gk_request *r, const char *key)
{
	return gk_msg_get(r->msg, key);
}

void
gk_response_status(gk_response *w, int status)
{
	w->status = status;
}

/*
 * A name that is not an HTTP token, or a value with a control character
 * but tab (CR and LF above all), cannot go out over HTTP: gk-listener
 * would answer the whole response 502.  As Go's net/http, such a header is
 * dropped, and said.
 */
static bool
header_ok(const char *name, const char *value)
{
	return gk_http_field_name(name, strlen(name)) &&
	    gk_http_field_value(value, strlen(value));
}

void
gk_response_header(gk_response *w, const char *name, const char *value)
{
	if (!header_ok(name, value)) {
		gk_buf f = {0};
		gk_buf_adds(&f, "name=");
		gk_buf_add(&f, name, strnlen(name, 64));
		gk_log(GK_ERROR, "invalid response header: dropped",
		    gk_buf_cstr(&f));
		gk_buf_free(&f);
		return;
	}
	/* Wire header names are lowercase. */
	for (const char *p = name; *p; p++)
		gk_buf_addc(&w->headers,
		    (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p));
	gk_buf_addc(&w->headers, 0);
	gk_buf_add(&w->headers, value, strlen(value) + 1);
}

/*
 * The headers object: a name set more than once is one member whose value
 * is the array of its values in order, as gk-wire(5) has a repeated header
 * (the same key twice in an object is read as the last one alone).
 */
static void
headers_json(const gk_buf *h, gk_buf *out)
{
	if (!h->len)
		return;
	const char *end = h->data + h->len;
	bool first = true;
	for (const char *n = h->data; n < end;) {
		const char *v = n + strlen(n) + 1, *next = v + strlen(v) + 1;
		bool seen = false;
		size_t count = 0;
		for (const char *m = h->data; m < end;) {
			const char *mv = m + strlen(m) + 1;
			if (!strcmp(m, n)) {
				seen |= m < n;
				count++;
			}
			m = mv + strlen(mv) + 1;
		}
		if (!seen) {
			if (!first)
				gk_buf_addc(out, ',');
			first = false;
			gk_json_quote(out, n, strlen(n));
			gk_buf_addc(out, ':');
			if (count > 1)
				gk_buf_addc(out, '[');
			bool vfirst = true;
			for (const char *m = n; m < end;) {
				const char *mv = m + strlen(m) + 1;
				if (!strcmp(m, n)) {
					if (!vfirst)
						gk_buf_addc(out, ',');
					vfirst = false;
					gk_json_quote(out, mv, strlen(mv));
				}
				m = mv + strlen(mv) + 1;
			}
			if (count > 1)
				gk_buf_addc(out, ']');
		}
		n = next;
	}
}

void
gk_response_body(gk_response *w, const void *p, size_t n)
{
	gk_buf_add(&w->body, p, n);
}

void
gk_response_printf(gk_response *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		gk_fatal(GK_EXIT_NOMEM, "out of memory");
	gk_buf_add(&w->body, s, (size_t)n);
	free(s);
}

/*
 * A response's buffers are kept by each thread from one request to the
 * next (and freed when a large answer grew them past SPARE_MAX).
 */
#define SPARE_MAX 16384
static _Thread_local gk_buf spare_headers, spare_body, spare_line;

static gk_buf
spare_take(gk_buf *spare)
{
	gk_buf b = *spare;
	*spare = (gk_buf){0};
	b.len = 0;
	return b;
}

static void
spare_give(gk_buf *spare, gk_buf *b)
{
	if (b->cap > SPARE_MAX || spare->data)
		gk_buf_free(b);
	else
		*spare = *b;
	*b = (gk_buf){0};
}

/* Run the handler on msg; append the response line to out. */
static void
run_handler(const gk_msg *msg, gk_buf *out)
{
	gk_request r = {.msg = msg};
	gk_response w = {.status = 200, .headers = spare_take(&spare_headers),
	    .body = spare_take(&spare_body)};
	serve.fn(&r, &w, serve.arg);
	/* The wire carries 200 to 599: no interim (1xx) response. */
	if (w.status < 200 || w.status > 599) {
		char f[32];
		snprintf(f, sizeof f, "status=%d", w.status);
		gk_log(GK_ERROR, "handler status out of range: answered 500", f);
		w.status = 500;
	}
	gk_buf_adds(out, "{\"id\":");
	gk_json id = gk_msg_get(msg, "id");
	gk_buf_add(out, id.p, id.len);
	gk_buf_adds(out, ",\"status\":");
	gk_buf_adduint(out, (uint64_t)w.status);
	gk_buf_adds(out, ",\"headers\":{");
	headers_json(&w.headers, out);
	gk_buf_addc(out, '}');
	if (w.body.len) {
		if (gk_utf8_valid(w.body.data, w.body.len)) {
			gk_buf_adds(out, ",\"body\":");
			gk_json_quote(out, w.body.data, w.body.len);
		} else {
			gk_buf_adds(out, ",\"body_b64\":\"");
			gk_base64_encode(out, w.body.data, w.body.len);
			gk_buf_addc(out, '"');
		}
	}
	gk_buf_addc(out, '}');
	spare_give(&spare_headers, &w.headers);
	spare_give(&spare_body, &w.body);
	for (size_t i = 0; i < r.nstrs; i++)
		free(r.strs[i]);
	free(r.strs);
}

static void
pass_line(gk_req *req, gk_buf *line)
{
	gk_wire_error err;
	gk_msg *m = gk_msg_new(line->data, line->len, &err);
	if (!m) {
		char f[96];
		snprintf(f, sizeof f, "reason=%s", err.reason);
		gk_log_trace(GK_ERROR, gk_req_trace_id(req),
		    "handler response invalid", f, (char *)0);
		gk_answer(req, 500, NULL, "internal error\n", "invalid response");
		return;
	}
	gk_pass(req, m);
}

static void *
worker(void *arg)
{
	unsigned i = (unsigned)(uintptr_t)arg;
	for (;;) {
		pthread_mutex_lock(&serve.mu);
		while (!serve.todo && !serve.quit)
			pthread_cond_wait(&serve.cv, &serve.mu);
		if (!serve.todo) {
			serve.ended[i] = true;
			serve.alive--;
			pthread_cond_broadcast(&serve.ended_cv);
			pthread_mutex_unlock(&serve.mu);
			return NULL;
		}
		struct job *j = serve.todo;
		serve.todo = j->next;
		if (serve.todo)
			serve.todo->prev = NULL;
		else
			serve.todo_tail = NULL;
		j->taken = true;
		gk_gauge_set(serve.m_queued, (double)--serve.queued);
		bool gone = !j->req;
		serve.busy += !gone;
		pthread_mutex_unlock(&serve.mu);
		if (!gone)
			run_handler(j->msg, &j->answer);
		pthread_mutex_lock(&serve.mu);
		serve.busy -= !gone;
		j->next = serve.done;
		serve.done = j;
		pthread_mutex_unlock(&serve.mu);
		uint64_t one = 1;
		(void)!write(serve.efd, &one, sizeof one);
	}
}

static void
on_done_jobs(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	(void)ev;
	(void)arg;
	uint64_t n;
	(void)!read(fd, &n, sizeof n);
	pthread_mutex_lock(&serve.mu);
	struct job *j = serve.done;
	serve.done = NULL;
	pthread_mutex_unlock(&serve.mu);
	while (j) {
		struct job *next = j->next;
		if (j->req) {
			struct job **slot = gk_req_state(j->req);
			*slot = NULL;
			pass_line(j->req, &j->answer);
		}
		gk_msg_free(j->msg);
		gk_buf_free(&j->answer);
		free(j);
		j = next;
	}
}

/*
 * A body the handler could not be given (body_b64 that is not base64, a
 * body that is not a string, or both): 400 before the handler runs, which
 * would otherwise see an empty body.  Decoded here only when base64.
 */
static bool
body_invalid(gk_req *req)
{
	const gk_msg *m = gk_req_msg(req);
	gk_json b = gk_msg_get(m, "body"), b64 = gk_msg_get(m, "body_b64");
	if (b64.type == GK_JSON_NONE &&
	    (b.type == GK_JSON_NONE || b.type == GK_JSON_STRING))
		return false;
	gk_buf tmp = {0};
	const char *why;
	int r = gk_msg_body(m, &tmp, &why);
	gk_buf_free(&tmp);
	if (r == 0)
		return false;
	char f[64];
	snprintf(f, sizeof f, "reason=%s", why);
	gk_log_trace(GK_WARN, gk_req_trace_id(req), "request body invalid",
	    f, (char *)0);
	gk_answer(req, 400, NULL, "bad request\n", why);
	return true;
}

static void
serve_request(gk_stage *st, gk_req *req, void *arg)
{
	(void)st;
	(void)arg;
	if (body_invalid(req))
		return;
	if (!serve.workers) {
		gk_buf line = spare_take(&spare_line);
		run_handler(gk_req_msg(req), &line);
		pass_line(req, &line);
		spare_give(&spare_line, &line);
		return;
	}
	struct job *j = gk_xcalloc(1, sizeof *j);
	const gk_msg *m = gk_req_msg(req);
	j->req = req;
	j->msg = gk_msg_new(m->line.data, m->line.len, NULL);
	*(struct job **)gk_req_state(req) = j;
	pthread_mutex_lock(&serve.mu);
	j->prev = serve.todo_tail;
	if (serve.todo_tail)
		serve.todo_tail->next = j;
	else
		serve.todo = j;
	serve.todo_tail = j;
	gk_gauge_set(serve.m_queued, (double)++serve.queued);
	pthread_cond_signal(&serve.cv);
	pthread_mutex_unlock(&serve.mu);
}

static void
serve_done(gk_stage *st, gk_req *req, int status, void *arg)
{
	(void)st;
	(void)status;
	(void)arg;
	struct job **slot = gk_req_state(req);
	if (!serve.workers || !*slot)
		return;
	/* Answered (504, client gone) while a worker has it, or while it
	 * waits for one: then it leaves the queue now, so that the queue
	 * stays within --max-inflight however long the workers are stuck. */
	struct job *j = *slot, *drop = NULL;
	pthread_mutex_lock(&serve.mu);
	j->req = NULL;
	if (!j->taken) {
		if (j->prev)
			j->prev->next = j->next;
		else
			serve.todo = j->next;
		if (j->next)
			j->next->prev = j->prev;
		else
			serve.todo_tail = j->prev;
		gk_gauge_set(serve.m_queued, (double)--serve.queued);
		drop = j;
	}
	pthread_mutex_unlock(&serve.mu);
	*slot = NULL;
	if (drop) {
		gk_msg_free(drop->msg);
		gk_buf_free(&drop->answer);
		free(drop);
	}
}

static int
serve_start(gk_stage *st, void *arg)
{
	(void)arg;
	if (!serve.workers)
		return 0;
	serve.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (serve.efd < 0)
		gk_fatal(GK_EXIT_OSERR, "unable to create eventfd: %s",
		    strerror(errno));
	gk_loop_watch(gk_stage_loop(st), serve.efd, GK_READ, on_done_jobs,
	    NULL);
	serve.threads = gk_xcalloc(serve.workers, sizeof *serve.threads);
	serve.ended = gk_xcalloc(serve.workers, sizeof *serve.ended);
	serve.alive = serve.workers;
	serve.m_left = gk_metric_series(gk_counter_new(
	    "gk_serve_handlers_left_total",
	    "Handlers still running at exit, left to end with the process",
	    NULL));
	serve.m_queued = gk_metric_series(gk_gauge_new("gk_serve_queued",
	    "Requests waiting for a worker thread", NULL));
	/*
	 * Workers take no signal.  They are started before the runtime
	 * blocks TERM, INT, HUP and USR1 for its signalfd, and a thread
	 * inherits its creator's mask: with those signals open in the
	 * workers, the kernel gave a TERM to a worker and its default
	 * action ended the process instead of draining it.  As nginx's
	 * thread pools do: every signal but those a fault raises, which
	 * blocking would not stop anyway.
	 */
	sigset_t all, old;
	sigfillset(&all);
	sigdelset(&all, SIGILL);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGTRAP);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < serve.workers; i++)
		if (pthread_create(&serve.threads[i], NULL, worker,
			(void *)(uintptr_t)i))
			gk_fatal(GK_EXIT_OSERR, "unable to start a worker thread");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return 0;
}

static void
serve_stop(gk_stage *st, void *arg)
{
	(void)st;
	(void)arg;
	if (!serve.workers)
		return;
	/*
	 * Every request is answered by now (the drain, or its timeout, saw
	 * to it): a worker still in the handler works for nobody.  One
	 * stuck for good (a deadlock, a peer that never answers) kept the
	 * process from exiting at all when every worker was joined: the
	 * idle ones are, the busy ones end with the process.
	 */
	pthread_mutex_lock(&serve.mu);
	serve.quit = true;
	pthread_cond_broadcast(&serve.cv);
	while (serve.alive > serve.busy)
		pthread_cond_wait(&serve.ended_cv, &serve.mu);
	unsigned left = serve.busy;
	/* Read under the lock: a busy one may end meanwhile. */
	bool *join = gk_xcalloc(serve.workers, sizeof *join);
	memcpy(join, serve.ended, serve.workers * sizeof *join);
	pthread_mutex_unlock(&serve.mu);
	for (unsigned i = 0; i < serve.workers; i++)
		if (join[i])
			pthread_join(serve.threads[i], NULL);
	free(join);
	if (left) {
		char f[32];
		snprintf(f, sizeof f, "handlers=%u", left);
		gk_log(GK_WARN, "handlers still running at exit: left", f);
		gk_counter_add(serve.m_left, left);
	}
}

static int
serve_option(int short_name, const char *name, const char *value, void *arg)
{
	(void)name;
	(void)arg;
	/* gk_opt_uint's usage error says what was expected, as every
	 * other stage option's does. */
	if (short_name == 'j')
		serve.workers = (unsigned)gk_opt_uint("jobs", value, 0, 1024);
	return 0;
}

int
gk_serve(int argc, char **argv, gk_handler *handler, void *arg)
{
	static const gk_stage_option opts[] = {
	    {"jobs", 'j', true, "N", "run the handler on N worker threads (0)"},
	    {0},
	};
	const char *name = argc > 0 ? strrchr(argv[0], '/') : NULL;
	name = name ? name + 1 : argc > 0 ? argv[0] : "gk_serve";
	serve.fn = handler;
	serve.arg = arg;
	gk_stage_def def = {
	    .ops = {.name = name,
		.req_state_size = sizeof(struct job *),
		.start = serve_start,
		.on_request = serve_request,
		.on_done = serve_done,
		.stop = serve_stop},
	    .summary = "a handler served by gk_serve(3)",
	    .options = opts,
	    .option = serve_option,
	    .http_option = true,
	    .no_south = true,
	};
	return gk_stage_main(argc, argv, &def);
}
