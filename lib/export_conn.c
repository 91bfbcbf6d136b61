/*
 * export_conn.c: a connection from a plugin to its backend that reconnects
 * with backoff (see gk_econn in export.h).
 *
 * Records wait in a gk_equeue (drop oldest past its bound).  On a stream,
 * up to 64 KiB of records at a time move to the send buffer, where they
 * can no longer be dropped; when the connection fails, the records not
 * completely written stay there and are sent first, whole, on the next
 * connection, so no record is cut or reordered.  A record the kernel took
 * counts as sent: plaintext protocols (Graphite, syslog over TCP) have no
 * acknowledgement, so what sat in the kernel's buffers when the peer died
 * is lost, as with every client of those protocols.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "addr.h"
#include "export.h"

#define SEND_CHUNK 65536
#define MAX_ENDS 4096

struct gk_econn {
	gk_export *ex;
	gk_loop *loop;
	enum gk_econn_kind kind;
	gk_addr addr;
	char text[320];
	int fd;
	bool connecting, connected, ever_connected, failed_before;
	gk_equeue *q;
	gk_buf cur;     /* stream: records being written */
	size_t cur_off; /* bytes of cur written */
	size_t ends[MAX_ENDS];
	size_t nends;
	size_t qbytes_seen; /* for the plugin's queue gauge */
	gk_backoff backoff;
	gk_timer retry;
	bool want_write;
	void (*on_empty)(gk_econn *, void *);
	void *on_empty_arg;
	uint64_t last_error_log, last_refused_log;
};

static void try_connect(gk_econn *c);
static void pump(gk_econn *c);

static void
sync_gauge(gk_econn *c)
{
	size_t now = gk_equeue_bytes(c->q) + (c->cur.len - c->cur_off);
	gk_export_queue_change(c->ex, (int64_t)now - (int64_t)c->qbytes_seen);
	c->qbytes_seen = now;
}

static bool
is_stream(const gk_econn *c)
{
	return c->kind == GK_ECONN_TCP || c->kind == GK_ECONN_UNIX_STREAM;
}

static void
log_error(gk_econn *c, const char *what, int err)
{
	gk_export_error(c->ex, 1);
	/* At most one line a second for a backend that stays down. */
	uint64_t now = gk_monotonic_ms();
	if (now - c->last_error_log < 1000 && c->last_error_log)
		return;
	c->last_error_log = now;
	char a[360], e[160];
	snprintf(a, sizeof a, "addr=%s", c->text);
	snprintf(e, sizeof e, "error=%s", strerror(err));
	gk_log(GK_WARN, what, a, e);
}

static void
io_cb(gk_loop *loop, int fd, unsigned events, void *arg);

static void
close_fd(gk_econn *c)
{
	if (c->fd >= 0) {
		gk_loop_unwatch(c->loop, c->fd);
		close(c->fd);
	}
	c->fd = -1;
	c->connecting = c->connected = false;
	c->want_write = false;
}

static void
on_retry(gk_loop *loop, void *arg)
{
	(void)loop;
	try_connect(arg);
}

static void
schedule_retry(gk_econn *c)
{
	close_fd(c);
	c->failed_before = true;
	/* Records cut by the failure are sent again, whole. */
	if (c->cur_off) {
		size_t keep_from = 0, i = 0;
		while (i < c->nends && c->ends[i] <= c->cur_off)
			keep_from = c->ends[i++];
		/* Records before i were written completely. */
		gk_buf_consume(&c->cur, keep_from);
		for (size_t j = i; j < c->nends; j++)
			c->ends[j - i] = c->ends[j] - keep_from;
		c->nends -= i;
		c->cur_off = 0;
	}
	gk_timer_start(c->loop, &c->retry, gk_backoff_next(&c->backoff),
	    on_retry, c);
}

static void
connected(gk_econn *c)
{
	c->connecting = false;
	c->connected = true;
	if (c->failed_before) {
		gk_export_reconnected(c->ex);
		char a[360];
		snprintf(a, sizeof a, "addr=%s", c->text);
		gk_log(GK_INFO, "connected to the backend again", a);
	}
	c->ever_connected = true;
	gk_backoff_reset(&c->backoff);
	gk_loop_modify(c->loop, c->fd, is_stream(c) ? GK_READ : 0);
	pump(c);
}

static void
try_connect(gk_econn *c)
{
	if (c->fd >= 0)
		return;
	int type = is_stream(c) ? SOCK_STREAM : SOCK_DGRAM;
	int fd = socket(c->addr.sa.ss_family,
	    type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_error(c, "socket failed", errno);
		schedule_retry(c);
		return;
	}
	c->fd = fd;
	gk_loop_watch(c->loop, fd, 0, io_cb, c);
	if (connect(fd, (struct sockaddr *)&c->addr.sa, c->addr.salen) == 0) {
		connected(c);
		return;
	}
	if (errno == EINPROGRESS) {
		c->connecting = true;
		gk_loop_modify(c->loop, fd, GK_WRITE);
		return;
	}
	int err = errno;
	if (c->kind == GK_ECONN_UNIX_DGRAM && err == EPROTOTYPE) {
		/* A stream socket at that path: speak stream. */
		close_fd(c);
		c->kind = GK_ECONN_UNIX_STREAM;
		try_connect(c);
		return;
	}
	log_error(c, "cannot connect to the backend", err);
	schedule_retry(c);
}

static void
fill_cur(gk_econn *c)
{
	const char *p;
	size_t n;
	while (c->nends < MAX_ENDS && c->cur.len < SEND_CHUNK &&
	       gk_equeue_peek(c->q, &p, &n)) {
		gk_buf_add(&c->cur, p, n);
		c->ends[c->nends++] = c->cur.len;
		gk_equeue_pop(c->q);
	}
}

static void
set_want_write(gk_econn *c, bool want)
{
	if (want == c->want_write || c->fd < 0)
		return;
	c->want_write = want;
	unsigned ev = is_stream(c) ? GK_READ : 0;
	gk_loop_modify(c->loop, c->fd, ev | (want ? GK_WRITE : 0));
}

static void
pump_stream(gk_econn *c)
{
	for (;;) {
		if (c->cur_off == c->cur.len) {
			c->cur.len = c->cur_off = 0;
			c->nends = 0;
			fill_cur(c);
			if (!c->cur.len)
				break;
		}
		ssize_t w = send(c->fd, c->cur.data + c->cur_off,
		    c->cur.len - c->cur_off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				set_want_write(c, true);
				return;
			}
			log_error(c, "send to the backend failed", errno);
			schedule_retry(c);
			return;
		}
		size_t before = c->cur_off;
		c->cur_off += (size_t)w;
		/* Count the records that are now completely written. */
		size_t done = 0;
		for (size_t i = 0; i < c->nends; i++)
			if (c->ends[i] > before && c->ends[i] <= c->cur_off)
				done++;
		gk_export_sent(c->ex, done);
	}
	set_want_write(c, false);
}

/* Datagrams the backend's host refused (UDP), of every connection. */
static gk_series *
refused_series(void)
{
	static gk_series *m;
	if (!m)
		m = gk_metric_series(gk_counter_new(
		    "gk_export_udp_refused_total",
		    "UDP datagrams sent that the backend's host refused "
		    "(ICMP port unreachable): lost, though counted sent",
		    NULL));
	return m;
}

static void
udp_refused(gk_econn *c)
{
	gk_counter_add(refused_series(), 1);
	gk_export_error(c->ex, 1);
	uint64_t now = gk_monotonic_ms();
	if (now - c->last_refused_log < 1000 && c->last_refused_log)
		return;
	c->last_refused_log = now;
	char a[360];
	snprintf(a, sizeof a, "addr=%s", c->text);
	gk_log(GK_WARN,
	       "datagrams refused by the backend host (nobody "
	       "listening)",
	       a);
}

static void
pump_dgram(gk_econn *c)
{
	const char *p;
	size_t n;
	/* A refusal reported on this datagram's send is retried once. */
	bool refused_once = false;
	while (gk_equeue_peek(c->q, &p, &n)) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			int err = errno;
			if (err == EINTR)
				continue;
			if (err == EAGAIN || err == ENOBUFS) {
				set_want_write(c, true);
				return;
			}
			if (c->kind == GK_ECONN_UDP && err == ECONNREFUSED &&
			    !refused_once) {
				/* The kernel's report (ICMP port unreachable)
				 * of a datagram sent before, counted sent but
				 * lost: counted here.  This one was not sent:
				 * once more. */
				refused_once = true;
				udp_refused(c);
				continue;
			}
			if (c->kind == GK_ECONN_UDP) {
				/* Fire and forget: nobody listens (yet). */
				log_error(c, "send to the backend failed", err);
				gk_export_dropped(c->ex, 1);
				gk_equeue_pop(c->q);
				refused_once = false;
				continue;
			}
			log_error(c, "send to the backend failed", err);
			schedule_retry(c);
			return;
		}
		gk_export_sent(c->ex, 1);
		gk_equeue_pop(c->q);
		refused_once = false;
	}
	set_want_write(c, false);
}

static void
pump(gk_econn *c)
{
	if (c->connected) {
		if (is_stream(c))
			pump_stream(c);
		else
			pump_dgram(c);
	}
	sync_gauge(c);
	if (c->on_empty && !gk_econn_pending(c))
		c->on_empty(c, c->on_empty_arg);
}

static void
io_cb(gk_loop *loop, int fd, unsigned events, void *arg)
{
	(void)loop;
	(void)fd;
	gk_econn *c = arg;
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof err;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			log_error(c, "cannot connect to the backend", err);
			schedule_retry(c);
			return;
		}
		connected(c);
		return;
	}
	if (events & GK_READ) {
		char buf[4096];
		ssize_t n = recv(c->fd, buf, sizeof buf, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			log_error(c, "the backend closed the connection",
			    n == 0 ? ECONNRESET : errno);
			schedule_retry(c);
			return;
		}
	}
	if (events & GK_WRITE)
		pump(c);
}

/* The drain timeout: what is queued or not completely written is given
 * up (export.h, gk_export_hold). */
static size_t
abandon(void *arg)
{
	gk_econn *c = arg;
	size_t n = gk_equeue_count(c->q);
	for (size_t i = 0; i < c->nends; i++)
		if (c->ends[i] > c->cur_off)
			n++;
	while (gk_equeue_count(c->q))
		gk_equeue_pop(c->q);
	c->cur.len = c->cur_off = 0;
	c->nends = 0;
	c->on_empty = NULL;
	sync_gauge(c);
	return n;
}

gk_econn *
gk_econn_new(gk_export *ex, const char *addr, enum gk_econn_kind dflt,
    size_t max_bytes, const char **why)
{
	enum gk_econn_kind kind = dflt;
	const char *rest = addr;
	if (!strncmp(addr, "tcp:", 4)) {
		kind = GK_ECONN_TCP;
		rest = addr + 4;
	} else if (!strncmp(addr, "udp:", 4)) {
		kind = GK_ECONN_UDP;
		rest = addr + 4;
	} else if (!strncmp(addr, "unixstream:", 11)) {
		kind = GK_ECONN_UNIX_STREAM;
		rest = addr + 10; /* keep "unix:" below */
	} else if (!strncmp(addr, "unix:", 5)) {
		kind = GK_ECONN_UNIX_DGRAM;
	}
	gk_econn *c = gk_xcalloc(1, sizeof *c);
	char tmp[400];
	if (kind == GK_ECONN_UNIX_STREAM && rest != addr) {
		snprintf(tmp, sizeof tmp, "unix%s", rest);
		rest = tmp;
	}
	if (gk_addr_parse(rest, &c->addr, why) < 0) {
		free(c);
		return NULL;
	}
	bool unix_addr = c->addr.sa.ss_family == AF_UNIX;
	if (unix_addr && (kind == GK_ECONN_TCP || kind == GK_ECONN_UDP))
		kind = dflt == GK_ECONN_UNIX_STREAM ? dflt : GK_ECONN_UNIX_DGRAM;
	if (!unix_addr && (kind == GK_ECONN_UNIX_STREAM ||
	                   kind == GK_ECONN_UNIX_DGRAM)) {
		*why = "expected unix:PATH";
		free(c);
		return NULL;
	}
	c->kind = kind;
	if (kind == GK_ECONN_UDP)
		refused_series(); /* shown from the first snapshot on */
	snprintf(c->text, sizeof c->text, "%s", addr);
	c->ex = ex;
	c->loop = gk_export_loop(ex);
	c->fd = -1;
	c->q = gk_equeue_new(max_bytes, 0);
	gk_backoff_init(&c->backoff, 100, 30000);
	gk_export_hold(ex, abandon, c);
	try_connect(c);
	return c;
}

void
gk_econn_send(gk_econn *c, const void *p, size_t n)
{
	size_t d = gk_equeue_push(c->q, p, n);
	if (d)
		gk_export_dropped(c->ex, d);
	if (c->connected && !c->want_write)
		pump(c);
	else
		sync_gauge(c);
}

size_t
gk_econn_pending(const gk_econn *c)
{
	return gk_equeue_count(c->q) + (c->cur.len - c->cur_off ? 1 : 0);
}

bool
gk_econn_connected(const gk_econn *c)
{
	return c->connected;
}

enum gk_econn_kind
gk_econn_kind(const gk_econn *c)
{
	return c->kind;
}

void
gk_econn_on_empty(gk_econn *c, void (*fn)(gk_econn *, void *), void *arg)
{
	c->on_empty = fn;
	c->on_empty_arg = arg;
	if (fn && !gk_econn_pending(c))
		fn(c, arg);
}

static void
drained(gk_econn *c, void *arg)
{
	(void)arg;
	gk_export_done(c->ex);
}

void
gk_econn_drain(gk_econn *c)
{
	gk_econn_on_empty(c, drained, NULL);
}

void
gk_econn_set_backoff(gk_econn *c, uint64_t min_ms, uint64_t max_ms)
{
	gk_backoff_init(&c->backoff, min_ms, max_ms);
}

void
gk_econn_free(gk_econn *c)
{
	if (!c)
		return;
	gk_export_unhold(c->ex, c);
	close_fd(c);
	gk_timer_stop(c->loop, &c->retry);
	gk_export_queue_change(c->ex, -(int64_t)c->qbytes_seen);
	gk_equeue_free(c->q);
	gk_buf_free(&c->cur);
	free(c);
}
