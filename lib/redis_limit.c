/*
 * redis_limit.c: the global rate limit, GCRA in one Lua script in Redis.
 *
 * The script reads Redis's own clock (TIME), so instances on different
 * machines agree on "now"; it runs atomically, so two instances never
 * both take the last slot.  It is loaded once (SCRIPT LOAD) and called
 * with EVALSHA; EVAL stands in until the sha is known and after NOSCRIPT.
 *
 * Redis down (refused, no answer within the reply deadline, connection
 * lost): the waiting requests, and every request until it is back, get
 * the local limit; one event says so per outage, and the gauge
 * gk_limiter_redis_up shows it.  A new connection is up only once Redis
 * has answered on it (the SCRIPT LOAD): a Redis that accepts connections
 * and answers nothing (stopped, paused, swapping) is still down, and the
 * reconnects back off instead of coming back every 100ms.
 *
 * A host name is looked up with c-ares on the loop before each connect
 * (hiredis would call getaddrinfo(3), and every request of the process
 * would wait on the resolver); the addresses of one answer are tried in
 * turn, and when the resolver fails, the last answer stands.
 *
 * hiredis is loaded with dlopen(3) when the first --redis limit is made,
 * so that a limiter without --redis does not carry it in memory.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns_lookup.h"
#include "redis_limit.h"

/* The hiredis functions called here, found once by hiredis_load(). */
static struct {
	bool loaded;
	__typeof__(&redisAsyncConnect) connect;
	__typeof__(&redisAsyncFree) free;
	__typeof__(&redisAsyncHandleRead) handle_read;
	__typeof__(&redisAsyncHandleWrite) handle_write;
	__typeof__(&redisAsyncSetConnectCallback) set_connect_cb;
	__typeof__(&redisAsyncSetDisconnectCallback) set_disconnect_cb;
	__typeof__(&redisAsyncCommand) command;
	__typeof__(&redisAsyncCommandArgv) command_argv;
} H;

#define STR_(x) #x
#define STR(x) STR_(x)
#define GK_LIBHIREDIS "libhiredis.so." STR(HIREDIS_SONAME)

/* Exits 71 when the library that hiredis's headers name is missing. */
static void
hiredis_load(void)
{
	if (H.loaded)
		return;
	void *h = dlopen(GK_LIBHIREDIS, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		gk_fatal(GK_EXIT_OSERR, "unable to load %s: %s", GK_LIBHIREDIS,
		    dlerror());
#define SYM(field, name)                                                  \
	if (!(*(void **)&H.field = dlsym(h, #name)))                      \
		gk_fatal(GK_EXIT_OSERR, "unable to find %s in %s", #name, \
		    GK_LIBHIREDIS);
	SYM(connect, redisAsyncConnect)
	SYM(free, redisAsyncFree)
	SYM(handle_read, redisAsyncHandleRead)
	SYM(handle_write, redisAsyncHandleWrite)
	SYM(set_connect_cb, redisAsyncSetConnectCallback)
	SYM(set_disconnect_cb, redisAsyncSetDisconnectCallback)
	SYM(command, redisAsyncCommand)
	SYM(command_argv, redisAsyncCommandArgv)
#undef SYM
	H.loaded = true; /* h stays open for the life of the process */
}

/*
 * KEYS[1] the key; ARGV: T and tau in microseconds, the longest delay a
 * request may be held for (0: reject), the limit (burst + 1).  Returns
 * {allowed, delay_us (allowed: hold this long; rejected: until it would
 * be admitted), limit, remaining, reset_us}.  The TAT is stored with
 * three decimals (ns) so that fractional intervals do not round away.
 * ARGV[5], never sent by gk-limiter, stands in for TIME (in microseconds)
 * so that a test can run the script on a clock of its own.
 */
static const char script[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local T = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2])\n"
    "local maxwait = tonumber(ARGV[3])\n"
    "local limit = tonumber(ARGV[4])\n"
    "local now = tonumber(ARGV[5])\n"
    "if not now then\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "local wait = tat - tau - now\n"
    "if wait > 0 and wait > maxwait then\n"
    "  return {0, math.ceil(wait), limit, 0, math.ceil(tat - now)}\n"
    "end\n"
    "if wait < 0 then wait = 0 end\n"
    "local new = tat + T\n"
    "redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX',\n"
    "  math.ceil((new - now) / 1000) + 1000)\n"
    "local remaining = 0\n"
    "if now + tau >= new then\n"
    "  remaining = math.floor((now + tau - new) / T) + 1\n"
    "end\n"
    "return {1, math.ceil(wait), limit, remaining, math.ceil(new - now)}\n";

enum rstate { R_DOWN, R_RESOLVING, R_CONNECTING, R_UP };

struct gk_redis_op {
	gk_redis_limit *r;
	gk_redis_limit_fn *fn; /* NULL once cancelled or answered */
	void *arg;
	gk_timer timer;
	/* What a NOSCRIPT retry needs. */
	char *key;
	char maxwait[24];
	bool retried;
};

struct gk_redis_limit {
	gk_loop *loop;
	char *host;
	int port;
	char *prefix;
	uint64_t timeout_ms;
	char t_us[40], tau_us[40], limit[24];
	char sha[41];
	redisAsyncContext *ac;
	enum rstate state;
	bool outage_logged, ever_up, script_err_logged;
	uint64_t connected_us; /* 0 until the TCP connection is made */
	/* the adapter onto gk_loop */
	int fd;
	bool reading, writing, watched;
	gk_timer reconnect_timer, connect_timer;
	uint64_t backoff_ms;
	/* host a name: its resolver, its last answer, the next to try */
	gk_dns *dns;
	gk_dns_addrs addrs;
	size_t next_addr;
	bool stale_logged;
	gk_series *m_up;
};

static void start_connect(gk_redis_limit *r);

/* ---- the hiredis adapter: its event hooks onto gk_loop ---- */

static void
on_io(gk_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	(void)fd;
	gk_redis_limit *r = arg;
	/* A read may end the connection (and free the context). */
	if ((ev & GK_READ) && r->ac)
		H.handle_read(r->ac);
	if ((ev & GK_WRITE) && r->ac)
		H.handle_write(r->ac);
}

static void
update_watch(gk_redis_limit *r)
{
	unsigned ev = (r->reading ? GK_READ : 0) | (r->writing ? GK_WRITE : 0);
	if (!r->watched) {
		if (ev && gk_loop_watch(r->loop, r->fd, ev, on_io, r) == 0)
			r->watched = true;
		return;
	}
	gk_loop_modify(r->loop, r->fd, ev);
}

static void
ev_add_read(void *p)
{
	gk_redis_limit *r = p;
	r->reading = true;
	update_watch(r);
}

static void
ev_del_read(void *p)
{
	gk_redis_limit *r = p;
	r->reading = false;
	update_watch(r);
}

static void
ev_add_write(void *p)
{
	gk_redis_limit *r = p;
	r->writing = true;
	update_watch(r);
}

static void
ev_del_write(void *p)
{
	gk_redis_limit *r = p;
	r->writing = false;
	update_watch(r);
}

static void
ev_cleanup(void *p)
{
	gk_redis_limit *r = p;
	if (r->watched)
		gk_loop_unwatch(r->loop, r->fd);
	r->watched = r->reading = r->writing = false;
	r->fd = -1;
}

static void
attach(gk_redis_limit *r, redisAsyncContext *ac)
{
	r->fd = ac->c.fd;
	r->reading = r->writing = r->watched = false;
	ac->ev.data = r;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	ac->data = r;
}

/* ---- up and down ---- */

static void
on_reconnect(gk_loop *loop, void *arg)
{
	(void)loop;
	start_connect(arg);
}

/* The connection is gone (the caller frees the context, or hiredis does). */
static void
went_down(gk_redis_limit *r, const char *why)
{
	if (!r->ac && r->state == R_DOWN)
		return;
	r->ac = NULL;
	r->state = R_DOWN;
	r->sha[0] = 0;
	gk_gauge_set(r->m_up, 0);
	gk_timer_stop(r->loop, &r->connect_timer);
	if (!r->outage_logged) {
		char a[300], b[300];
		snprintf(a, sizeof a, "addr=%s:%d", r->host, r->port);
		snprintf(b, sizeof b, "error=%s", why);
		gk_log(GK_WARN, "redis unavailable: falling back to local limit",
		    a, b);
		r->outage_logged = true;
	}
	gk_timer_start(r->loop, &r->reconnect_timer, r->backoff_ms,
	    on_reconnect, r);
	r->backoff_ms = r->backoff_ms * 2 > 5000 ? 5000 : r->backoff_ms * 2;
}

/* Drop the connection ourselves: every pending op gets a NULL reply. */
static void
drop(gk_redis_limit *r, const char *why)
{
	redisAsyncContext *ac = r->ac;
	went_down(r, why);
	if (ac)
		H.free(ac);
}

/* The first answer on a connection: Redis is up. */
static void
on_script_loaded(redisAsyncContext *ac, void *reply, void *priv)
{
	(void)priv;
	gk_redis_limit *r = ac->data;
	redisReply *rep = reply;
	if (!r || r->ac != ac || !rep || r->state != R_CONNECTING)
		return;
	if (rep->type == REDIS_REPLY_STRING && rep->len < sizeof r->sha) {
		memcpy(r->sha, rep->str, rep->len);
		r->sha[rep->len] = 0;
	}
	gk_timer_stop(r->loop, &r->connect_timer);
	r->state = R_UP;
	/* Once it goes down, the name is looked up again. */
	r->next_addr = r->addrs.n;
	r->script_err_logged = false;
	/* Answered within the reply deadline: healthy, the backoff starts
	 * over.  A slow answer keeps it, so that a Redis too slow for every
	 * request is not reconnected to every 100ms. */
	if (gk_monotonic_us() - r->connected_us <= r->timeout_ms * 1000)
		r->backoff_ms = 100;
	gk_gauge_set(r->m_up, 1);
	char a[300], sha[60];
	snprintf(a, sizeof a, "addr=%s:%d", r->host, r->port);
	/* The script's sha: what EVALSHA by hand (or a test) calls. */
	snprintf(sha, sizeof sha, "script=%s", r->sha);
	if (r->outage_logged)
		gk_log(GK_INFO, "redis available again: global limit", a, sha);
	else if (!r->ever_up)
		gk_log(GK_INFO, "redis connected: global limit", a, sha);
	r->outage_logged = false;
	r->ever_up = true;
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
	gk_redis_limit *r = ac->data;
	if (!r || r->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this returns. */
		went_down(r, ac->errstr[0] ? ac->errstr : "connect failed");
		return;
	}
	/* Not up yet: the connect timer runs on until Redis answers the
	 * SCRIPT LOAD sent with the connection (on_script_loaded). */
	r->connected_us = gk_monotonic_us();
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	(void)status;
	gk_redis_limit *r = ac->data;
	if (r && r->ac == ac)
		went_down(r, ac->errstr[0] ? ac->errstr : "connection lost");
}

static void
on_connect_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_redis_limit *r = arg;
	if (r->state == R_CONNECTING)
		drop(r, r->connected_us ? "reply timeout" : "connect timeout");
}

static void
connect_to(gk_redis_limit *r, const char *addr)
{
	redisAsyncContext *ac = H.connect(addr, r->port);
	if (!ac) {
		r->state = R_CONNECTING; /* so went_down does its work */
		went_down(r, "out of memory");
		return;
	}
	if (ac->err) {
		char why[200];
		snprintf(why, sizeof why, "%s", ac->errstr);
		H.free(ac);
		r->ac = NULL;
		r->state = R_CONNECTING;
		went_down(r, why);
		return;
	}
	attach(r, ac);
	r->ac = ac;
	r->state = R_CONNECTING;
	r->connected_us = 0;
	H.set_connect_cb(ac, on_connect);
	H.set_disconnect_cb(ac, on_disconnect);
	/* Queued now, sent once connected. */
	H.command(ac, on_script_loaded, NULL, "SCRIPT LOAD %s", script);
	uint64_t ct = r->timeout_ms * 10 < 1000 ? 1000 : r->timeout_ms * 10;
	gk_timer_start(r->loop, &r->connect_timer, ct, on_connect_timeout, r);
}

static void
on_resolved(void *arg, const gk_dns_addrs *a, const char *err)
{
	gk_redis_limit *r = arg;
	if (r->state != R_RESOLVING)
		return;
	if (a) {
		r->addrs = *a;
		r->stale_logged = false;
	} else if (r->addrs.n) {
		/* The resolver is down or slow, perhaps not Redis. */
		if (!r->stale_logged) {
			char h[300], e[200];
			snprintf(h, sizeof h, "host=%s", r->host);
			snprintf(e, sizeof e, "error=%s", err);
			gk_log(GK_WARN, "redis host not resolved: its last "
			    "address stands", h, e);
			r->stale_logged = true;
		}
	} else {
		char why[400];
		snprintf(why, sizeof why, "unable to resolve %s: %s", r->host,
		    err);
		went_down(r, why);
		return;
	}
	r->next_addr = 0;
	connect_to(r, r->addrs.addr[r->next_addr++]);
}

static void
start_connect(gk_redis_limit *r)
{
	if (!r->dns) {
		connect_to(r, r->host);
		return;
	}
	if (r->next_addr < r->addrs.n) {
		/* The next address of the last answer. */
		connect_to(r, r->addrs.addr[r->next_addr++]);
		return;
	}
	/* Each address tried, or the connection was up and went down:
	 * ask again, the address may have moved.  The answer may come at
	 * once (the hosts file). */
	r->state = R_RESOLVING;
	gk__dns_lookup(r->dns, r->host, on_resolved, r);
}

gk_redis_limit *
gk_redis_limit_new(gk_loop *loop, const char *host, int port,
    const char *nameserver, const char *prefix, uint64_t timeout_ms,
    double per_second, uint64_t burst, const char **why)
{
	unsigned char bin[16];
	gk_dns *dns = NULL;
	if (inet_pton(AF_INET, host, bin) != 1 &&
	    inet_pton(AF_INET6, host, bin) != 1) {
		dns = gk__dns_new(loop, nameserver, why);
		if (!dns)
			return NULL;
	}
	hiredis_load();
	gk_redis_limit *r = gk_xcalloc(1, sizeof *r);
	r->dns = dns;
	r->loop = loop;
	r->host = gk_xstrdup(host);
	r->port = port;
	r->prefix = gk_xstrdup(prefix ? prefix : "");
	r->timeout_ms = timeout_ms ? timeout_ms : 50;
	r->fd = -1;
	r->backoff_ms = 100;
	double t = 1e6 / per_second;
	snprintf(r->t_us, sizeof r->t_us, "%.6f", t);
	snprintf(r->tau_us, sizeof r->tau_us, "%.6f", t * (double)burst);
	snprintf(r->limit, sizeof r->limit, "%llu",
	    (unsigned long long)burst + 1);
	r->m_up = gk_metric_series(gk_gauge_new("gk_limiter_redis_up",
	    "1 while Redis answers for the global limit, else 0", NULL));
	start_connect(r);
	return r;
}

void
gk_redis_limit_free(gk_redis_limit *r)
{
	if (!r)
		return;
	gk_timer_stop(r->loop, &r->reconnect_timer);
	gk_timer_stop(r->loop, &r->connect_timer);
	redisAsyncContext *ac = r->ac;
	r->ac = NULL;
	r->state = R_DOWN;
	if (ac)
		H.free(ac);
	gk__dns_free(r->dns);
	free(r->host);
	free(r->prefix);
	free(r);
}

bool
gk_redis_limit_up(const gk_redis_limit *r)
{
	return r->state == R_UP;
}

/* ---- one check ---- */

static bool send_op(gk_redis_limit *r, gk_redis_op *op, bool by_sha);

static void
op_finish(gk_redis_op *op, const gk_rate_result *res)
{
	gk_timer_stop(op->r->loop, &op->timer);
	gk_redis_limit_fn *fn = op->fn;
	op->fn = NULL;
	if (fn)
		fn(op->arg, res);
}

static bool
reply_int(const redisReply *rep, size_t i, long long *v)
{
	if (i >= rep->elements || rep->element[i]->type != REDIS_REPLY_INTEGER)
		return false;
	*v = rep->element[i]->integer;
	return true;
}

static void
on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
	gk_redis_op *op = priv;
	gk_redis_limit *r = op->r;
	redisReply *rep = reply;
	if (!rep) {
		/* The context is going away: it cannot take new commands. */
		if (r->ac == ac)
			went_down(r, ac->errstr[0] ? ac->errstr
						   : "connection lost");
		op_finish(op, NULL);
		free(op->key);
		free(op);
		return;
	}
	if (rep->type == REDIS_REPLY_ERROR && !op->retried &&
	    !strncmp(rep->str, "NOSCRIPT", 8) && op->fn && r->ac == ac) {
		/* Flushed or restarted: EVAL loads it again. */
		op->retried = true;
		r->sha[0] = 0;
		if (send_op(r, op, false))
			return;
		op_finish(op, NULL);
		free(op->key);
		free(op);
		return;
	}
	long long v[5];
	bool ok = rep->type == REDIS_REPLY_ARRAY;
	for (size_t i = 0; ok && i < 5; i++)
		ok = reply_int(rep, i, &v[i]);
	if (!ok) {
		/* Once per connection: a script Redis refuses (ACL, cluster
		 * redirection) fails every request alike. */
		if (op->fn && !r->script_err_logged) {
			r->script_err_logged = true;
			char why[160];
			snprintf(why, sizeof why, "error=%.140s",
			    rep->type == REDIS_REPLY_ERROR ? rep->str
							   : "unexpected reply");
			gk_log(GK_ERROR, "redis script failed: local limit", why);
		}
		op_finish(op, NULL);
	} else {
		gk_rate_result res = {
		    .allowed = v[0] == 1,
		    .delay_ns = v[1] > 0 ? (uint64_t)v[1] * 1000u : 0,
		    .limit = v[2] > 0 ? (uint64_t)v[2] : 0,
		    .remaining = v[3] > 0 ? (uint64_t)v[3] : 0,
		    .reset_ns = v[4] > 0 ? (uint64_t)v[4] * 1000u : 0,
		};
		/* Answered in time: the backoff starts over. */
		if (r->ac == ac)
			r->backoff_ms = 100;
		op_finish(op, &res);
	}
	free(op->key);
	free(op);
}

static void
on_op_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	gk_redis_op *op = arg;
	/* No answer within the deadline: Redis is as good as down.  Freeing
	 * the context answers every op still waiting (NULL: local limit). */
	drop(op->r, "reply timeout");
}

/* Queue the script call of op; false when hiredis did not take it. */
static bool
send_op(gk_redis_limit *r, gk_redis_op *op, bool by_sha)
{
	const char *argv[8] = {by_sha ? "EVALSHA" : "EVAL",
	    by_sha ? r->sha : script, "1", op->key, r->t_us, r->tau_us,
	    op->maxwait, r->limit};
	size_t len[8];
	for (int i = 0; i < 8; i++)
		len[i] = strlen(argv[i]);
	return H.command_argv(r->ac, on_reply, op, 8, argv, len) ==
	    REDIS_OK;
}

gk_redis_op *
gk_redis_limit_check(gk_redis_limit *r, const char *key, size_t len,
    uint64_t max_wait_ns, gk_redis_limit_fn *fn, void *arg)
{
	/* Until Redis has answered on this connection, the local limit:
	 * no request waits on a connection that has not shown it works. */
	if (r->state != R_UP || !r->ac)
		return NULL;
	gk_redis_op *op = gk_xcalloc(1, sizeof *op);
	op->r = r;
	op->fn = fn;
	op->arg = arg;
	size_t plen = strlen(r->prefix);
	op->key = gk_xmalloc(plen + len + 1);
	memcpy(op->key, r->prefix, plen);
	memcpy(op->key + plen, key, len);
	op->key[plen + len] = 0;
	snprintf(op->maxwait, sizeof op->maxwait, "%llu",
	    (unsigned long long)(max_wait_ns / 1000u));
	/* Armed first: the callback never runs inside this call. */
	gk_timer_start(r->loop, &op->timer, r->timeout_ms, on_op_timeout, op);
	if (!send_op(r, op, r->sha[0] != 0)) {
		gk_timer_stop(r->loop, &op->timer);
		free(op->key);
		free(op);
		return NULL;
	}
	return op;
}

void
gk_redis_op_cancel(gk_redis_op *op)
{
	/* hiredis still owns the callback; the op is freed with the reply. */
	op->fn = NULL;
	gk_timer_stop(op->r->loop, &op->timer);
}
