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
 * Every time in the script is a whole number of microseconds w plus a
 * fraction f / D (0 <= f < D), each part a Lua number (a double) kept below
 * 2^53, where doubles hold integers exactly; the script only adds,
 * subtracts and compares them.  A TAT kept as one double (about 1.8e15 us
 * since the epoch, where doubles are 0.25us apart) rounded T at every
 * request: 2.6% over the rate at 300000/s, no limit at all from 8M/s.
 *
 * KEYS[1] the key; ARGV: T (whole us, fraction, D), tau = burst * T (whole
 * us, fraction), the longest delay a request may be held for (us; 0:
 * reject), the limit (burst + 1).  ARGV[8], never sent by gk-limiter,
 * stands in for TIME (us) so that a test can run the script on a clock of
 * its own.  Returns {allowed, delay_us (allowed: hold this long; rejected:
 * until it would be admitted), limit, x_us, x_frac, reset_us}, where
 * x = now + tau - the new TAT (x_us -1 when negative) gives what remains.
 *
 * The key holds "W F D".  A value in another form (the single number of
 * earlier versions) is taken as absent; one with another D (the rate was
 * changed) keeps its TAT rounded up to the microsecond.
 */
static const char script[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local TW, TF, D = tonumber(ARGV[1]), tonumber(ARGV[2]), "
    "tonumber(ARGV[3])\n"
    "local uW, uF = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local maxwait, limit = tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "local now = tonumber(ARGV[8])\n"
    "if not now then\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local w, f = now, 0\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then\n"
    "  local a, b, c = string.match(v, '^(%d+) (%d+) (%d+)$')\n"
    "  a, b, c = tonumber(a), tonumber(b), tonumber(c)\n"
    "  if a and a < 9007199254740992 and c < 9007199254740992 and b < c "
    "then\n"
    "    if c ~= D then\n"
    "      if b > 0 then a = a + 1 end\n"
    "      b = 0\n"
    "    end\n"
    "    if a > now or (a == now and b > 0) then w, f = a, b end\n"
    "  end\n"
    "end\n"
    "local ww, wf = w - uW - now, f - uF\n"
    "if wf < 0 then wf, ww = wf + D, ww - 1 end\n"
    "local wait = 0\n"
    "if ww >= 0 then wait = ww + ((wf > 0) and 1 or 0) end\n"
    "if wait > maxwait then\n"
    "  return {0, wait, limit, -1, 0, w - now + ((f > 0) and 1 or 0)}\n"
    "end\n"
    "local nw, nf = w + TW, f + TF\n"
    "if nf >= D then nf, nw = nf - D, nw + 1 end\n"
    "redis.call('SET', KEYS[1], string.format('%.0f %.0f %.0f', nw, nf, "
    "D),\n"
    "  'PX', math.ceil((nw - now + 1) / 1000) + 1000)\n"
    "local xw, xf = now + uW - nw, uF - nf\n"
    "if xf < 0 then xf, xw = xf + D, xw - 1 end\n"
    "if xw < 0 then xw, xf = -1, 0 end\n"
    "return {1, wait, limit, xw, xf, nw - now + ((nf > 0) and 1 or 0)}\n";

typedef unsigned __int128 u128;

/* Doubles hold every integer below 2^53; the script's sums of two parts
 * stay below it when each part is at most 2^52. */
#define SCRIPT_MAX (1ull << 52)

/*
 * The script's arguments (redis_limit.h): T = period_ns / (1000 n) us as
 * tw + tf / d, and tau = burst * T as uw + uf / d.  Exact when the reduced
 * d is at most 2^52 (any rate written with fewer than 13 significant
 * digits); otherwise d = 2^52 and tf is rounded up, so that the limit is
 * at most 1 part in 2^52 * T (T in us; under 3e-13 at 1e9/s) below the
 * rate, never above it.  -1 when (burst + 1) * T passes 2^52us: the TAT,
 * about 1.8e15us since the epoch now, would pass 2^53.
 */
int
gk__redis_script_times(const gk_gcra *g, uint64_t *tw, uint64_t *tf,
    uint64_t *d, uint64_t *uw, uint64_t *uf)
{
	u128 a = g->period_ns, b = (u128)g->n * 1000u;
	u128 c = gk__gcd128(a, b);
	a /= c;
	b /= c;
	u128 w = a / b, f = a % b;
	if (b > SCRIPT_MAX) {
		f = (f * SCRIPT_MAX + b - 1) / b; /* < 2^128: f < b <= 1e22 */
		b = SCRIPT_MAX;
		if (f == b) {
			w++;
			f = 0;
		}
	}
	u128 bf = (u128)g->burst * f;
	u128 tau_w = (u128)g->burst * w + bf / b;
	if (w + tau_w + 1 > SCRIPT_MAX)
		return -1;
	*tw = (uint64_t)w;
	*tf = (uint64_t)f;
	*d = (uint64_t)b;
	*uw = (uint64_t)tau_w;
	*uf = (uint64_t)(bf % b);
	return 0;
}

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
	/* T and tau in us, each whole + fraction / d (see the script) */
	uint64_t tw, tf, d;
	char a_tw[24], a_tf[24], a_d[24], a_uw[24], a_uf[24], limit[24];
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
    const gk_gcra *g, const char **why)
{
	uint64_t tw, tf, d, uw, uf;
	if (gk__redis_script_times(g, &tw, &tf, &d, &uw, &uf) < 0) {
		*why = "--redis: the rate's interval times --burst + 1 passes "
		       "2^52us (142 years), past what Redis's script counts "
		       "exactly";
		return NULL;
	}
	unsigned char bin[16];
	gk_dns *dns = NULL;
	if (inet_pton(AF_INET, host, bin) != 1 &&
	    inet_pton(AF_INET6, host, bin) != 1) {
		dns = gk__dns_new(loop, nameserver, why);
		if (!dns) {
			/* Named for the option: not taken for the key's. */
			static char msg[192];
			snprintf(msg, sizeof msg,
			    "--redis: unable to start the host name lookup: %s",
			    *why);
			*why = msg;
			return NULL;
		}
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
	r->tw = tw;
	r->tf = tf;
	r->d = d;
	snprintf(r->a_tw, sizeof r->a_tw, "%llu", (unsigned long long)tw);
	snprintf(r->a_tf, sizeof r->a_tf, "%llu", (unsigned long long)tf);
	snprintf(r->a_d, sizeof r->a_d, "%llu", (unsigned long long)d);
	snprintf(r->a_uw, sizeof r->a_uw, "%llu", (unsigned long long)uw);
	snprintf(r->a_uf, sizeof r->a_uf, "%llu", (unsigned long long)uf);
	snprintf(r->limit, sizeof r->limit, "%llu",
	    (unsigned long long)g->burst + 1);
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

/* Requests admitted at once after this one: floor(x / T) + 1, exactly. */
static uint64_t
remaining(const gk_redis_limit *r, long long xw, long long xf)
{
	if (xw < 0 || xf < 0 || (uint64_t)xf >= r->d)
		return 0;
	u128 x = (u128)(uint64_t)xw * r->d + (uint64_t)xf;
	u128 q = x / ((u128)r->tw * r->d + r->tf) + 1;
	return q > UINT64_MAX ? UINT64_MAX : (uint64_t)q;
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
	long long v[6];
	bool ok = rep->type == REDIS_REPLY_ARRAY;
	for (size_t i = 0; ok && i < 6; i++)
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
		    .remaining = remaining(r, v[3], v[4]),
		    .reset_ns = v[5] > 0 ? (uint64_t)v[5] * 1000u : 0,
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
	const char *argv[11] = {by_sha ? "EVALSHA" : "EVAL",
	    by_sha ? r->sha : script, "1", op->key, r->a_tw, r->a_tf, r->a_d,
	    r->a_uw, r->a_uf, op->maxwait, r->limit};
	size_t len[11];
	for (int i = 0; i < 11; i++)
		len[i] = strlen(argv[i]);
	return H.command_argv(r->ac, on_reply, op, 11, argv, len) ==
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
