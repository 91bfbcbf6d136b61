/*
 * http_server.c: the HTTP/1.1 north side of a stage (gk-listener, and
 * gk_serve --http).  Connections, pipelining in request order, the
 * connection-level bounds (header and idle timeouts, --max-conns,
 * pipeline depth), lingering close, /healthz, access events and HTTP
 * metrics.  Parsing and rendering live in http_parser.c and http_render.c.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log_gate.h"
#include "runtime.h"

/* More requests than this waiting on one connection: stop reading it. */
#define MAX_PIPELINE 32
/*
 * Answers in memory past this on one connection, unsent or held for an
 * earlier one: stop reading it too, until they drain below half.
 * Otherwise a client that pipelines and never reads moves answers out of
 * the pipeline into the output without bound, and one whose first request
 * is slow gets every answer behind it held (32 of them: 32 MB at 1 MB
 * each) however little it reads.
 */
#define MAX_UNSENT (64 * 1024)
/*
 * Connections refused with a 503 (past --max-conns, or while draining)
 * that linger at once, outside --max-conns; past this many, one is closed
 * at once (and may be reset).  A flood of refused connections costs at
 * most this many fds for at most --lingering-time each.
 */
#define MAX_REFUSED_LINGER 64
struct pending {
	struct pending *next;
	gk_req *req; /* NULL once answered */
	gk_buf bytes;
	bool ready, close_after;
	gk_http_info info;
	uint64_t start_us;
	char *path;
};

struct conn {
	gk_north north; /* first: the runtime hands out &conn->north */
	gk_http_server *srv;
	int fd;
	gk_http_parser *parser;
	gk_buf out;
	gk_buf rest; /* bytes read past a full pipeline, fed later */
	struct pending *head, *tail;
	unsigned npending;
	/* Bytes of answers ready but waiting for an earlier one: they count
	 * with out.len toward MAX_UNSENT. */
	size_t held;
	gk_timer timer;
	gk_timer resume; /* 0 ms: refeed once the output has drained */
	bool want_write, dirty, close_when_flushed, closed, paused, busy;
	bool last_taken;  /* a request without keep-alive: read no more */
	bool linger;    /* the last answer is queued: linger once it is sent */
	bool lingering; /* it is sent: reading and discarding (conn_linger) */
	bool refused;   /* refused at accept: never counted in --max-conns */
	bool wrote;     /* T_IDLE: the client took output since it was armed */
	unsigned outq;  /* and the kernel's unsent bytes then (UINT_MAX: not
	                 * looked at yet) */
	enum { T_IDLE, T_HEADER, T_BODY, T_LINGER } timer_kind;
	uint64_t linger_until_us;
	struct conn *next_dirty, *prev, *next;
	char remote[56];
};

struct gk_http_server {
	gk_stage *st;
	gk_loop *loop;
	const gk_stage_config *cfg;
	struct conn *conns; /* all open connections */
	size_t nconns;
	size_t nrefused; /* refused ones lingering, in conns */
	bool draining;
	unsigned access_counter;
	struct conn *dirty;
	int fds[GK_MAX_LISTEN + 64];
	int nfds;
	gk_accept_pause accept_pause; /* out of fds: not accepting a while */
	gk_metric *m_requests;
	gk_series *last_req_series;
	char last_method[16];
	int last_code;
	gk_series *m_duration, *m_inflight, *m_conns, *m_lingering;
	size_t nlingering;
	gk_series *r_bad, *r_header_large, *r_uri_long, *r_body_large,
	    *r_header_timeout, *r_not_impl, *r_max_conns, *r_idle,
	    *r_bad_response, *r_pipeline, *r_unsent, *r_gone, *r_body_timeout;
	size_t inflight;
	/* Finished pendings kept for reuse, their output buffer with them:
	 * no allocation a request once a few have gone by. */
	struct pending *spare;
	unsigned nspare;
};

#define SPARE_PENDING 64
#define SPARE_BYTES_MAX 4096

static struct pending *
pending_new(gk_http_server *srv)
{
	struct pending *p = srv->spare;
	if (!p)
		return gk_xcalloc(1, sizeof *p);
	srv->spare = p->next;
	srv->nspare--;
	gk_buf keep = p->bytes;
	memset(p, 0, sizeof *p);
	p->bytes = keep;
	p->bytes.len = 0;
	return p;
}

/* A new answer, due after those already queued on c. */
static struct pending *
pending_queue(struct conn *c, const gk_http_info *info)
{
	struct pending *p = pending_new(c->srv);
	p->info = *info;
	p->start_us = gk_monotonic_us();
	if (c->tail)
		c->tail->next = p;
	else
		c->head = p;
	c->tail = p;
	c->npending++;
	return p;
}

static void
pending_free(gk_http_server *srv, struct pending *p)
{
	free(p->path);
	p->path = NULL;
	if (srv->nspare >= SPARE_PENDING || p->bytes.cap > SPARE_BYTES_MAX) {
		gk_buf_free(&p->bytes);
		free(p);
		return;
	}
	p->next = srv->spare;
	srv->spare = p;
	srv->nspare++;
}

static char shared_in[65536];

static void conn_io(gk_loop *loop, int fd, unsigned ev, void *arg);
static void conn_close(struct conn *c);
static void conn_linger(struct conn *c);
static void conn_feed(struct conn *c, const char *p, size_t n);
static void conn_release(struct conn *c);

static void
on_resume(gk_loop *loop, void *arg)
{
	(void)loop;
	conn_release(arg);
}

static void
mark_dirty(struct conn *c)
{
	if (!c->dirty) {
		c->dirty = true;
		c->next_dirty = c->srv->dirty;
		c->srv->dirty = c;
	}
}

static void
update_events(struct conn *c)
{
	unsigned e = (c->paused || c->closed) ? 0 : GK_READ;
	if (c->want_write)
		e |= GK_WRITE;
	gk_loop_modify(c->srv->loop, c->fd, e);
}

static void
conn_flush(struct conn *c)
{
	if (c->closed || c->lingering)
		return;
	size_t before = c->out.len + c->held;
	while (c->out.len) {
		ssize_t n = write(c->fd, c->out.data, c->out.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			gk_counter_add(c->srv->r_gone, 1);
			conn_close(c);
			return;
		}
		gk_buf_consume(&c->out, (size_t)n);
		c->wrote = true;
		break; /* one write per turn; the rest when writable */
	}
	/* Reading stopped for the output may go on: not from here, which
	 * may be the end of a turn, when what a refeed sends south would
	 * wait for the next one. */
	if (c->paused && before >= MAX_UNSENT / 2 &&
	    c->out.len + c->held < MAX_UNSENT / 2)
		gk_timer_start(c->srv->loop, &c->resume, 0, on_resume, c);
	bool want = c->out.len > 0;
	if (want != c->want_write) {
		c->want_write = want;
		update_events(c);
	}
	if (!c->out.len) {
		if (c->out.cap > 16384)
			gk_buf_free(&c->out);
		if (c->close_when_flushed) {
			if (c->linger && c->srv->cfg->lingering_time_ms)
				conn_linger(c);
			else
				conn_close(c);
		}
	}
}

static void
flush_dirty(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_http_server *srv = arg;
	while (srv->dirty) {
		struct conn *c = srv->dirty;
		srv->dirty = c->next_dirty;
		c->dirty = false;
		if (c->closed)
			free(c);
		else
			conn_flush(c);
	}
}

static void on_conn_timer(gk_loop *loop, void *arg);

/* Idle, or an answer is being written: --idle-timeout bounds a client that
 * stops taking it (on_conn_timer), not one that takes it slowly. */
static void
arm_send_timer(struct conn *c)
{
	c->timer_kind = T_IDLE;
	c->wrote = false;
	c->outq = UINT_MAX;
	gk_timer_start(c->srv->loop, &c->timer, c->srv->cfg->idle_timeout_ms,
	               on_conn_timer, c);
}

/*
 * Whether the client took some of its answer since the timer was armed.
 * Writes alone do not tell: the kernel's send buffer (megabytes) may take
 * a slow client longer than --idle-timeout to make room for one, while it
 * reads all along; its unsent bytes going down do.
 */
static bool
send_moved(struct conn *c)
{
	int q = 0;
	if (ioctl(c->fd, TIOCOUTQ, &q) < 0 || q < 0)
		return c->wrote;
	bool moved = c->wrote || (unsigned)q < c->outq;
	c->outq = (unsigned)q;
	return moved;
}

static void
on_conn_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	struct conn *c = arg;
	if (c->timer_kind == T_LINGER) {
		conn_close(c);
		return;
	}
	if (c->timer_kind != T_IDLE) {
		/* Slowloris: headers not complete in time, or a body that
		 * stalls. */
		gk_counter_add(c->timer_kind == T_HEADER
		                   ? c->srv->r_header_timeout
		                   : c->srv->r_body_timeout,
		               1);
		gk_http_render_simple(408, "request timeout\n", false, false,
		                      NULL, &c->out);
		c->close_when_flushed = true;
		c->linger = true;
		c->paused = true;
		update_events(c);
		mark_dirty(c);
	} else if (c->out.len && send_moved(c)) {
		/* Not idle: an answer is still being written, and the
		 * client takes it, however slowly.  Closing would cut it. */
		c->wrote = false;
		gk_timer_start(c->srv->loop, &c->timer,
		               c->srv->cfg->idle_timeout_ms, on_conn_timer, c);
	} else {
		/* Idle, or a client that has taken none of its answer for
		 * that long */
		gk_counter_add(c->srv->r_idle, 1);
		conn_close(c);
	}
}

/*
 * Draining, c has nothing due nor half-read: close it once what is written
 * is sent, lingering as after a last answer.  The client may be sending a
 * request at this very moment (or have pipelined one behind an answer
 * still being written): closed with it unread, or when it comes, the
 * kernel answers with a reset, which destroys what of the answer the
 * client has not read yet, and reads as a failure where a clean end of
 * file tells a client to retry on a new connection.
 */
static void
drain_close(struct conn *c)
{
	c->close_when_flushed = true;
	c->linger = true;
	mark_dirty(c);
	arm_send_timer(c); /* lingering replaces it once all is sent */
}

/*
 * Idle (nothing pending, nothing half-read): the idle timer runs.  Headers
 * half-read: the header timer, from their first byte.  A body half-read:
 * the idle timeout again, from the last read, so that a slow upload that
 * keeps moving is not cut off but one that stalls is.
 */
static void
arm_timer(struct conn *c)
{
	gk_http_server *srv = c->srv;
	if (c->closed)
		return;
	if (c->npending) {
		gk_timer_stop(srv->loop, &c->timer);
		return;
	}
	if (gk_http_parser_in_body(c->parser)) {
		c->timer_kind = T_BODY;
		gk_timer_start(srv->loop, &c->timer, srv->cfg->idle_timeout_ms,
		               on_conn_timer, c);
		return;
	}
	if (!gk_http_parser_idle(c->parser)) {
		if (c->timer_kind != T_HEADER || !gk_timer_armed(&c->timer)) {
			c->timer_kind = T_HEADER;
			gk_timer_start(srv->loop, &c->timer,
			               srv->cfg->header_timeout_ms,
			               on_conn_timer, c);
		}
		return;
	}
	if (srv->draining) {
		drain_close(c);
		return;
	}
	arm_send_timer(c);
}

/* Drop what is still waiting on c: its requests are cancelled south. */
static void
conn_drop_pending(struct conn *c)
{
	gk_http_server *srv = c->srv;
	for (struct pending *p = c->head, *next; p; p = next) {
		next = p->next;
		if (p->req) {
			gk_req *r = p->req;
			p->req = NULL;
			srv->inflight--;
			gk__req_abandon(r);
		}
		pending_free(srv, p);
	}
	c->head = c->tail = NULL;
	c->npending = 0;
	c->held = 0;
	gk_gauge_set(srv->m_inflight, (double)srv->inflight);
}

static void
conn_close(struct conn *c)
{
	gk_http_server *srv = c->srv;
	if (c->closed)
		return;
	c->closed = true;
	if (c->lingering) {
		srv->nlingering--;
		gk_gauge_set(srv->m_lingering, (double)srv->nlingering);
	}
	gk_timer_stop(srv->loop, &c->timer);
	gk_timer_stop(srv->loop, &c->resume);
	gk_loop_unwatch(srv->loop, c->fd);
	close(c->fd);
	conn_drop_pending(c);
	gk_http_parser_free(c->parser);
	c->parser = NULL;
	gk_buf_free(&c->out);
	gk_buf_free(&c->rest);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->refused) {
		srv->nrefused--;
	} else {
		srv->nconns--;
		gk_gauge_set(srv->m_conns, (double)srv->nconns);
		gk__north_closed(srv->st);
	}
	/* Freed at the end of the turn: callers up the stack may hold it. */
	mark_dirty(c);
}

static uint64_t
min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/*
 * Lingering close, as nginx's lingering_close: the last answer is written,
 * but the client may still be sending (requests pipelined behind one that
 * closes the connection, the rest of a body answered 413).  Closing a
 * socket with unread bytes makes the kernel send a reset, and a reset
 * destroys whatever the client has not yet read of the answer.  So: FIN
 * after the answer (shutdown), then read and throw away what comes until
 * the client closes, at most --lingering-time in all and
 * --lingering-timeout between reads, then close.  Only connections the
 * listener closes after an answer linger; keep-alive ones never get here.
 * The connection keeps its slot (it counts in --max-conns and in drain,
 * which --drain-timeout bounds) but none of its buffers.
 */
static void
conn_linger(struct conn *c)
{
	gk_http_server *srv = c->srv;
	const gk_stage_config *cfg = srv->cfg;
	if (shutdown(c->fd, SHUT_WR) < 0) { /* the client is gone */
		conn_close(c);
		return;
	}
	/* Answers still waiting behind the last one (only while draining)
	 * will never be sent. */
	conn_drop_pending(c);
	gk_http_parser_free(c->parser);
	c->parser = NULL;
	gk_buf_free(&c->out);
	gk_buf_free(&c->rest);
	gk_timer_stop(srv->loop, &c->resume);
	c->lingering = true;
	c->paused = false;
	c->want_write = false;
	update_events(c);
	c->linger_until_us = gk_monotonic_us() + cfg->lingering_time_ms * 1000;
	c->timer_kind = T_LINGER;
	gk_timer_start(
	    srv->loop, &c->timer,
	    min_u64(cfg->lingering_timeout_ms, cfg->lingering_time_ms),
	    on_conn_timer, c);
	srv->nlingering++;
	gk_gauge_set(srv->m_lingering, (double)srv->nlingering);
}

/* A lingering connection is readable: discard, or close at its end. */
static void
conn_linger_read(struct conn *c)
{
	const gk_stage_config *cfg = c->srv->cfg;
	ssize_t n = read(c->fd, shared_in, sizeof shared_in);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) { /* the client closed too (or reset): done */
		conn_close(c);
		return;
	}
	uint64_t now = gk_monotonic_us();
	if (now >= c->linger_until_us) {
		conn_close(c);
		return;
	}
	uint64_t left_ms = (c->linger_until_us - now + 999) / 1000;
	gk_timer_start(c->srv->loop, &c->timer,
	               min_u64(cfg->lingering_timeout_ms, left_ms),
	               on_conn_timer, c);
}

/* Move answered responses at the head of the pipeline to the output. */
static void
conn_release(struct conn *c)
{
	while (c->head && c->head->ready) {
		struct pending *p = c->head;
		gk_buf_add(&c->out, p->bytes.data, p->bytes.len);
		c->held -= p->bytes.len;
		bool close_after = p->close_after;
		c->head = p->next;
		if (!c->head)
			c->tail = NULL;
		c->npending--;
		pending_free(c->srv, p);
		mark_dirty(c);
		if (close_after) {
			c->close_when_flushed = true;
			c->linger = true;
			c->paused = true;
			update_events(c);
			/* nothing is read any more, but the answer must be
			 * taken: a client that never does is closed */
			arm_send_timer(c);
			return;
		}
	}
	if (c->paused && c->npending < MAX_PIPELINE / 2 &&
	    c->out.len + c->held < MAX_UNSENT / 2 && !c->close_when_flushed &&
	    !c->last_taken && !c->busy) {
		c->paused = false;
		update_events(c);
		if (c->rest.len) {
			gk_buf rest = c->rest;
			c->rest = (gk_buf){0};
			conn_feed(c, rest.data, rest.len);
			gk_buf_free(&rest);
			return;
		}
	}
	arm_timer(c);
}

static const char *
method_label(const char *m)
{
	static const char *known[] = {"GET",     "HEAD",  "POST",    "PUT",
	                              "DELETE",  "PATCH", "OPTIONS", "TRACE",
	                              "CONNECT", NULL};
	for (int i = 0; known[i]; i++)
		if (!strcmp(m, known[i]))
			return known[i];
	return "OTHER";
}

/*
 * The trace id of a response that a gk-tracer south of us answered: its
 * traceresponse header (version-traceid-spanid-flags), so that access
 * events join the spans and logs of the same request.
 */
static const char *
response_trace_id(const gk_msg *resp, char out[33])
{
	/* The header as the tracer writes it: a plain string (an escaped
	 * one cannot hold the hex below anyway). */
	gk_json v =
	    gk_json_member(gk_msg_get(resp, "headers"), "traceresponse");
	if (v.type != GK_JSON_STRING || v.len < 57 || v.p[3] != '-' ||
	    v.p[36] != '-')
		return NULL;
	memcpy(out, v.p + 4, 32);
	out[32] = 0;
	for (int i = 0; i < 32; i++)
		if (!((out[i] >= '0' && out[i] <= '9') ||
		      (out[i] >= 'a' && out[i] <= 'f')))
			return NULL;
	return out;
}

/* Count an answer, and write its access event (resp: the stack's answer,
 * NULL for one the transport made, read for its trace id only then). */
static void
record(struct conn *c, struct pending *p, int status, size_t bytes,
       const gk_msg *resp)
{
	gk_http_server *srv = c->srv;
	const char *m = method_label(p->info.method);
	if (!srv->last_req_series || srv->last_code != status ||
	    strcmp(srv->last_method, m)) {
		char code[8];
		snprintf(code, sizeof code, "%d", status);
		srv->last_req_series =
		    gk_series_get(srv->m_requests, m, code, (char *)0);
		srv->last_code = status;
		snprintf(srv->last_method, sizeof srv->last_method, "%s", m);
	}
	gk_counter_add(srv->last_req_series, 1);
	double dur = (double)(gk_monotonic_us() - p->start_us) / 1e6;
	gk_histogram_observe(srv->m_duration, dur);
	if (!srv->cfg->access_log ||
	    ++srv->access_counter % srv->cfg->access_sample)
		return;
	char trace_buf[33];
	const char *trace_id = resp ? response_trace_id(resp, trace_buf) : NULL;
	gk_jw *w = gk_event_begin("access");
	gk_jw_key(w, "method");
	gk_jw_cstr(w, p->info.method);
	gk_jw_key(w, "path");
	gk_jw_cstr(w, p->path ? p->path : "");
	gk_jw_key(w, "status");
	gk_jw_int(w, status);
	gk_jw_key(w, "bytes");
	gk_jw_int(w, (int64_t)bytes);
	gk_jw_key(w, "duration");
	gk_jw_double(w, dur);
	gk_jw_key(w, "remote");
	gk_jw_cstr(w, c->remote);
	if (trace_id) {
		gk_jw_key(w, "trace_id");
		gk_jw_cstr(w, trace_id);
	}
	gk_event_end();
}

/*
 * Whether the connection stays open after p's answer.  Draining, the last
 * answer due closes it; those before it keep it open, for the requests
 * behind them were taken and run: closing after the first would throw
 * their answers away.
 */
static bool
keep_after(const struct conn *c, const struct pending *p)
{
	return p->info.keep_alive && !(c->srv->draining && p == c->tail);
}

/* Answer p with a response the transport makes itself. */
static void
answer_simple(struct conn *c, struct pending *p, int status, const char *body,
              const char *extra)
{
	bool keep = keep_after(c, p);
	gk_http_render_simple(status, body, keep, p->info.head, extra,
	                      &p->bytes);
	p->close_after = !keep;
	p->ready = true;
	c->held += p->bytes.len;
	record(c, p, status, body ? strlen(body) : 0, NULL);
}

static void
error_event(gk_msg *resp, const char *why)
{
	gk_buf stage = {0};
	gk_json e = gk_json_member(gk_msg_get(resp, "error"), "stage");
	gk_buf_adds(&stage, "stage=");
	if (gk_json_string(e, &stage) < 0)
		gk_buf_adds(&stage, "south");
	gk_buf w = {0};
	gk_buf_adds(&w, "why=");
	gk_buf_adds(&w, why);
	gk_log(GK_ERROR, "invalid response from the stack: answered 502",
	       gk_buf_cstr(&stage), gk_buf_cstr(&w));
	gk_buf_free(&stage);
	gk_buf_free(&w);
}

static void
http_respond(gk_north *n, gk_req *req, gk_msg *resp)
{
	struct conn *c = (struct conn *)n;
	struct pending *p = gk__req_cookie(req);
	gk_http_server *srv = c->srv;
	if (!p || p->req != req) {
		gk_msg_free(resp);
		return;
	}
	p->req = NULL;
	srv->inflight--;
	gk_gauge_set(srv->m_inflight, (double)srv->inflight);
	bool keep = keep_after(c, p);
	size_t body = 0;
	const char *why = NULL;
	if (gk_http_render(resp, &p->info, keep, &p->bytes, &body, &why) < 0) {
		gk_counter_add(srv->r_bad_response, 1);
		error_event(resp, why ? why : "invalid");
		p->bytes.len = 0;
		answer_simple(c, p, 502, "bad gateway\n", NULL);
	} else {
		p->close_after = !keep;
		p->ready = true;
		c->held += p->bytes.len;
		record(c, p, gk_msg_status(resp), body, resp);
	}
	gk_msg_free(resp);
	conn_release(c);
	/* Nothing else is due on this connection: the answer goes now, not
	 * at the end of the turn.  It is the one write it would get anyway,
	 * and the rest of a long turn (reading other clients) is latency. */
	if (!c->closed && !c->busy && !c->npending && c->out.len &&
	    !c->want_write)
		conn_flush(c);
}

static const struct gk_north_ops http_north_ops = {http_respond};

static bool
is_health(gk_http_server *srv, gk_msg *m)
{
	gk_json path = gk_msg_get(m, "path");
	return gk_json_eq(path, srv->cfg->health_path);
}

static void
take_request(struct conn *c)
{
	gk_http_server *srv = c->srv;
	const gk_http_info *info = gk_http_parser_info(c->parser);
	struct pending *p = pending_queue(c, info);

	char id[24]; /* at most 20 digits: the buffer never grows */
	gk_buf idb = {id, 0, sizeof id};
	gk_buf_adduint(&idb, gk__stage_next_id(srv->st));
	id[idb.len] = 0;
	uint64_t deadline =
	    srv->cfg->timeout_ms
	        ? gk_loop_realtime_ms(srv->loop) + srv->cfg->timeout_ms
	        : 0;
	/* Encoded with its index: no parse of a line we wrote (the fuzz
	 * target and sanitizer builds check the index against one). */
	gk_msg *m =
	    gk_http_parser_encode_msg(c->parser, id, c->remote, deadline);
	if (!m) { /* not a whole request: cannot happen after GK_HTTP_REQUEST */
		gk_counter_add(srv->r_bad, 1);
		answer_simple(c, p, 400, "bad request\n", NULL);
		p->close_after = true;
		return;
	}
	if (srv->cfg->access_log) {
		gk_buf path = {0};
		gk_json_string(gk_msg_get(m, "path"), &path);
		p->path = gk_xstrdup(gk_buf_cstr(&path));
		gk_buf_free(&path);
	}
	/* A gokit stack upstream passes what is left of its deadline (looked
	 * for in the headers only when the parser saw the name).  0 is none
	 * left: the deadline is now, and the stage answers 504 at once
	 * rather than give the request all of --timeout. */
	gk_json rem = {GK_JSON_NONE, NULL, 0};
	if (p->info.timeout_header)
		rem =
		    gk_json_member(gk_msg_get(m, "headers"), "x-gk-timeout-ms");
	if (rem.type == GK_JSON_STRING) {
		gk_buf v = {0};
		uint64_t left;
		gk_json_string(rem, &v);
		if (gk_parse_uint(gk_buf_cstr(&v), 0, 86400000, &left) == 0 &&
		    (!deadline ||
		     gk_loop_realtime_ms(srv->loop) + left < deadline)) {
			char num[24];
			int k =
			    snprintf(num, sizeof num, "%llu",
			             (unsigned long long)(gk_loop_realtime_ms(
			                                      srv->loop) +
			                                  left));
			gk_msg_set(m, "deadline", num, (size_t)k);
		}
		gk_buf_free(&v);
	}
	if (is_health(srv, m)) {
		bool ok = gk__stage_healthy(srv->st);
		answer_simple(c, p, ok ? 200 : 503,
		              ok ? "ok\n" : "unavailable\n", NULL);
		gk_msg_free(m);
		return;
	}
	p->req = NULL;
	srv->inflight++;
	gk_gauge_set(srv->m_inflight, (double)srv->inflight);
	/* p->req is set before the stage runs, so an answer given at once
	 * finds it; gk__request may finish the request before returning. */
	c->busy = true;
	gk__request_with(srv->st, &c->north, p, m, &p->req);
	c->busy = false;
}

/*
 * The body of a request with Expect: 100-continue is to be read now: the
 * client may wait for the 100 before it sends it (RFC 9110 §10.1.1).
 * Behind answers still due it is queued as one of them, in its place, so
 * it goes out right after them, never before (nor never at all, which
 * left a pipelining client to its own timeout).
 */
static void
send_continue(struct conn *c)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	if (!c->npending) {
		gk_buf_add(&c->out, cont, sizeof cont - 1);
		mark_dirty(c);
		return;
	}
	struct pending *p = pending_queue(c, gk_http_parser_info(c->parser));
	gk_buf_add(&p->bytes, cont, sizeof cont - 1);
	p->ready = true;
	c->held += p->bytes.len;
}

static void
conn_feed(struct conn *c, const char *data, size_t n)
{
	gk_http_server *srv = c->srv;
	while (n && !c->closed && !c->close_when_flushed) {
		size_t used = 0;
		enum gk_http_feed r =
		    gk_http_parser_feed(c->parser, data, n, &used);
		data += used;
		n -= used;
		if (r == GK_HTTP_NEED_MORE)
			break;
		if (r == GK_HTTP_CONTINUE) {
			send_continue(c);
			continue;
		}
		if (r == GK_HTTP_ERROR) {
			const gk_http_info *info =
			    gk_http_parser_info(c->parser);
			int status =
			    info->error_status ? info->error_status : 400;
			gk_series *s = status == 431   ? srv->r_header_large
			               : status == 414 ? srv->r_uri_long
			               : status == 413 ? srv->r_body_large
			               : status == 501 ? srv->r_not_impl
			                               : srv->r_bad;
			gk_counter_add(s, 1);
			struct pending *p = pending_queue(c, info);
			p->info.keep_alive = false;
			/* The parser's reason too: a client told only "Bad
			 * Request" cannot tell what to fix. */
			char body[160];
			if (info->error)
				snprintf(body, sizeof body, "%s: %s\n",
				         gk_http_reason(status), info->error);
			else
				snprintf(body, sizeof body, "%s\n",
				         gk_http_reason(status));
			answer_simple(c, p, status, body, NULL);
			p->close_after = true;
			conn_release(c);
			return;
		}
		/* RFC 9112 §9.6: nothing after a request that closes the
		 * connection is a request (nor is it run). */
		bool last = !gk_http_parser_info(c->parser)->keep_alive;
		if (last) {
			c->last_taken = true;
			c->paused = true;
			update_events(c);
		}
		take_request(c);
		if (c->closed)
			return;
		conn_release(c);
		if (last)
			break;
		if (c->npending >= MAX_PIPELINE ||
		    c->out.len + c->held >= MAX_UNSENT) {
			/* Bytes left stay unread in the kernel's buffer:
			 * refeed them when the pipeline shrinks and the
			 * output drains. */
			gk_counter_add(c->npending >= MAX_PIPELINE
			                   ? srv->r_pipeline
			                   : srv->r_unsent,
			               1);
			c->paused = true;
			update_events(c);
			if (n) /* rare: keep the rest until answers drain */
				gk_buf_add(&c->rest, data, n);
			break;
		}
	}
	arm_timer(c);
}

static void
conn_io(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	(void)fd;
	struct conn *c = arg;
	if (c->closed)
		return;
	if (c->lingering) {
		conn_linger_read(c);
		return;
	}
	if (ev & GK_WRITE)
		conn_flush(c);
	if (c->closed || !(ev & GK_READ) || c->paused)
		return;
	if (c->out.len + c->held >= MAX_UNSENT) {
		/* The client does not read what it asked for, or the answers
		 * behind a slow one pile up: read no more until they are
		 * taken (conn_flush resumes). */
		gk_counter_add(c->srv->r_unsent, 1);
		c->paused = true;
		update_events(c);
		return;
	}
	ssize_t n = read(c->fd, shared_in, sizeof shared_in);
	if (n > 0) {
		conn_feed(c, shared_in, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	/* EOF or reset: the client is gone; whatever it asked is dropped. */
	if (c->npending)
		gk_counter_add(c->srv->r_gone, 1);
	conn_close(c);
}

/*
 * A connection just refused with a 503: the client may have sent its
 * request already, and closing with it unread would make the kernel send
 * a reset, which destroys the 503 before the client reads it.  So it
 * lingers as a last answer does, within MAX_REFUSED_LINGER.
 */
static void
refuse_linger(gk_http_server *srv, int fd)
{
	if (srv->nrefused >= MAX_REFUSED_LINGER ||
	    !srv->cfg->lingering_time_ms) {
		close(fd);
		return;
	}
	struct conn *c = gk_xcalloc(1, sizeof *c);
	c->srv = srv;
	c->fd = fd;
	c->refused = true;
	if (gk_loop_watch(srv->loop, fd, GK_READ, conn_io, c) < 0) {
		close(fd);
		free(c);
		return;
	}
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nrefused++;
	conn_linger(c);
}

static void
on_accept(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)ev;
	gk_http_server *srv = arg;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage sa;
		socklen_t salen = sizeof sa;
		bool shed;
		int cfd = gk_accept(fd, &sa, &salen, &shed);
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				gk__accept_pause(&srv->accept_pause, errno);
			return;
		}
		if (shed || srv->nconns >= srv->cfg->max_conns ||
		    srv->draining) {
			/* Refuse politely and go on accepting: the backlog
			 * must keep moving or good clients starve.  Out of
			 * fds (shed) it is the same answer, and the same
			 * remedy: fewer connections, or a higher fd limit. */
			gk_counter_add(srv->r_max_conns, 1);
			gk_buf b = {0};
			gk_http_render_simple(503, "too many connections\n",
			                      false, false,
			                      "Retry-After: 1\r\n", &b);
			(void)!write(cfd, b.data, b.len);
			gk_buf_free(&b);
			if (shed) { /* its fd is the reserve's: none to linger
				     */
				close(cfd);
				gk_accept_reserve();
			} else {
				refuse_linger(srv, cfd);
			}
			continue;
		}
		struct conn *c = gk_xcalloc(1, sizeof *c);
		c->north.ops = &http_north_ops;
		c->north.unique_ids = true;
		c->srv = srv;
		c->fd = cfd;
		c->parser = gk_http_parser_new(&srv->cfg->limits);
		if (sa.ss_family != AF_UNIX) {
			int one = 1;
			setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one,
			           sizeof one);
		}
		gk_addr_peer(&sa, c->remote, sizeof c->remote);
		c->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = c;
		srv->conns = c;
		srv->nconns++;
		gk_gauge_set(srv->m_conns, (double)srv->nconns);
		gk__north_opened(srv->st);
		gk_loop_watch(loop, cfd, GK_READ, conn_io, c);
		arm_timer(c);
	}
}

gk_http_server *
gk_http_server_new(gk_stage *st, gk_loop *loop)
{
	gk_http_server *srv = gk_xcalloc(1, sizeof *srv);
	srv->st = st;
	srv->loop = loop;
	srv->cfg = gk__stage_config(st);
	srv->m_requests = gk_counter_new(
	    "gk_http_requests_total",
	    "HTTP requests answered, by method and status code", "method,code");
	srv->m_duration = gk_metric_series(gk_histogram_new(
	    "gk_http_request_duration_seconds",
	    "Time from a request's last byte to its answer", NULL, NULL, 0));
	srv->m_inflight = gk_metric_series(gk_gauge_new(
	    "gk_http_inflight", "HTTP requests waiting on the stack", NULL));
	srv->m_conns = gk_metric_series(gk_gauge_new(
	    "gk_http_connections", "Open client connections", NULL));
	srv->m_lingering = gk_metric_series(gk_gauge_new(
	    "gk_http_lingering_connections",
	    "Connections answered for the last time, reading and discarding "
	    "what the client still sends before close (--lingering-time)",
	    NULL));
	gk_gauge_set(gk_metric_series(gk_gauge_new(
	                 "gk_http_max_connections",
	                 "The bound on connections (--max-conns)", NULL)),
	             (double)srv->cfg->max_conns);
	gk_metric *rej = gk_counter_new(
	    "gk_http_rejected_total",
	    "Requests and connections refused by a bound, by reason", "reason");
	srv->r_bad = gk_series_get(rej, "bad_request", (char *)0);
	srv->r_header_large = gk_series_get(rej, "header_too_large", (char *)0);
	srv->r_uri_long = gk_series_get(rej, "uri_too_long", (char *)0);
	srv->r_body_large = gk_series_get(rej, "body_too_large", (char *)0);
	srv->r_header_timeout = gk_series_get(rej, "header_timeout", (char *)0);
	srv->r_body_timeout = gk_series_get(rej, "body_timeout", (char *)0);
	srv->r_not_impl = gk_series_get(rej, "not_implemented", (char *)0);
	srv->r_max_conns = gk_series_get(rej, "max_conns", (char *)0);
	srv->r_idle = gk_series_get(rej, "idle_timeout", (char *)0);
	srv->r_bad_response = gk_series_get(rej, "bad_response", (char *)0);
	srv->r_pipeline = gk_series_get(rej, "pipeline_depth", (char *)0);
	srv->r_unsent = gk_series_get(rej, "unsent_output", (char *)0);
	srv->r_gone = gk_series_get(rej, "client_gone", (char *)0);
	gk__accept_pause_init(&srv->accept_pause, loop, srv->fds, &srv->nfds,
	    gk_metric_series(gk_counter_new("gk_http_accept_pauses_total",
	        "Times accepting stopped for 100 ms: out of file descriptors "
	        "even with the one kept in reserve",
	        NULL)));
	gk_loop_on_turn_end(loop, flush_dirty, srv);
	return srv;
}

int
gk_http_server_add(gk_http_server *srv, int fd)
{
	srv->fds[srv->nfds++] = fd;
	gk_accept_reserve();
	return gk_loop_watch(srv->loop, fd, GK_READ, on_accept, srv);
}

void
gk_http_server_drain(gk_http_server *srv)
{
	srv->draining = true;
	gk__accept_pause_stop(&srv->accept_pause); /* its sockets close */
	for (struct conn *c = srv->conns, *next; c; c = next) {
		next = c->next;
		if (c->lingering) /* closing already, within its bounds */
			continue;
		if (!c->npending && gk_http_parser_idle(c->parser))
			drain_close(c);
	}
}

void
gk_http_server_free(gk_http_server *srv)
{
	gk__accept_pause_stop(&srv->accept_pause);
	while (srv->conns)
		conn_close(srv->conns);
	flush_dirty(srv->loop, srv);
	while (srv->spare) {
		struct pending *p = srv->spare;
		srv->spare = p->next;
		gk_buf_free(&p->bytes);
		free(p);
	}
	free(srv);
}
