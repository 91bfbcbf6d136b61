/*
 * upstream_http.c: gk-client's native HTTP/1.1 engine.  No libcurl on the
 * hot path: a try is one write (the request, rendered by the caller) and
 * reads parsed by http_parser in HTTP_RESPONSE mode.
 *
 * Idle connections stay in the loop's epoll set, watched for reading: a
 * peer that closes one (or sends what nobody asked for) has it closed and
 * taken out of the pool, with no poll() before a reuse.  A reused
 * connection can still turn out closed after the request was written and
 * before a byte of the answer came back (the FIN was in flight): the
 * request is then written again on a new connection if it is idempotent
 * or nothing of it was written, and otherwise reported as
 * GK_UH_NOT_RESENT, as gk-client's libcurl path refuses libcurl's resend.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upstream_http.h"

struct gk_uh_conn {
	int fd;
	gk_uh *uh;
	struct gk_uh_pool *pool;
	gk_uh_xfer *x;                 /* the try using it; NULL when idle */
	struct gk_uh_conn *prev, *next; /* in the pool's idle list */
};

struct gk_uh_pool {
	char addr[262];
	struct sockaddr_storage sa;
	socklen_t salen;
	bool ok;
	/* The address left the set: the record goes with its last
	 * connection and try (a set that churns must not grow it). */
	bool left;
	struct gk_uh_conn *idle; /* most recently used first */
	unsigned nidle;
	unsigned nconns, ntries; /* open connections, tries running */
	struct gk_uh_pool *prev, *next;
};

struct gk_uh {
	gk_loop *loop;
	uint64_t connect_timeout_ms;
	struct gk_uh_pool *pools, *last;
	unsigned nidle;
	gk_series *m_pools; /* records held, or NULL */
	gk_uh_sock_fn *on_open, *on_close;
	void *hook_arg;
};

static http_parser_settings settings;

gk_uh *
gk_uh_new(gk_loop *loop, uint64_t connect_timeout_ms, gk_uh_sock_fn *on_open,
    gk_uh_sock_fn *on_close, void *hook_arg)
{
	gk_uh *uh = gk_xcalloc(1, sizeof *uh);
	uh->loop = loop;
	uh->connect_timeout_ms = connect_timeout_ms;
	uh->on_open = on_open;
	uh->on_close = on_close;
	uh->hook_arg = hook_arg;
	return uh;
}

static int
parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon, *h = addr;
	size_t hl;
	if (*addr == '[') {
		const char *rb = strchr(addr, ']');
		if (!rb || rb[1] != ':')
			return -1;
		h = addr + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -1;
		hl = (size_t)(colon - addr);
	}
	if (hl >= sizeof host)
		return -1;
	memcpy(host, h, hl);
	host[hl] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end || port < 1 || port > 65535)
		return -1;
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*len = sizeof *s4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*len = sizeof *s6;
		return 0;
	}
	return -1;
}

void
gk_uh_count_pools(gk_uh *uh, gk_series *gauge)
{
	uh->m_pools = gauge;
}

/* The pool of addr, made on first use, and in the set again if it had
 * left it.  Endpoints are few; the last one found is checked first. */
static struct gk_uh_pool *
pool_of(gk_uh *uh, const char *addr)
{
	struct gk_uh_pool *p = uh->last;
	if (!p || strcmp(p->addr, addr))
		for (p = uh->pools; p && strcmp(p->addr, addr); p = p->next)
			;
	if (!p) {
		p = gk_xcalloc(1, sizeof *p);
		snprintf(p->addr, sizeof p->addr, "%s", addr);
		p->ok = strlen(addr) < sizeof p->addr &&
		    parse_addr(addr, &p->sa, &p->salen) == 0;
		p->next = uh->pools;
		if (p->next)
			p->next->prev = p;
		uh->pools = p;
		if (uh->m_pools)
			gk_gauge_add(uh->m_pools, 1);
	}
	p->left = false;
	return uh->last = p;
}

/* Free the pool p once its address left the set and nothing uses it. */
static void
pool_release(gk_uh *uh, struct gk_uh_pool *p)
{
	if (!p || !p->left || p->nconns || p->ntries)
		return;
	if (p->prev)
		p->prev->next = p->next;
	else
		uh->pools = p->next;
	if (p->next)
		p->next->prev = p->prev;
	if (uh->last == p)
		uh->last = NULL;
	if (uh->m_pools)
		gk_gauge_add(uh->m_pools, -1);
	free(p);
}

bool
gk_uh_handles(gk_uh *uh, const char *addr)
{
	return pool_of(uh, addr)->ok;
}

/* ---- connections ---- */

static void
idle_unlink(gk_uh *uh, struct gk_uh_conn *k)
{
	struct gk_uh_pool *p = k->pool;
	if (k->prev)
		k->prev->next = k->next;
	else
		p->idle = k->next;
	if (k->next)
		k->next->prev = k->prev;
	k->prev = k->next = NULL;
	p->nidle--;
	uh->nidle--;
}

static void
conn_close(gk_uh *uh, struct gk_uh_conn *k)
{
	struct gk_uh_pool *p = k->pool;
	gk_loop_unwatch(uh->loop, k->fd);
	if (uh->on_close)
		uh->on_close(uh->hook_arg, k->fd);
	close(k->fd);
	free(k);
	p->nconns--;
	pool_release(uh, p);
}

void
gk_uh_drop_idle(gk_uh *uh, const char *addr)
{
	for (struct gk_uh_pool *p = uh->pools; p; p = p->next)
		if (!strcmp(p->addr, addr)) {
			p->left = true;
			/* held while its idle ones close (conn_close would
			 * free it under this loop) */
			p->ntries++;
			while (p->idle) {
				struct gk_uh_conn *k = p->idle;
				idle_unlink(uh, k);
				conn_close(uh, k);
			}
			p->ntries--;
			pool_release(uh, p);
			return;
		}
}

/* The try x no longer uses its pool. */
static void
try_release(gk_uh_xfer *x)
{
	struct gk_uh_pool *p = x->pool;
	x->pool = NULL;
	if (p) {
		p->ntries--;
		pool_release(x->uh, p);
	}
}

static void on_io(gk_loop *loop, int fd, unsigned ev, void *arg);
static void read_more(gk_uh_xfer *x);
static void fail_later(gk_uh_xfer *x, enum gk_uh_result r);

static void
finish(gk_uh_xfer *x, enum gk_uh_result r, bool keep)
{
	gk_uh *uh = x->uh;
	struct gk_uh_conn *k = x->conn;
	if (x->in_start) {
		/* never from inside gk_uh_start */
		fail_later(x, r);
		return;
	}
	gk_timer_stop(uh->loop, &x->timer);
	x->running = false;
	x->conn = NULL;
	if (k) {
		k->x = NULL;
		struct gk_uh_pool *p = k->pool;
		/* (none kept for an address that left the set) */
		if (keep && !p->left &&
		    p->nidle < GK_UH_MAX_IDLE_PER_ENDPOINT &&
		    uh->nidle < GK_UH_MAX_IDLE) {
			gk_loop_modify(uh->loop, k->fd, GK_READ);
			k->prev = NULL;
			k->next = p->idle;
			if (p->idle)
				p->idle->prev = k;
			p->idle = k;
			p->nidle++;
			uh->nidle++;
		} else
			conn_close(uh, k);
	}
	try_release(x);
	bool sent = !(r == GK_UH_REFUSED ||
	    (r == GK_UH_TIMEOUT && x->connecting));
	x->ops->done(x->arg, r, r == GK_UH_OK ? x->status : 0, sent);
}

static void
on_pending(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_uh_xfer *x = arg;
	x->has_pending = false;
	finish(x, x->pending, false);
}

/* Report r from the loop, not from the caller's stack. */
static void
fail_later(gk_uh_xfer *x, enum gk_uh_result r)
{
	x->pending = r;
	x->has_pending = true;
	x->in_start = false;
	gk_timer_start(x->uh->loop, &x->timer, 0, on_pending, x);
}

static void on_timeout(gk_loop *loop, void *arg);

static void
arm_timer(gk_uh_xfer *x)
{
	gk_uh *uh = x->uh;
	uint64_t now = gk_loop_now(uh->loop), when = x->deadline_ms;
	if (x->connecting && uh->connect_timeout_ms &&
	    (!when || now + uh->connect_timeout_ms < when))
		when = now + uh->connect_timeout_ms;
	if (when)
		gk_timer_start(uh->loop, &x->timer, when > now ? when - now : 0,
		    on_timeout, x);
	else
		gk_timer_stop(uh->loop, &x->timer);
}

static void
on_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	finish(arg, GK_UH_TIMEOUT, false);
}

static void
reset_response(gk_uh_xfer *x)
{
	http_parser_init(&x->hp, HTTP_RESPONSE);
	x->hp.data = x;
	x->field.len = x->value.len = 0;
	x->in_value = x->complete = x->got_byte = x->in_trailers = false;
	x->too_long = x->write_failed = x->refused = false;
	x->status = 0;
	x->off = 0;
}

/* Open a new connection for x. */
static void
connect_new(gk_uh_xfer *x)
{
	gk_uh *uh = x->uh;
	struct gk_uh_pool *p = x->pool;
	int fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fail_later(x, GK_UH_REFUSED);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct gk_uh_conn *k = gk_xcalloc(1, sizeof *k);
	k->fd = fd;
	k->uh = uh;
	k->pool = p;
	k->x = x;
	x->conn = k;
	x->reused = false;
	x->connects++;
	p->nconns++;
	if (uh->on_open)
		uh->on_open(x->owner, fd);
	if (gk_loop_watch(uh->loop, fd, GK_WRITE, on_io, k) < 0) {
		if (uh->on_close)
			uh->on_close(uh->hook_arg, fd);
		close(fd);
		free(k);
		p->nconns--; /* (the try holds p) */
		x->conn = NULL;
		fail_later(x, GK_UH_REFUSED);
		return;
	}
	x->connecting = true;
	if (connect(fd, (struct sockaddr *)&p->sa, p->salen) < 0 &&
	    errno != EINPROGRESS) {
		fail_later(x, GK_UH_REFUSED);
		return;
	}
	arm_timer(x);
}

/* The reused connection of x closed before any answer: again on a new
 * connection when that is safe, else GK_UH_NOT_RESENT. */
static void
reused_closed(gk_uh_xfer *x)
{
	gk_uh *uh = x->uh;
	if (x->off > 0 && !x->idempotent) {
		finish(x, GK_UH_NOT_RESENT, false);
		return;
	}
	conn_close(uh, x->conn);
	x->conn = NULL;
	x->resent = true;
	reset_response(x);
	connect_new(x);
}

static void
write_more(gk_uh_xfer *x)
{
	struct gk_uh_conn *k = x->conn;
	while (x->off < x->reqlen) {
		ssize_t n = send(k->fd, x->req + x->off, x->reqlen - x->off,
		    MSG_NOSIGNAL);
		if (n > 0) {
			x->off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			gk_loop_modify(x->uh->loop, k->fd, GK_READ | GK_WRITE);
			return;
		}
		if (x->off > 0 && !x->in_start) {
			/* The upstream stopped reading mid-request (an early
			 * 413, then a close that reset the rest): the answer
			 * it sent first is still in the socket, read it as
			 * nginx does.  Nothing more is written. */
			x->write_failed = true;
			gk_loop_modify(x->uh->loop, k->fd, GK_READ);
			read_more(x);
			return;
		}
		if (x->reused && !x->got_byte)
			reused_closed(x);
		else
			finish(x, x->off ? GK_UH_CLOSED : GK_UH_REFUSED, false);
		return;
	}
	gk_loop_modify(x->uh->loop, k->fd, GK_READ);
}

/*
 * What one read gave (n bytes; 0: EOF; <0: reset) goes to the parser.
 * False when the try ended.  Shared by read_more and gk__uh_feed, so that
 * the fuzz target runs the very code the sockets do; inlined here.
 */
static inline bool
take(gk_uh_xfer *x, const char *buf, ssize_t n)
{
	if (n <= 0) {
		/* EOF or reset */
		if (!x->got_byte) {
			if (x->reused && !x->resent)
				reused_closed(x);
			else
				finish(x, GK_UH_CLOSED, false);
			return false;
		}
		if (n == 0)
			http_parser_execute(&x->hp, &settings, NULL, 0);
		if (x->complete)
			finish(x, GK_UH_OK, false);
		else
			finish(x, HTTP_PARSER_ERRNO(&x->hp) == HPE_CB_body ?
			    GK_UH_ABORTED : GK_UH_CLOSED, false);
		return false;
	}
	x->got_byte = true;
	size_t used = http_parser_execute(&x->hp, &settings, buf, (size_t)n);
	if (x->complete) {
		bool keep = used == (size_t)n && !x->hp.upgrade &&
		    x->off == x->reqlen && http_should_keep_alive(&x->hp);
		finish(x, GK_UH_OK, keep);
		return false;
	}
	enum http_errno e = HTTP_PARSER_ERRNO(&x->hp);
	if (e != HPE_OK) {
		finish(x, e == HPE_CB_body || x->too_long ? GK_UH_ABORTED :
		    GK_UH_BAD, false);
		return false;
	}
	return true;
}

static void
read_more(gk_uh_xfer *x)
{
	char buf[16384];
	for (;;) {
		ssize_t n = read(x->conn->fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (!take(x, buf, n) || (size_t)n < sizeof buf)
			return;
	}
}

static void
on_io(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)fd;
	struct gk_uh_conn *k = arg;
	gk_uh_xfer *x = k->x;
	if (!x) {
		/* An idle connection became readable: the peer closed it
		 * (or sent what nobody asked for).  Out of the pool. */
		(void)loop;
		idle_unlink(k->uh, k);
		conn_close(k->uh, k);
		return;
	}
	if (x->connecting) {
		int err = 0;
		socklen_t el = sizeof err;
		if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (err) {
			finish(x, GK_UH_REFUSED, false);
			return;
		}
		x->connecting = false;
		arm_timer(x);
		write_more(x);
		return;
	}
	if ((ev & GK_WRITE) && x->off < x->reqlen && !x->write_failed) {
		write_more(x);
		if (!x->running || x->conn != k)
			return;
	}
	if (ev & GK_READ)
		read_more(x);
}

/* ---- parser callbacks ---- */

static void
emit_header(gk_uh_xfer *x)
{
	if (!x->in_value)
		return;
	if (x->ops->header(x->arg, x->field.data ? x->field.data : "",
	    x->field.len, x->value.data ? x->value.data : "", x->value.len) < 0)
		x->refused = true;
	x->field.len = x->value.len = 0;
	x->in_value = false;
}

static int
on_header_field(http_parser *hp, const char *at, size_t n)
{
	gk_uh_xfer *x = hp->data;
	if (x->in_trailers)
		return 0;
	emit_header(x);
	gk_buf_add(&x->field, at, n);
	return 0;
}

static int
on_header_value(http_parser *hp, const char *at, size_t n)
{
	gk_uh_xfer *x = hp->data;
	if (x->in_trailers)
		return 0;
	gk_buf_add(&x->value, at, n);
	x->in_value = true;
	return 0;
}

static int
on_headers_complete(http_parser *hp)
{
	gk_uh_xfer *x = hp->data;
	emit_header(x);
	/* The fields of a chunked body's trailer section come through the
	 * same callbacks: dropped, never merged into the header section
	 * (RFC 9110 6.5.1). */
	x->in_trailers = true;
	/* http_parser takes one to three digits; a status is three, from
	 * 100 to 599 (RFC 9112 4, RFC 9110 15).  Anything else is not an
	 * answer (an error, HPE_CB_headers_complete: GK_UH_BAD). */
	if (hp->status_code < 100 || hp->status_code > 599 || x->refused)
		return -1;
	x->status = hp->status_code;
	bool none = x->head || hp->status_code < 200 ||
	    hp->status_code == 204 || hp->status_code == 304;
	/* A body announced past the bound is refused now, not waited for
	 * (an upstream that sends less would hold the try to its deadline). */
	if (!none && x->max_body && hp->content_length != ULLONG_MAX &&
	    hp->content_length > x->max_body) {
		x->too_long = true;
		return -1;
	}
	/* No body for HEAD (http_parser cannot know), nor for a 1xx, a 204
	 * or a 304 whatever their Content-Length or Transfer-Encoding say
	 * (RFC 9112 6.3): a 304 may carry the length of the representation
	 * (RFC 9110 8.6), and http_parser would wait for that many bytes,
	 * taking the next answer's for them. */
	return none ? 1 : 0;
}

static int
on_body(http_parser *hp, const char *at, size_t n)
{
	gk_uh_xfer *x = hp->data;
	return x->ops->body(x->arg, at, n) < 0 ? -1 : 0;
}

static int
on_message_complete(http_parser *hp)
{
	gk_uh_xfer *x = hp->data;
	if (hp->status_code >= 100 && hp->status_code < 200 &&
	    hp->status_code != 101) {
		/* An interim answer: the real one follows. */
		x->ops->reset(x->arg);
		x->refused = false;
		x->field.len = x->value.len = 0;
		x->in_value = x->in_trailers = false;
		return 0;
	}
	x->complete = true;
	http_parser_pause(hp, 1);
	return 0;
}

static http_parser_settings settings = {
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* ---- tries ---- */

void
gk_uh_start(gk_uh *uh, gk_uh_xfer *x, const char *addr, const char *req,
    size_t len, bool idempotent, bool head, uint64_t timeout_ms,
    const gk_uh_ops *ops, void *arg, void *owner)
{
	x->uh = uh;
	x->pool = pool_of(uh, addr);
	x->conn = NULL;
	x->ops = ops;
	x->arg = arg;
	x->owner = owner;
	x->req = req;
	x->reqlen = len;
	x->idempotent = idempotent;
	x->head = head;
	x->deadline_ms = timeout_ms ? gk_loop_now(uh->loop) + timeout_ms : 0;
	x->connects = 0;
	x->running = true;
	x->resent = x->connecting = x->has_pending = false;
	reset_response(x);
	struct gk_uh_pool *p = x->pool;
	p->ntries++;
	if (p->idle) {
		struct gk_uh_conn *k = p->idle;
		idle_unlink(uh, k);
		k->x = x;
		x->conn = k;
		x->reused = true;
		arm_timer(x);
		x->in_start = true;
		write_more(x);
		x->in_start = false;
		return;
	}
	x->in_start = true;
	connect_new(x);
	x->in_start = false;
}

/* ---- without a socket (fuzz/fuzz_upstream.c) ---- */

void
gk__uh_begin(gk_uh *uh, gk_uh_xfer *x, bool head, const gk_uh_ops *ops,
    void *arg)
{
	memset(x, 0, sizeof *x);
	x->uh = uh;
	x->ops = ops;
	x->arg = arg;
	x->head = head;
	x->running = true;
	/* the request is all written: nothing to send, nothing to resend */
	x->req = "";
	reset_response(x);
}

bool
gk__uh_feed(gk_uh_xfer *x, const char *p, size_t n)
{
	if (!x->running)
		return false;
	return take(x, n ? p : NULL, (ssize_t)n);
}

void
gk_uh_cancel(gk_uh_xfer *x)
{
	if (!x->running)
		return;
	gk_timer_stop(x->uh->loop, &x->timer);
	x->running = false;
	if (x->conn) {
		conn_close(x->uh, x->conn);
		x->conn = NULL;
	}
	try_release(x);
}

void
gk_uh_xfer_free(gk_uh_xfer *x)
{
	gk_uh_cancel(x);
	gk_buf_free(&x->field);
	gk_buf_free(&x->value);
}
