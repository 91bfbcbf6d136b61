/*
 * stage.c: the stage runtime.  It owns the loop, the north side (stdio, wire
 * sockets, the HTTP server), the south side (a child on pipes, or a
 * connection), the table of requests in flight with their deadlines,
 * signals, supervision of the child and draining.  A stage is only its
 * callbacks (gk_stage_ops).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procspawn.h"
#include "runtime.h"
#include "stream.h"

struct gk_req {
	gk_stage *st;
	gk_north *north; /* NULL once the client is gone */
	void *cookie;
	gk_msg *msg;
	char *id;  /* as the north side named it; stored after state[] */
	char *sid; /* as the south side knows it (== id when unique) */
	size_t sidlen;
	uint64_t deadline;
	uint64_t arrival;
	gk_timer timer;
	bool hashed, forwarded, done, trace_checked;
	bool seen; /* on_request has been called */
	bool kept; /* sized to be reused (req_alloc) */
	size_t state_size;
	char trace_id[33];
	gk_req *hnext;
	alignas(max_align_t) unsigned char state[];
};

struct wire_conn {
	gk_north north; /* first: the runtime hands out &conn->north */
	gk_stage *st;
	gk_stream *s;
	struct wire_conn *prev, *next; /* accepted connections */
};

/* SOUTH_FUSED: the stage below runs in this process (gk-listener --fuse);
 * requests reach it as calls, with a copy of the message and its index. */
enum south_kind { SOUTH_NONE, SOUTH_CHILD, SOUTH_CONN, SOUTH_FUSED };

#define RECENT_CANCELS 256
#define REQ_SPARE_MAX 1024
#define REQ_SPARE_IDLE 64 /* kept once idle (on_trim) */
#define TRIM_MS 2000

struct gk_stage {
	gk_stage_def def;
	gk_stage_config cfg;
	gk_loop *loop;

	gk_req **bucket;
	size_t nbucket, ninflight;
	uint64_t next_id;
	unsigned next_serial;

	gk_stream *stdio;
	int listen_fd[GK_MAX_LISTEN + 64];
	int nlisten_fd;
	int wire_fd[GK_MAX_LISTEN + 64]; /* of them, those speaking the wire */
	int nwire_fd;
	gk_accept_pause wire_pause;
	gk_http_server *http;
	struct wire_conn *wire_conns;
	unsigned nnorth;

	enum south_kind south_kind;
	gk_stream *south;
	pid_t child;
	pid_t leftover; /* the group of a reaped child, ended at exit */
	bool south_up;
	uint64_t backoff_ms, south_started;
	gk_timer restart_timer, drain_timer, drain_poll, kill_timer;
	gk_metrics_timer metrics;
	gk_timer watchdog_timer;
	uint64_t watchdog_ms;
	bool draining, stopping, term_deferred;
	bool stdio_failed; /* stdin or stdout failed (not closed): exit 74 */
	gk_timer term_timer; /* a signal left to the parent stage */
	int exit_status, kill_stage;

	uint64_t recent_cancel[RECENT_CANCELS];
	unsigned recent_next;

	/* The runtime's metrics (register_metrics); a fused stage's are the
	 * first stage's, but in flight, which is that one's alone (NULL). */
	struct {
		gk_series *inflight, *overload, *drain_rejects, *restarts;
		gk_series *unknown, *badline, *timeouts, *south_down;
		gk_series *duplicate, *drain_timeout;
	} m;

	/* Fused (SOUTH_FUSED): the stage below, and for it the stage above,
	 * whose requests arrive on link, a north like a wire connection. */
	gk_stage *next, *up;
	gk_north link;

	/* Finished requests kept for reuse (req_alloc); per stage, as each
	 * stage of a fused chain has its own state size. */
	gk_req *req_spare[REQ_SPARE_MAX];
	unsigned nreq_spare;
	uint64_t nreq_made, nreq_made_seen;
	gk_timer trim_timer; /* the first stage's, for all */
};

static void begin_drain(gk_stage *st, const char *why);
static void end_drain(gk_stage *st, const char *msg);
/* The stage that spawned this one (GK_PARENT_PID), 0 when none did. */
static pid_t parent_stage;

/* A log event with up to two key=value fields (k2 may be NULL). */
static void
log_kv(enum gk_level level, const char *msg, const char *k1, const char *v1,
    const char *k2, const char *v2)
{
	char a[512], b[512];
	snprintf(a, sizeof a, "%s=%s", k1, v1);
	if (k2)
		snprintf(b, sizeof b, "%s=%s", k2, v2);
	gk_log(level, msg, a, k2 ? b : NULL);
}
static void south_start(gk_stage *st);
static void check_drained(gk_stage *st);
struct wire_conn;
static void wire_conn_free(gk_stage *st, struct wire_conn *c);

/* ---- the table of requests in flight, keyed by south id ---- */

static uint64_t
hash_mem(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	while (n--)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static uint64_t
hash_str(const char *s)
{
	return hash_mem(s, strlen(s));
}


static void
table_grow(gk_stage *st)
{
	size_t n = st->nbucket ? st->nbucket * 2 : 256;
	gk_req **b = gk_xcalloc(n, sizeof *b);
	for (size_t i = 0; i < st->nbucket; i++)
		for (gk_req *r = st->bucket[i], *next; r; r = next) {
			next = r->hnext;
			size_t k = hash_mem(r->sid, r->sidlen) & (n - 1);
			r->hnext = b[k];
			b[k] = r;
		}
	free(st->bucket);
	st->bucket = b;
	st->nbucket = n;
}

static gk_req *
table_find(gk_stage *st, const char *sid, size_t n)
{
	if (!st->nbucket)
		return NULL;
	for (gk_req *r = st->bucket[hash_mem(sid, n) & (st->nbucket - 1)]; r;
	    r = r->hnext)
		if (r->sidlen == n && !memcmp(r->sid, sid, n))
			return r;
	return NULL;
}

static void
table_insert(gk_stage *st, gk_req *req)
{
	if (st->ninflight + 1 > st->nbucket)
		table_grow(st);
	size_t k = hash_mem(req->sid, req->sidlen) & (st->nbucket - 1);
	req->hnext = st->bucket[k];
	st->bucket[k] = req;
	req->hashed = true;
	if (req->north)
		req->north->inflight++;
	st->ninflight++;
	if (st->m.inflight)
		gk_gauge_set(st->m.inflight, (double)st->ninflight);
}

static void
table_remove(gk_stage *st, gk_req *req)
{
	if (!req->hashed)
		return;
	gk_req **p = &st->bucket[hash_mem(req->sid, req->sidlen) &
	    (st->nbucket - 1)];
	while (*p && *p != req)
		p = &(*p)->hnext;
	if (*p)
		*p = req->hnext;
	req->hashed = false;
	if (req->north && req->north->inflight)
		req->north->inflight--;
	st->ninflight--;
	if (st->m.inflight)
		gk_gauge_set(st->m.inflight, (double)st->ninflight);
}

/* Every request in flight, for the rare walks (south died, drain). */
static size_t
table_all(gk_stage *st, gk_req ***out)
{
	gk_req **v = gk_xmalloc((st->ninflight + 1) * sizeof *v);
	size_t n = 0;
	for (size_t i = 0; i < st->nbucket; i++)
		for (gk_req *r = st->bucket[i]; r; r = r->hnext)
			v[n++] = r;
	*out = v;
	return n;
}

/* ---- accessors ---- */

gk_loop *gk_stage_loop(gk_stage *st) { return st->loop; }
const char *gk_stage_name(const gk_stage *st) { return st->def.ops.name; }
bool gk_stage_draining(const gk_stage *st) { return st->draining; }
size_t gk_stage_inflight(const gk_stage *st) { return st->ninflight; }
const gk_stage_config *gk__stage_config(const gk_stage *st) { return &st->cfg; }
uint64_t gk__stage_next_id(gk_stage *st) { return ++st->next_id; }
gk_msg *gk_req_msg(gk_req *req) { return req->msg; }
void *gk_req_state(gk_req *req) { return req->state; }
gk_stage *gk_req_stage(gk_req *req) { return req->st; }
uint64_t gk_req_deadline(const gk_req *req) { return req->deadline; }
uint64_t gk_req_arrival(const gk_req *req) { return req->arrival; }
void *gk__req_cookie(const gk_req *req) { return req->cookie; }
const char *gk__req_id(const gk_req *req) { return req->id; }

bool
gk__stage_healthy(const gk_stage *st)
{
	if (st->draining)
		return false;
	if (st->next)
		return gk__stage_healthy(st->next);
	return st->south_kind == SOUTH_NONE || st->south_up;
}

void
gk__north_opened(gk_stage *st)
{
	st->nnorth++;
}

void
gk__north_closed(gk_stage *st)
{
	if (st->nnorth)
		st->nnorth--;
	if (st->draining)
		check_drained(st);
}

const char *
gk_req_trace_id(gk_req *req)
{
	if (!req->trace_checked) {
		req->trace_checked = true;
		gk_json t = gk_json_member(gk_msg_get(req->msg, "trace"),
		    "trace_id");
		gk_buf b = {0};
		if (t.type == GK_JSON_STRING && gk_json_string(t, &b) == 0 &&
		    b.len < sizeof req->trace_id) {
			memcpy(req->trace_id, b.data, b.len);
			req->trace_id[b.len] = 0;
		}
		gk_buf_free(&b);
	}
	return req->trace_id[0] ? req->trace_id : NULL;
}

/* ---- finishing requests ---- */

static void
remember_cancel(gk_stage *st, const char *sid)
{
	st->recent_cancel[st->recent_next++ % RECENT_CANCELS] = hash_str(sid);
}

static bool
recently_cancelled(gk_stage *st, const char *sid)
{
	uint64_t h = hash_str(sid);
	for (unsigned i = 0; i < RECENT_CANCELS; i++)
		if (st->recent_cancel[i] == h)
			return true;
	return false;
}

static void
send_cancel(gk_req *req)
{
	gk_stage *st = req->st;
	if (!req->forwarded)
		return;
	req->forwarded = false;
	if (st->next) { /* abandoned below at once: no late answer to drop */
		gk__cancel(st->next, &st->next->link, req->sid);
		return;
	}
	remember_cancel(st, req->sid);
	if (!st->south)
		return;
	gk_buf b = {0};
	gk_buf_adds(&b, "{\"id\":");
	gk_json_quote(&b, req->sid, strlen(req->sid));
	gk_buf_adds(&b, ",\"cancel\":true}");
	gk_stream_write_line(st->south, b.data, b.len);
	gk_buf_free(&b);
}

/*
 * Finished requests are kept for reuse, as messages are (msg.c): a stage
 * makes one a request, and malloc's calloc and free cost more than the
 * stage's own work on it.  Only those allocated with room for an id of up
 * to REQ_ID_KEEP bytes are kept, at most REQ_SPARE_MAX of them.
 */
#define REQ_ID_KEEP 40

static gk_req *
req_alloc(gk_stage *st, size_t state, size_t idlen)
{
	gk_req *req;
	st->nreq_made++;
	if (idlen < REQ_ID_KEEP && st->nreq_spare) {
		req = st->req_spare[--st->nreq_spare];
		if (req->state_size == state) {
			memset(req, 0, sizeof *req + state);
			goto kept;
		}
		free(req);
	}
	if (idlen >= REQ_ID_KEEP) {
		req = gk_xcalloc(1, sizeof *req + state + idlen + 1);
		req->state_size = state;
		return req;
	}
	req = gk_xmalloc(sizeof *req + state + REQ_ID_KEEP);
	memset(req, 0, sizeof *req + state);
kept:
	req->kept = true;
	req->state_size = state;
	return req;
}

static void
req_release(gk_stage *st, gk_req *req)
{
	if (req->kept && st->nreq_spare < REQ_SPARE_MAX)
		st->req_spare[st->nreq_spare++] = req;
	else
		free(req);
}

/*
 * What a burst left kept for reuse (requests, messages) is freed once a
 * period passes in which nothing was made: a stage holds on to its peak
 * only while it is busy.
 */
static void
on_trim(gk_loop *loop, void *arg)
{
	gk_stage *head = arg;
	for (gk_stage *st = head; st; st = st->next) {
		if (st->nreq_made == st->nreq_made_seen)
			while (st->nreq_spare > REQ_SPARE_IDLE)
				free(st->req_spare[--st->nreq_spare]);
		st->nreq_made_seen = st->nreq_made;
	}
	gk__msg_trim();
	gk_timer_start(loop, &head->trim_timer, TRIM_MS, on_trim, head);
}

static void
finish(gk_req *req, int status)
{
	gk_stage *st = req->st;
	req->done = true;
	gk_timer_stop(st->loop, &req->timer);
	table_remove(st, req);
	if (st->def.ops.on_done)
		st->def.ops.on_done(st, req, status, st->def.arg);
	gk_msg_free(req->msg);
	if (req->sid != req->id)
		free(req->sid);
	req_release(st, req);
	if (st->draining)
		check_drained(st);
}

/* Send resp north (its id already the north's) and finish req. */
static void
deliver(gk_req *req, gk_msg *resp)
{
	int status = gk_msg_status(resp);
	if (req->north)
		req->north->ops->respond(req->north, req, resp);
	else
		gk_msg_free(resp);
	finish(req, req->north ? status : 0);
}

void
gk_pass(gk_req *req, gk_msg *resp)
{
	if (req->done) {
		gk_msg_free(resp);
		return;
	}
	if (req->sid != req->id) {
		gk_buf q = {0};
		gk_json_quote(&q, req->id, strlen(req->id));
		gk_msg_set(resp, "id", q.data, q.len);
		gk_buf_free(&q);
	}
	deliver(req, resp);
}

void
gk_answer(gk_req *req, int status, const gk_header *headers, const char *body,
    const char *reason)
{
	if (req->done)
		return;
	gk_stage *st = req->st;
	send_cancel(req);
	gk_buf b = {0};
	gk_jw w;
	gk_jw_init(&w, &b);
	gk_jw_object(&w);
	gk_jw_key(&w, "id");
	gk_jw_cstr(&w, req->id);
	gk_jw_key(&w, "status");
	gk_jw_int(&w, status);
	gk_jw_key(&w, "headers");
	gk_jw_object(&w);
	bool have_type = false;
	for (const gk_header *h = headers; h && h->name; h++) {
		gk_jw_key(&w, h->name);
		gk_jw_cstr(&w, h->value);
		if (!strcmp(h->name, "content-type"))
			have_type = true;
	}
	if (body && !have_type) {
		gk_jw_key(&w, "content-type");
		gk_jw_cstr(&w, "text/plain; charset=utf-8");
	}
	gk_jw_object_end(&w);
	if (body) {
		gk_jw_key(&w, "body");
		gk_jw_cstr(&w, body);
	}
	if (reason) {
		gk_jw_key(&w, "error");
		gk_jw_object(&w);
		gk_jw_key(&w, "stage");
		gk_jw_cstr(&w, st->def.ops.name);
		gk_jw_key(&w, "reason");
		gk_jw_cstr(&w, reason);
		gk_jw_object_end(&w);
	}
	gk_jw_object_end(&w);
	gk_wire_error err;
	gk_msg *m = gk_msg_adopt(&b, &err);
	if (!m)
		gk_fatal(GK_EXIT_SOFTWARE, "built an invalid response: %s",
		    err.reason);
	if (st->def.ops.on_answer && req->seen)
		st->def.ops.on_answer(st, req, m, st->def.arg);
	deliver(req, m);
}

static void
answer_503(gk_req *req, const char *reason)
{
	static const gk_header retry[] = {{"retry-after", "1"}, {0}};
	gk_answer(req, 503, retry, "service unavailable\n", reason);
}

static void
on_deadline(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_req *req = arg;
	gk_counter_add(req->st->m.timeouts, 1);
	gk_answer(req, 504, NULL, "gateway timeout\n", "timeout");
}

void
gk__req_abandon(gk_req *req)
{
	if (req->done)
		return;
	send_cancel(req);
	if (req->north && req->hashed && req->north->inflight)
		req->north->inflight--;
	req->north = NULL;
	finish(req, 0);
}

void
gk__cancel(gk_stage *st, gk_north *n, const char *id)
{
	gk_req *req;
	if (n->unique_ids)
		req = table_find(st, id, strlen(id));
	else { /* as gk__request_with names it, whatever the id's length */
		gk_buf sid = {0};
		gk_buf_addf(&sid, "%u.%s", n->serial, id);
		req = table_find(st, sid.data, sid.len);
		gk_buf_free(&sid);
	}
	if (req && req->north == n)
		gk__req_abandon(req);
}

/* ---- requests arriving ---- */

void
gk__request(gk_stage *st, gk_north *n, void *cookie, gk_msg *msg)
{
	gk__request_with(st, n, cookie, msg, NULL);
}

static void request_in(gk_stage *st, gk_north *n, void *cookie,
    gk_msg *msg, gk_req **slot, const char *idp, size_t idlen, int64_t dl);

void
gk__request_with(gk_stage *st, gk_north *n, void *cookie, gk_msg *msg,
    gk_req **slot)
{
	gk_buf tmp = {0};
	const char *idp = "";
	size_t idlen = 0;
	gk__json_text(gk_msg_get(msg, "id"), &tmp, &idp, &idlen);
	/* The id is kept as a C string: it ends at an escaped NUL. */
	idlen = strnlen(idp, idlen);
	int64_t dl = 0;
	gk_json_int(gk_msg_get(msg, "deadline"), &dl);
	request_in(st, n, cookie, msg, slot, idp, idlen, dl);
	gk_buf_free(&tmp);
}

/*
 * A request in, its id (idp, idlen) and deadline member (dl, 0 for none)
 * read from msg: by gk__request_with, or known from the stage above a
 * fused one, which made them.
 */
static void
request_in(gk_stage *st, gk_north *n, void *cookie, gk_msg *msg,
    gk_req **slot, const char *idp, size_t idlen, int64_t dl)
{
	size_t state = st->def.ops.req_state_size;
	gk_req *req = req_alloc(st, state, idlen);
	if (slot)
		*slot = req;
	req->st = st;
	req->north = n;
	req->cookie = cookie;
	req->msg = msg;
	req->arrival = gk_loop_now(st->loop);
	req->id = (char *)req->state + state;
	memcpy(req->id, idp, idlen);
	req->id[idlen] = 0;
	if (n->unique_ids) {
		req->sid = req->id;
		req->sidlen = idlen;
	} else {
		size_t len = idlen + 16;
		req->sid = gk_xmalloc(len);
		req->sidlen = (size_t)snprintf(req->sid, len, "%u.%s",
		    n->serial, req->id);
	}
	if (table_find(st, req->sid, req->sidlen)) {
		gk_counter_add(st->m.duplicate, 1);
		gk_answer(req, 400, NULL, "duplicate request id\n",
		    "duplicate id");
		return;
	}
	/* While draining, requests already on open connections are still
	 * served (each HTTP answer then closes its connection); only once the
	 * south side is being shut down is it too late. */
	if (st->stopping) {
		gk_counter_add(st->m.drain_rejects, 1);
		answer_503(req, "draining");
		return;
	}
	if (st->ninflight >= st->cfg.max_inflight) {
		gk_counter_add(st->m.overload, 1);
		answer_503(req, "overloaded");
		return;
	}
	table_insert(st, req);

	uint64_t now = gk_loop_realtime_ms(st->loop);
	if (st->cfg.timeout_ms &&
	    (dl <= 0 || (uint64_t)dl > now + st->cfg.timeout_ms)) {
		dl = (int64_t)(now + st->cfg.timeout_ms);
		char num[24];
		int k = snprintf(num, sizeof num, "%lld", (long long)dl);
		gk_msg_set(msg, "deadline", num, (size_t)k);
	}
	if (dl > 0) {
		req->deadline = (uint64_t)dl;
		if ((uint64_t)dl <= now) {
			on_deadline(st->loop, req);
			return;
		}
		/* Fused, at the deadline of the request above it: that one's
		 * timer answers 504 then and cancels this one, as this one's
		 * would have; a timer of its own is for a shorter --timeout. */
		const gk_req *above = st->up ? cookie : NULL;
		if (!above || !above->deadline ||
		    (uint64_t)dl < above->deadline)
			gk_timer_start(st->loop, &req->timer,
			    (uint64_t)dl - now, on_deadline, req);
	}
	req->seen = true;
	if (st->def.ops.on_request)
		st->def.ops.on_request(st, req, st->def.arg);
	else
		gk_forward(req);
}

static void south_answered(gk_stage *st, gk_req *req, gk_msg *m);
static void bad_request_line(gk_buf *b, gk_stage *st, const char *id,
    size_t n, int status, const char *body, const char *reason);

/*
 * To the stage below in this process (gk_forward has named it by its id
 * south): a copy of the message (the index kept, no parse) as a request
 * on its link.  It may be answered before
 * this returns (the stage below answers it at once: a 429, an open
 * circuit), as gk_forward's callers allow.
 */
static void
forward_fused(gk_req *req)
{
	gk_stage *next = req->st->next;
	if (req->msg->line.len > GK_WIRE_MAX_LINE) {
		/* Past the wire's bound, which holds between fused stages as
		 * between processes: the stage below answers 413 as it
		 * answers a line too long from its north. */
		char f[300];
		snprintf(f, sizeof f, "id=%.*s", (int)(req->sidlen < 256 ?
		    req->sidlen : 256), req->sid);
		gk_log(GK_ERROR, "request too long from north: answered 413", f);
		gk_counter_add(next->m.badline, 1);
		gk_buf b = {0};
		bad_request_line(&b, next, req->sid, req->sidlen, 413,
		    "request too large\n", "request too long");
		gk_wire_error err;
		gk_msg *m = gk_msg_adopt(&b, &err);
		if (m)
			south_answered(req->st, req, m);
		gk_buf_free(&b);
		return;
	}
	request_in(next, &next->link, req, gk__msg_copy(req->msg), NULL,
	    req->sid, req->sidlen, (int64_t)req->deadline);
}

void
gk_forward(gk_req *req)
{
	gk_stage *st = req->st;
	if (req->done || req->forwarded)
		return;
	if (!st->next && (!st->south_up || !st->south)) {
		gk_counter_add(st->m.south_down, 1);
		answer_503(req, "south unavailable");
		return;
	}
	if (req->sid != req->id) {
		gk_buf q = {0};
		gk_json_quote(&q, req->sid, strlen(req->sid));
		gk_msg_set(req->msg, "id", q.data, q.len);
		gk_buf_free(&q);
	}
	req->forwarded = true;
	if (st->next)
		forward_fused(req);
	else
		gk_stream_write_line(st->south, req->msg->line.data,
		    req->msg->line.len);
}

/* ---- the south side ---- */

static void
fail_forwarded(gk_stage *st, const char *reason)
{
	gk_req **v;
	size_t n = table_all(st, &v);
	for (size_t i = 0; i < n; i++)
		if (v[i]->forwarded && !v[i]->done) {
			v[i]->forwarded = false;
			gk_answer(v[i], 502, NULL, "bad gateway\n", reason);
		}
	free(v);
}

static void
log_bad_line(const char *side, const char *line, size_t len,
    const gk_wire_error *err)
{
	char first[65];
	size_t k = len < 64 ? len : 64;
	memcpy(first, line, k);
	first[k] = 0;
	char off[32];
	snprintf(off, sizeof off, "offset=%zu", err->offset);
	gk_buf reason = {0};
	gk_buf_addf(&reason, "reason=%s", err->reason);
	gk_buf f = {0};
	gk_buf_adds(&f, "line=");
	gk_buf_add(&f, first, k);
	gk_log(GK_ERROR, side, gk_buf_cstr(&reason), off, gk_buf_cstr(&f));
	gk_buf_free(&reason);
	gk_buf_free(&f);
}

static const char *leading_id(const char *p, size_t n, size_t *idlen);

/*
 * The request an invalid line from south answers, when the line's first
 * member is the id of a request in flight (a handler's bad JSON: an
 * unescaped quote or control character in its body, a line cut short):
 * that request is answered 502 at once, and its client need not wait for
 * its deadline.  NULL when there is no such id.
 */
static gk_req *
invalid_line_req(gk_stage *st, const char *line, size_t len)
{
	size_t n;
	const char *id = leading_id(line, len, &n);
	gk_req *req = id ? table_find(st, id, n) : NULL;
	return req && req->forwarded ? req : NULL;
}

static void
south_line(gk_stream *s, char *line, size_t len, void *arg)
{
	(void)s;
	gk_stage *st = arg;
	/* An empty line, LF or CRLF, is ignored (gk-wire(5)). */
	if (len <= 1 && (!len || *line == '\r'))
		return;
	gk_wire_error err;
	gk_msg *m = gk_msg_new(line, len, &err);
	if (!m) {
		gk_counter_add(st->m.badline, 1);
		gk_req *req = invalid_line_req(st, line, len);
		log_bad_line(req ? "invalid line from south: answered 502" :
		    "invalid line from south", line, len, &err);
		if (req) {
			req->forwarded = false;
			gk_answer(req, 502, NULL, "bad gateway\n",
			    "invalid response");
		}
		return;
	}
	gk_buf tmp = {0};
	gk_req *req = NULL;
	const char *idp = "";
	size_t idlen = 0;
	if (gk__json_text(gk_msg_get(m, "id"), &tmp, &idp, &idlen) >= 0)
		req = table_find(st, idp, strnlen(idp, idlen));
	if (!req || !req->forwarded) {
		gk_buf f = {0};
		gk_buf_add(&f, idp, idlen);
		if (!idlen || !recently_cancelled(st, gk_buf_cstr(&f))) {
			gk_counter_add(st->m.unknown, 1);
			gk_buf_reset(&f);
			gk_buf_adds(&f, "id=");
			gk_buf_add(&f, idp, idlen);
			gk_log(GK_WARN, "response for unknown id: dropped",
			    gk_buf_cstr(&f));
		}
		gk_buf_free(&f);
		gk_buf_free(&tmp);
		gk_msg_free(m);
		return;
	}
	gk_buf_free(&tmp);
	south_answered(st, req, m);
}

/* The response m to req, which was forwarded (from the south side's line,
 * or from the stage fused below). */
static void
south_answered(gk_stage *st, gk_req *req, gk_msg *m)
{
	req->forwarded = false;
	if (st->def.ops.on_response)
		st->def.ops.on_response(st, req, m, st->def.arg);
	else
		gk_pass(req, m);
}

static void
south_lost(gk_stage *st, const char *reason)
{
	if (st->south) {
		gk_stream_close(st->south);
		st->south = NULL;
	}
	st->south_up = false;
	fail_forwarded(st, reason);
}

static void on_restart_timer(gk_loop *loop, void *arg);

static void
schedule_restart(gk_stage *st)
{
	uint64_t up = gk_loop_now(st->loop) - st->south_started;
	if (up >= 10000)
		st->backoff_ms = 100;
	gk_timer_start(st->loop, &st->restart_timer, st->backoff_ms,
	    on_restart_timer, st);
	st->backoff_ms = st->backoff_ms * 2 > 5000 ? 5000 : st->backoff_ms * 2;
}

static void on_kill_timer(gk_loop *loop, void *arg);

/* How long a child that closed its pipes has to exit by itself. */
#define SOUTH_CLOSED_GRACE_MS 1000

static void
south_close(gk_stream *s, int err, void *arg)
{
	(void)s;
	gk_stage *st = arg;
	if (st->south_kind == SOUTH_CHILD) {
		/* The child closed its stdout (or its stdin: a write failed);
		 * its exit status usually follows at once.  A child that
		 * lives on without its pipes can answer nothing, and the
		 * restart waits for its exit: it is ended, TERM then KILL,
		 * if it has not exited within SOUTH_CLOSED_GRACE_MS. */
		south_lost(st, "south closed");
		if (st->child && !st->stopping) {
			st->kill_stage = 0;
			gk_timer_start(st->loop, &st->kill_timer,
			    SOUTH_CLOSED_GRACE_MS, on_kill_timer, st);
		}
		return;
	}
	if (st->south_up)
		log_kv(GK_WARN, "south connection lost", "addr",
		    st->cfg.to.text, "error", err ? strerror(err) : "eof");
	south_lost(st, "south connection lost");
	if (!st->stopping)
		schedule_restart(st);
}

static const gk_stream_ops south_ops = {south_line, south_close};

/* The id of a line that cannot be read as a message (dropped for its
 * length, or invalid), when it is the line's first member as handlers
 * write it ({"id":"7",...), unescaped and printable ASCII (it is copied
 * into JSON as it is): its start, and its length in *idlen; else NULL.
 * An id later in the line is not guessed at (a nested "id" could come
 * first). */
static const char *
leading_id(const char *p, size_t n, size_t *idlen)
{
	const char *end = p + (n < 4096 ? n : 4096);
#define SKIP_WS() \
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) \
		p++
	SKIP_WS();
	if (p == end || *p++ != '{')
		return NULL;
	SKIP_WS();
	if (end - p < 4 || memcmp(p, "\"id\"", 4))
		return NULL;
	p += 4;
	SKIP_WS();
	if (p == end || *p++ != ':')
		return NULL;
	SKIP_WS();
#undef SKIP_WS
	if (p == end || *p++ != '"')
		return NULL;
	const char *id = p;
	while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x7f)
		p++;
	if (p == end || *p != '"') /* escaped ids are not worth guessing */
		return NULL;
	*idlen = (size_t)(p - id);
	return id;
}

/* leading_id() of the line a stream is dropping for its length. */
static const char *
dropped_line_id(gk_stream *s, size_t *idlen)
{
	size_t n;
	const char *p = gk_stream_line_head(s, &n);
	return leading_id(p, n, idlen);
}

/*
 * A response line past the wire's maximum is dropped (stream.c), and its
 * client would wait for its deadline.  When the line's first member is its
 * id, as handlers write it ({"id":"7",...), the request it answers is
 * known: it is answered 502 at once.  A line whose id comes later is not
 * guessed at (a nested "id" could come first).
 */
static void
south_too_long(gk_stream *s, void *arg)
{
	gk_stage *st = arg;
	size_t n;
	const char *id = dropped_line_id(s, &n);
	if (!id)
		return;
	const char *p = id + n;
	gk_req *req = table_find(st, id, (size_t)(p - id));
	if (!req || !req->forwarded)
		return;
	gk_counter_add(st->m.badline, 1);
	char f[300];
	snprintf(f, sizeof f, "id=%.*s", (int)(p - id < 256 ? p - id : 256),
	    id);
	gk_log(GK_ERROR, "response too long from south: answered 502", f);
	req->forwarded = false;
	gk_answer(req, 502, NULL, "bad gateway\n", "response too long");
}

static void on_kill_timer(gk_loop *loop, void *arg);

/* At exit, until what the reaped child left in its group is gone. */
static void
on_leftover_poll(gk_loop *loop, void *arg)
{
	gk_stage *st = arg;
	if (!gk__signal_group(st->leftover, 0)) {
		gk_timer_stop(loop, &st->kill_timer);
		gk_loop_stop(loop);
		return;
	}
	gk_timer_start(loop, &st->drain_poll, 20, on_leftover_poll, st);
}

static void
on_child_exit(gk_loop *loop, pid_t pid, int ws, void *arg)
{
	(void)loop;
	gk_stage *st = arg;
	if (pid != st->child)
		return;
	st->child = 0;
	st->kill_stage = 0;
	char what[64], who[300];
	if (WIFSIGNALED(ws))
		snprintf(what, sizeof what, "signal=%s",
		    sigabbrev_np(WTERMSIG(ws)) ? sigabbrev_np(WTERMSIG(ws))
					       : "?");
	else
		snprintf(what, sizeof what, "status=%d", WEXITSTATUS(ws));
	snprintf(who, sizeof who, "cmd=%s", st->cfg.south_argv[0]);
	gk_timer_stop(st->loop, &st->kill_timer);
	/* What it started in its group and left running (it is in no other
	 * process group that a signal to the stack reaches): TERM now, and at
	 * exit KILL after a grace, so that nothing of the stack lives on. */
	bool left = gk__signal_group(pid, SIGTERM);
	if (left)
		gk_log(GK_WARN, "south left processes behind: sending TERM",
		    who);
	if (st->stopping) {
		gk_log(GK_INFO, "south exited", who, what);
		if (left) {
			st->leftover = pid;
			gk_timer_start(st->loop, &st->kill_timer, 2000,
			    on_kill_timer, st);
			gk_timer_start(st->loop, &st->drain_poll, 20,
			    on_leftover_poll, st);
		} else
			gk_loop_stop(st->loop);
		return;
	}
	/* A south that ends cleanly while we drain did what was asked. */
	gk_log(st->draining && WIFEXITED(ws) && WEXITSTATUS(ws) == 0 ?
		GK_INFO : GK_ERROR, "south exited", who, what);
	south_lost(st, "south exited");
	if (st->cfg.restart && !st->draining) {
		gk_counter_add(st->m.restarts, 1);
		schedule_restart(st);
	} else {
		st->exit_status = st->draining ? st->exit_status
						: GK_EXIT_CHILD;
		begin_drain(st, "south exited");
	}
}

static gk_stage *fused_new(gk_stage *up);

static void
south_start(gk_stage *st)
{
	st->south_started = gk_loop_now(st->loop);
	if (st->south_kind == SOUTH_FUSED) {
		st->next = fused_new(st);
		st->south_up = true;
		return;
	}
	if (st->south_kind == SOUTH_CHILD) {
		int w, r;
		pid_t pid = gk_spawn(st->cfg.south_argv, &w, &r);
		if (pid < 0) {
			if (!st->south_started || st->backoff_ms == 0)
				gk_fatal(GK_EXIT_OSERR, "unable to spawn %s: %s",
				    st->cfg.south_argv[0], strerror(errno));
			log_kv(GK_ERROR, "unable to spawn south", "cmd",
			    st->cfg.south_argv[0], "error", strerror(errno));
			schedule_restart(st);
			return;
		}
		st->child = pid;
		st->south = gk_stream_new(st->loop, r, w, &south_ops, st);
		gk_stream_on_too_long(st->south, south_too_long);
		gk_loop_child(st->loop, pid, on_child_exit, st);
	} else {
		int fd = gk_addr_connect(&st->cfg.to);
		if (fd < 0) {
			log_kv(GK_WARN, "unable to connect south", "addr",
			    st->cfg.to.text, "error", strerror(errno));
			schedule_restart(st);
			return;
		}
		st->south = gk_stream_new(st->loop, fd, fd, &south_ops, st);
		gk_stream_on_too_long(st->south, south_too_long);
	}
	st->south_up = true;
}

static void
on_restart_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_stage *st = arg;
	if (!st->draining)
		south_start(st);
}

/* ---- wire north: stdio and wire sockets ---- */

static void
north_wire_respond(gk_north *n, gk_req *req, gk_msg *resp)
{
	(void)req;
	gk_stream *s = ((struct wire_conn *)n)->s;
	if (s)
		gk_stream_write_line(s, resp->line.data, resp->line.len);
	gk_msg_free(resp);
}

static const struct gk_north_ops wire_north_ops = {north_wire_respond};

/*
 * A fused stage's answer, to the stage above it, as from its south.  The
 * request it answers is the cookie: the stage above cancels it (and so it
 * is never answered) before it finishes the request it forwarded.
 */
static void
north_fused_respond(gk_north *n, gk_req *req, gk_msg *resp)
{
	gk_stage *st = (gk_stage *)((char *)n - offsetof(gk_stage, link));
	gk_req *above = gk__req_cookie(req);
	if (above->forwarded && !above->done)
		south_answered(st->up, above, resp);
	else
		gk_msg_free(resp);
}

static const struct gk_north_ops fused_north_ops = {north_fused_respond};

static void answer_bad_request(gk_stage *st, gk_stream *s, const char *id,
    size_t n, int status, const char *body, const char *reason,
    const char *msg);

static void
north_line(gk_stage *st, gk_north *n, char *line, size_t len)
{
	/* An empty line, LF or CRLF, is ignored (gk-wire(5)). */
	if (len <= 1 && (!len || *line == '\r'))
		return;
	gk_wire_error err;
	gk_msg *m = gk_msg_new(line, len, &err);
	if (!m) {
		/* Answered 400 when its id comes first (the stream is a wire
		 * connection's: north_line serves only those). */
		size_t idlen;
		const char *idp = leading_id(line, len, &idlen);
		log_bad_line(idp ? "invalid line from north: answered 400"
		    : "invalid line from north", line, len, &err);
		if (idp)
			answer_bad_request(st, ((struct wire_conn *)n)->s, idp,
			    idlen, 400, "bad request\n", "invalid request",
			    NULL);
		else
			gk_counter_add(st->m.badline, 1);
		return;
	}
	gk_json id = gk_msg_get(m, "id");
	if (id.type != GK_JSON_STRING) {
		gk_counter_add(st->m.badline, 1);
		gk_log(GK_ERROR, "request without a string id: dropped");
		gk_msg_free(m);
		return;
	}
	if (gk_msg_get(m, "cancel").type == GK_JSON_TRUE) {
		gk_buf b = {0};
		gk_json_string(id, &b);
		gk__cancel(st, n, gk_buf_cstr(&b));
		gk_buf_free(&b);
		gk_msg_free(m);
		return;
	}
	gk__request(st, n, NULL, m);
}

static void
abandon_from(gk_stage *st, gk_north *n)
{
	gk_req **v;
	size_t k = table_all(st, &v);
	for (size_t i = 0; i < k; i++)
		if (v[i]->north == n && !v[i]->done)
			gk__req_abandon(v[i]);
	free(v);
}

static void
wire_conn_free(gk_stage *st, struct wire_conn *c)
{
	gk_stream_close(c->s);
	c->s = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		st->wire_conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

/* stdio is the one wire connection that is not accepted. */
static struct wire_conn stdio_conn;

static void
wire_conn_line(gk_stream *s, char *line, size_t len, void *arg)
{
	(void)s;
	struct wire_conn *c = arg;
	north_line(c->st, &c->north, line, len);
}

static void
wire_conn_close(gk_stream *s, int err, void *arg)
{
	(void)s;
	(void)err;
	struct wire_conn *c = arg;
	gk_stage *st = c->st;
	if (c == &stdio_conn) {
		/* Our parent closed stdin, or went away (EPIPE on stdout):
		 * answer what is in flight, go.  Any other failure (stdout
		 * on a full disk, an I/O error) loses answers: said once, and
		 * the exit status says it too. */
		if (err && err != EPIPE && err != ECONNRESET && !st->stdio_failed) {
			st->stdio_failed = true;
			st->exit_status = GK_EXIT_IOERR;
			log_kv(GK_ERROR, "standard input or output failed", "error",
			    strerror(err), NULL, NULL);
		}
		begin_drain(st, !err ? "stdin closed"
		    : err == EPIPE || err == ECONNRESET ? "stdout closed"
		    : "standard input or output failed");
		return;
	}
	abandon_from(st, &c->north);
	wire_conn_free(st, c);
	gk__north_closed(st);
}

static const gk_stream_ops wire_conn_ops = {wire_conn_line, wire_conn_close};

/* The answer stage st makes to a request line it cannot take, into b. */
static void
bad_request_line(gk_buf *b, gk_stage *st, const char *id, size_t n,
    int status, const char *body, const char *reason)
{
	gk_buf_adds(b, "{\"id\":");
	gk_json_quote(b, id, n);
	gk_buf_adds(b, ",\"status\":");
	gk_buf_adduint(b, (uint64_t)status);
	gk_buf_adds(b, ",\"headers\":{\"content-type\":"
	    "\"text/plain; charset=utf-8\"},\"body\":");
	gk_json_quote(b, body, strlen(body));
	gk_buf_adds(b, ",\"error\":{\"stage\":");
	gk_json_quote(b, st->def.ops.name, strlen(st->def.ops.name));
	gk_buf_adds(b, ",\"reason\":");
	gk_json_quote(b, reason, strlen(reason));
	gk_buf_adds(b, "}}");
}

/*
 * Answer north at once, on its stream, a request line this stage cannot
 * take (past the wire's maximum, or invalid) whose id comes first: the
 * stage or program above would otherwise wait for its deadline, or for
 * ever.  msg, when not NULL, is the error event's.
 */
static void
answer_bad_request(gk_stage *st, gk_stream *s, const char *id, size_t n,
    int status, const char *body, const char *reason, const char *msg)
{
	gk_counter_add(st->m.badline, 1);
	gk_buf b = {0};
	bad_request_line(&b, st, id, n, status, body, reason);
	if (msg) { /* else the caller has said it */
		char f[300];
		snprintf(f, sizeof f, "id=%.*s", (int)(n < 256 ? n : 256), id);
		gk_log(GK_ERROR, msg, f);
	}
	gk_stream_write_line(s, b.data, b.len);
	gk_buf_free(&b);
}

/* A request line past the wire's maximum (gk-listener --max-body allows
 * more than fits once the body is escaped or in base64): 413. */
static void
wire_conn_too_long(gk_stream *s, void *arg)
{
	struct wire_conn *c = arg;
	size_t n;
	const char *id = dropped_line_id(s, &n);
	if (id)
		answer_bad_request(c->st, s, id, n, 413, "request too large\n",
		    "request too long",
		    "request too long from north: answered 413");
}

static void
on_wire_accept(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)ev;
	gk_stage *st = arg;
	for (int i = 0; i < 64; i++) {
		bool shed;
		int c = gk_accept(fd, NULL, NULL, &shed);
		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE)
				gk__accept_pause(&st->wire_pause, errno);
			return;
		}
		if (shed) { /* out of fds: closed, which a wire client sees */
			close(c);
			gk_accept_reserve();
			continue;
		}
		struct wire_conn *wc = gk_xcalloc(1, sizeof *wc);
		wc->north.ops = &wire_north_ops;
		wc->north.serial = ++st->next_serial;
		wc->st = st;
		wc->s = gk_stream_new(loop, c, c, &wire_conn_ops, wc);
		gk_stream_on_too_long(wc->s, wire_conn_too_long);
		wc->next = st->wire_conns;
		if (wc->next)
			wc->next->prev = wc;
		st->wire_conns = wc;
		gk__north_opened(st);
	}
}


static void
stdio_start(gk_stage *st)
{
	gk__fd_nonblock_inherited(0);
	gk__fd_nonblock_inherited(1);
	stdio_conn.north.ops = &wire_north_ops;
	stdio_conn.north.unique_ids = true;
	stdio_conn.st = st;
	st->stdio = gk_stream_new(st->loop, 0, 1, &wire_conn_ops, &stdio_conn);
	gk_stream_on_too_long(st->stdio, wire_conn_too_long);
	stdio_conn.s = st->stdio;
}

/* ---- drain and signals ---- */

static void
stop_listening(gk_stage *st)
{
	gk__accept_pause_stop(&st->wire_pause);
	for (int i = 0; i < st->nlisten_fd; i++) {
		gk_loop_unwatch(st->loop, st->listen_fd[i]);
		close(st->listen_fd[i]);
	}
	st->nlisten_fd = 0;
	st->nwire_fd = 0;
	if (st->http)
		gk_http_server_drain(st->http);
}

static void
on_kill_timer(gk_loop *loop, void *arg)
{
	gk_stage *st = arg;
	if (!st->child) {
		if (st->leftover && gk__signal_group(st->leftover, SIGKILL))
			gk_log(GK_WARN,
			    "south left processes behind: sending KILL");
		if (st->stopping)
			gk_loop_stop(loop);
		return;
	}
	/* To its process group: the child, and what it started there. */
	if (st->kill_stage++ == 0) {
		gk_log(GK_WARN, st->stopping ? "south did not exit: sending TERM"
		    : "south closed its pipes and did not exit: sending TERM");
		if (!gk__signal_group(st->child, SIGTERM))
			kill(st->child, SIGTERM);
		gk_timer_start(loop, &st->kill_timer, 2000, on_kill_timer, st);
	} else {
		gk_log(GK_WARN, "south did not exit: sending KILL");
		if (!gk__signal_group(st->child, SIGKILL))
			kill(st->child, SIGKILL);
	}
}

static void
finish_drain(gk_stage *st)
{
	if (st->stopping)
		return;
	st->stopping = true;
	gk_timer_stop(st->loop, &st->drain_timer);
	gk_timer_stop(st->loop, &st->drain_poll);
	gk_timer_stop(st->loop, &st->restart_timer);
	if (st->def.ops.on_drain)
		st->def.ops.on_drain(st, st->def.arg);
	if (st->next) {
		/* As EOF on a child's stdin: the stage below drains, and the
		 * last one ends the loop once its south is gone. */
		gk_stage *next = st->next;
		char why[64];
		snprintf(why, sizeof why, "%s drained", st->def.ops.name);
		begin_drain(next, why);
		gk__north_closed(next); /* the link: it may finish now */
		return;
	}
	if (st->south && st->south_kind == SOUTH_CHILD && st->child) {
		/* EOF on its stdin asks the child to finish. */
		gk_stream_shutdown_write(st->south);
		gk_timer_start(st->loop, &st->kill_timer, 5000, on_kill_timer,
		    st);
		return;
	}
	if (st->child) {
		gk_timer_start(st->loop, &st->kill_timer, 5000, on_kill_timer,
		    st);
		return;
	}
	gk_loop_stop(st->loop);
}

static void
check_drained(gk_stage *st)
{
	if (!st->draining || st->stopping)
		return;
	/* Wire connections end once nothing of theirs is in flight. */
	for (struct wire_conn *c = st->wire_conns, *next; c; c = next) {
		next = c->next;
		if (!c->north.inflight && !gk_stream_pending(c->s)) {
			wire_conn_free(st, c);
			if (st->nnorth)
				st->nnorth--;
		}
	}
	if (st->ninflight || st->nnorth)
		return;
	if (st->stdio && gk_stream_pending(st->stdio))
		return;
	finish_drain(st);
}

static void
on_drain_poll(gk_loop *loop, void *arg)
{
	gk_stage *st = arg;
	/* The parent stage died without a drain (SIGKILL, a crash; its
	 * death closed our stdin a moment before we were reparented): no
	 * answer can reach anyone, and what is below ends as after a drain,
	 * without waiting --drain-timeout for it. */
	if (st->stdio && !st->stopping && parent_stage > 1 &&
	    getppid() != parent_stage) {
		end_drain(st, "parent stage gone: ending the drain");
		return;
	}
	check_drained(st);
	if (!st->stopping)
		gk_timer_start(loop, &st->drain_poll, 20, on_drain_poll, st);
}

/* The drain ends now: what is left is answered 503 "drain timeout". */
static void
end_drain(gk_stage *st, const char *msg)
{
	char n[32];
	snprintf(n, sizeof n, "inflight=%zu", st->ninflight);
	gk_log(GK_WARN, msg, n);
	gk_req **v;
	size_t k = table_all(st, &v);
	for (size_t i = 0; i < k; i++)
		if (!v[i]->done) {
			gk_counter_add(st->m.drain_timeout, 1);
			answer_503(v[i], "drain timeout");
		}
	free(v);
	st->nnorth = 0;
	finish_drain(st);
}

static void
on_drain_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	end_drain(arg, "drain timeout: answering what is left");
}

static void
begin_drain(gk_stage *st, const char *why)
{
	if (st->draining)
		return;
	st->draining = true;
	gk_timer_stop(st->loop, &st->term_timer);
	/* systemd KILLs a stop longer than TimeoutStopSec, which may be
	 * shorter than the drain: EXTEND_TIMEOUT_USEC (sd_notify(3)) covers
	 * all of it, the drain, then 5 s for south to exit on its own and 2 s
	 * after TERM (finish_drain, on_kill_timer), and 1 s to spare. */
	char note[96];
	snprintf(note, sizeof note,
	    "STOPPING=1\nSTATUS=draining\nEXTEND_TIMEOUT_USEC=%llu",
	    (unsigned long long)(st->cfg.drain_timeout_ms + 8000) * 1000);
	gk_notify(note);
	char n[32];
	snprintf(n, sizeof n, "%zu", st->ninflight);
	log_kv(GK_INFO, "draining", "reason", why, "inflight", n);
	stop_listening(st);
	if (st->stdio)
		gk_stream_pause(st->stdio, true);
	gk_timer_start(st->loop, &st->drain_timer, st->cfg.drain_timeout_ms,
	    on_drain_timeout, st);
	gk_timer_start(st->loop, &st->drain_poll, 20, on_drain_poll, st);
	check_drained(st);
	/* A fused stage that drains on its own (its south exited for good)
	 * drains the stages above it too, as a process of its own would by
	 * exiting, and its exit status is the process's. */
	if (st->up && !st->up->draining) {
		if (!st->up->exit_status)
			st->up->exit_status = st->exit_status;
		begin_drain(st->up, why);
	}
}

/*
 * A stage spawned by a stage (its north its stdin, its parent the pid
 * GK_PARENT_PID named) leaves the drain to its parent.  systemd's
 * KillMode=control-group signals every process of a stack at once (Ctrl-C
 * and kill %1 no longer do: each child has a process group of its own,
 * spawn.c); a stage below that drained on its own stopped reading its
 * stdin and exited once what it held was answered, and what the listener
 * still took on (a request on an open connection, a body still arriving)
 * met a closed stack.  The parent drains from the top and closes this
 * stage's stdin, which drains it.  In case it does not, the signal takes
 * effect after --drain-timeout, or at once when it comes a second time
 * or the parent is gone.
 */
static void
on_deferred_term(gk_loop *loop, void *arg)
{
	(void)loop;
	begin_drain(arg, "signal: parent stage did not drain us");
}

static void
on_term(gk_loop *loop, int signo, void *arg)
{
	gk_stage *st = arg;
	const char *why = signo == SIGINT ? "SIGINT" : "SIGTERM";
	/* Fused: once a stage has stopped, hurrying is the next one's. */
	while (st->stopping && st->next)
		st = st->next;
	if (st->stdio && !st->draining && !st->term_deferred &&
	    parent_stage > 1 && getppid() == parent_stage) {
		st->term_deferred = true;
		char p[32];
		snprintf(p, sizeof p, "parent=%ld", (long)parent_stage);
		gk_log(GK_INFO, signo == SIGINT
		    ? "SIGINT: left to the parent stage, which drains the stack"
		    : "SIGTERM: left to the parent stage, which drains the stack",
		    p);
		gk_timer_start(loop, &st->term_timer, st->cfg.drain_timeout_ms,
		    on_deferred_term, st);
		return;
	}
	/* The signal again (a second Ctrl-C, which no longer reaches the
	 * processes below): hurry.  While draining, the drain ends now, as
	 * at --drain-timeout; once it has ended, the wait for the child
	 * does, a step of TERM and KILL to its group each time. */
	if (st->stopping) {
		if (st->child || st->leftover) {
			gk_timer_stop(loop, &st->kill_timer);
			on_kill_timer(loop, st);
		}
		return;
	}
	if (st->draining) {
		char msg[80];
		snprintf(msg, sizeof msg,
		    "%s again: ending the drain, answering what is left", why);
		end_drain(st, msg);
		return;
	}
	begin_drain(st, why);
}

static void
on_hup(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)signo;
	(void)arg;
	gk_log(GK_INFO, "SIGHUP: nothing to reload");
}

static void
on_watchdog(gk_loop *loop, void *arg)
{
	gk_stage *st = arg;
	gk_notify("WATCHDOG=1");
	gk_timer_start(loop, &st->watchdog_timer, st->watchdog_ms, on_watchdog,
	    st);
}

/* ---- setup and run ---- */

/* The HTTP side, made for the first socket that speaks HTTP (an option, an
 * http: address or a socket named http), or at once for gk-listener. */
static gk_http_server *
http_side(gk_stage *st)
{
	if (!st->http)
		st->http = gk_http_server_new(st, st->loop);
	return st->http;
}

/* N sockets from systemd (gk_listen_fds(), taken before the south child
 * was spawned), then those of -l. */
static void watch_wire(gk_stage *st, int fd);

static void
listen_all(gk_stage *st, int n, char **names)
{
	for (int i = 0; i < n; i++) {
		int fd = 3 + i;
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		bool http = st->cfg.http;
		if (names && names[i] && !strcmp(names[i], "json"))
			http = false;
		if (names && names[i] && !strcmp(names[i], "http") &&
		    (st->def.north_http || st->def.http_option))
			http = true;
		st->listen_fd[st->nlisten_fd++] = fd;
		if (http)
			gk_http_server_add(http_side(st), fd);
		else
			watch_wire(st, fd);
		free(names ? names[i] : NULL);
	}
	free(names);
	for (int i = 0; i < st->cfg.nlisten; i++) {
		const gk_addr *a = &st->cfg.listen[i];
		int fd = gk_addr_listen(a, 4096, st->cfg.mode, true);
		if (fd < 0)
			gk_fatal(GK_EXIT_OSERR, "unable to bind %s: %s",
			    a->text, strerror(errno));
		bool http = a->proto == GK_PROTO_HTTP ||
		    (a->proto == GK_PROTO_DEFAULT && st->cfg.http);
		st->listen_fd[st->nlisten_fd++] = fd;
		if (http)
			gk_http_server_add(http_side(st), fd);
		else
			watch_wire(st, fd);
	}
	if (st->nlisten_fd)
		gk_accept_reserve();
	/* A stage fronting the stack over HTTP bounds every request as
	 * gk-listener does, however its HTTP socket came (--http, an http:
	 * address, a socket named http). */
	if (st->http && !st->def.north_http && !st->def.no_south &&
	    !st->cfg.timeout_given)
		st->cfg.timeout_ms = GK_HTTP_TIMEOUT_MS;
	if (!st->nlisten_fd)
		stdio_start(st);
}

/* A listening socket of the wire protocol, watched for connections. */
static void
watch_wire(gk_stage *st, int fd)
{
	if (!st->wire_pause.loop)
		gk__accept_pause_init(&st->wire_pause, st->loop, st->wire_fd,
		    &st->nwire_fd,
		    gk_metric_series(gk_counter_new(
		        "gk_wire_accept_pauses_total",
		        "Times accepting wire connections stopped for 100 ms: "
		        "out of file descriptors even with the one kept in "
		        "reserve",
		        NULL)));
	st->wire_fd[st->nwire_fd++] = fd;
	gk_loop_watch(st->loop, fd, GK_READ, on_wire_accept, st);
}

static void
register_metrics(gk_stage *st)
{
	gk_metric *m = gk_gauge_new("gk_stage_inflight",
	    "Requests in flight in the stage", NULL);
	st->m.inflight = gk_metric_series(m);
	gk_metric *rej = gk_counter_new("gk_stage_rejected_total",
	    "Requests the runtime answered itself, by reason", "reason");
	st->m.overload = gk_series_get(rej, "overloaded", (char *)0);
	st->m.drain_rejects = gk_series_get(rej, "draining", (char *)0);
	st->m.south_down = gk_series_get(rej, "south_unavailable", (char *)0);
	st->m.timeouts = gk_series_get(rej, "timeout", (char *)0);
	st->m.duplicate = gk_series_get(rej, "duplicate_id", (char *)0);
	st->m.drain_timeout = gk_series_get(rej, "drain_timeout", (char *)0);
	st->m.restarts = gk_metric_series(gk_counter_new(
	    "gk_stage_south_restarts_total", "Restarts of the south child",
	    NULL));
	gk_metric *bad = gk_counter_new("gk_stage_dropped_lines_total",
	    "Wire lines dropped, by reason", "reason");
	st->m.badline = gk_series_get(bad, "invalid", (char *)0);
	st->m.unknown = gk_series_get(bad, "unknown_id", (char *)0);
	gk_gauge_set(gk_metric_series(gk_gauge_new("gk_stage_max_inflight",
	    "The bound on requests in flight (--max-inflight)", NULL)),
	    (double)st->cfg.max_inflight);
}

static enum south_kind
south_kind_of(const gk_stage_def *def, const gk_stage_config *cfg)
{
	if (def->no_south)
		return SOUTH_NONE;
	if (cfg->fused_def)
		return SOUTH_FUSED;
	if (cfg->south_argv && cfg->south_argv[0])
		return SOUTH_CHILD;
	return cfg->have_to ? SOUTH_CONN : SOUTH_NONE;
}

/*
 * The stage below up, run in this process (--fuse): its options were read
 * (stage_main.c); it starts here, and starts its own south in turn.  It
 * listens nowhere and takes no signal: the first stage of the chain does
 * that for all.  The runtime's metrics are the process's, one set: each
 * stage counts into the first one's, whose in-flight gauge is its own.
 */
static gk_stage *
fused_new(gk_stage *up)
{
	gk_stage *st = gk_xcalloc(1, sizeof *st);
	st->def = *up->cfg.fused_def;
	st->cfg = *up->cfg.fused;
	st->loop = up->loop;
	st->up = up;
	st->link = (gk_north){.ops = &fused_north_ops, .unique_ids = true};
	st->nnorth = 1; /* the link, until the stage above has drained */
	st->m = up->m;
	st->m.inflight = NULL;
	gk__usage_name = st->def.ops.name;
	if (st->def.ops.start && st->def.ops.start(st, st->def.arg) != 0)
		gk_fatal(GK_EXIT_SOFTWARE, "unable to start %s",
		    st->def.ops.name);
	gk__usage_name = NULL;
	st->south_kind = south_kind_of(&st->def, &st->cfg);
	st->backoff_ms = 0; /* a failure to spawn now is fatal */
	south_start(st);
	st->backoff_ms = 100;
	return st;
}

int
gk__stage_run(const gk_stage_def *def, const gk_stage_config *cfg)
{
	gk_stage *st = gk_xcalloc(1, sizeof *st);
	st->def = *def;
	st->cfg = *cfg;
	st->backoff_ms = 100;
	/* Whose child this is, and the same for ours (on_term). */
	const char *pp = getenv("GK_PARENT_PID");
	uint64_t ppid;
	parent_stage = pp && gk_parse_uint(pp, 2, INT_MAX, &ppid) == 0
	    ? (pid_t)ppid : 0;
	/* Only the stage's own child (not one a shell handler started)
	 * leaves its drain to it, and takes its loss for the stack's end. */
	if (parent_stage != getppid())
		parent_stage = 0;
	char me[24];
	snprintf(me, sizeof me, "%ld", (long)getpid());
	setenv("GK_PARENT_PID", me, 1);
	/* The sockets systemd passed are taken (FD_CLOEXEC, LISTEN_*
	 * unset, as sd_listen_fds(3) does) before any child is spawned (the
	 * south child, gk-pool's copies in start): a child would otherwise
	 * hold the listening sockets open, and connections would queue on
	 * them after this process is gone.  And before the loop opens its
	 * epoll fd, which would otherwise sit where a socket systemd said it
	 * passed and did not should be, and be taken for it. */
	char **names = NULL, why[256];
	int nfds = gk_listen_fds(&names, why, sizeof why);
	if (nfds < 0)
		gk_fatal(GK_EXIT_USAGE, "%s", why);
	st->loop = gk_loop_new();
	signal(SIGPIPE, SIG_IGN);
	/* Only this process talks to systemd; its children are ours. */
	st->watchdog_ms = gk_watchdog_interval_ms();
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	gk_notify_take();
	/* listen_fd (and the HTTP server's) has room for 64 besides -l's. */
	if (nfds > 64)
		gk_fatal(GK_EXIT_USAGE, "too many sockets from systemd: %d "
		    "(LISTEN_FDS; at most 64)", nfds);
	register_metrics(st);
	if (def->ops.start && def->ops.start(st, def->arg) != 0)
		return GK_EXIT_SOFTWARE;

	st->south_kind = south_kind_of(def, cfg);

	if (def->north_http)
		http_side(st);

	gk_loop_signal(st->loop, SIGTERM, on_term, st);
	gk_loop_signal(st->loop, SIGINT, on_term, st);
	gk_loop_signal(st->loop, SIGUSR1, gk_metrics_on_signal, NULL);
	gk_loop_signal(st->loop, SIGHUP, on_hup, st);

	if (st->south_kind != SOUTH_NONE) {
		st->backoff_ms = 0; /* a failure to spawn now is fatal */
		south_start(st);
		st->backoff_ms = 100;
	}
	listen_all(st, nfds, names);

	gk_metrics_every(st->loop, &st->metrics);
	gk_timer_start(st->loop, &st->trim_timer, TRIM_MS, on_trim, st);
	if (st->watchdog_ms)
		gk_timer_start(st->loop, &st->watchdog_timer, st->watchdog_ms,
		    on_watchdog, st);
	gk_notify("READY=1\nSTATUS=serving");

	gk_loop_run(st->loop);

	if (st->stdio) /* what the pipe did not take yet, written blocking */
		gk_stream_flush_blocking(st->stdio);
	for (gk_stage *s = st; s; s = s->next)
		if (s->def.ops.stop)
			s->def.ops.stop(s, s->def.arg);
	gk_metrics_snapshot();
	gk_events_flush();
	return st->exit_status;
}
