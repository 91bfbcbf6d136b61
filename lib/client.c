/*
 * client.c: gk-client's logic.  A try goes to the native HTTP/1.1 engine
 * (upstream_http.c) when it can take it, else to libcurl's multi
 * interface; both end in finish_try.  Retries are
 * made only when they are safe (nothing reached the upstream, or an
 * idempotent method got a status named by --retry-on), with jittered
 * exponential backoff, within a retry budget as Finagle's RetryBudget and
 * Envoy's retry budgets keep it, and never past the request's deadline.
 */
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "curl_loop.h"
#include "http.h"
#include "tracecontext.h"
#include "upstream_http.h"

#define BUDGET_SECONDS 10
/* A wire line is at most 16 MiB (gk-wire(5)): a longer answer is lost. */
#define GK_CLIENT_MAX_WIRE_LINE (16u << 20)

struct gk_client {
	gk_client_config cfg;
	gk_stage *st;
	gk_loop *loop;
	gk_curl *curl;
	gk_uh *uh; /* the native engine, or NULL (--engine curl) */
	gk_balancer *bal;
	gk_resolver *res;
	/* retry budget: requests and retries per second, last 10 s */
	struct {
		uint64_t second;
		unsigned requests, retries;
	} budget[BUDGET_SECONDS];
	gk_timer check_timer;
	gk_timer eject_timer; /* at the earliest end of an ejection */
	CURL *spare[64];
	unsigned nspare;
	/* The pool gauge of the endpoint each open upstream socket belongs
	 * to, by fd, so that closing it counts down the right one. */
	gk_series **fdpool;
	size_t nfdpool;
	gk_metric *m_requests, *m_errors, *m_ejections, *m_ejected, *m_duration;
	gk_metric *m_pool;
	gk_series *m_endpoints, *m_retries, *m_budget_exhausted, *m_no_ep;
	gk_series *m_connects, *m_not_resent;
	/* libcurl before 8.0.0 fails every reuse of an HTTP/2 connection
	 * made with prior knowledge (curl issue 10634, fixed by PR 10643). */
	bool h2_no_reuse, h2_warned;
	gk_buf url, tmp, line; /* scratch of try_once: libcurl copies */
	/* At start, until the source's first set (wait_first_set). */
	bool got_set, starting;
	int start_signal; /* TERM or INT while starting: raised again */
	gk_timer start_timer;
	gk_series *m_start_expired;
};

/* A response header: offsets of its NUL-terminated name (lowercase) and
 * value in the request's header arena.  upstream_line links the headers
 * of one name, in order, from the first of them. */
struct hdr {
	size_t name, value;
	size_t next;   /* the next header of this name; 0: none */
	size_t tail;   /* the first: the last header of its name */
	size_t count;  /* the first: how many have its name */
	bool first;    /* the first of its name */
};

/* Whom a socket libcurl opens belongs to. */
struct sockowner {
	gk_client *c;
	gk_series *pool; /* the endpoint's pool gauge */
};

struct cstate {
	struct sockowner so; /* first: the socket hooks get a cstate */
	gk_client *c;
	gk_req *req;
	CURL *easy;
	gk_backend *be;   /* holds a reference */
	/* The endpoints tried before this try, each holding a reference:
	 * a retry goes elsewhere while there is an elsewhere. */
	gk_backend *tried[GK_CLIENT_RETRIES_MAX];
	unsigned ntried;
	unsigned tries;
	bool running;
	bool idempotent;
	unsigned prereqs; /* requests libcurl sent in this try */
	bool not_resent;  /* libcurl wanted to send it again: refused */
	gk_buf method;
	struct curl_slist *headers;
	gk_buf body;      /* request body, decoded */
	gk_buf response;  /* response body */
	struct hdr *rh;   /* response headers */
	size_t nrh, caprh;
	gk_buf harena;    /* their bytes */
	bool too_big;
	bool invalid;     /* a header no valid answer has: 502 */
	bool in_trailers; /* libcurl's header callback past the headers */
	uint64_t start_us, try_start_us;
	gk_timer retry_timer;
	/* the native engine's try */
	bool native;
	gk_uh_xfer ux;
	gk_buf reqbuf; /* the request as written */
	/* client span */
	bool sampled;
	bool random; /* the trace id's Level 2 random flag, passed on */
	uint8_t trace_id[16], parent[8], span_id[8];
	bool has_trace;
};

size_t
gk_client_state_size(void)
{
	return sizeof(struct cstate);
}

int
gk_client_parse_retry_on(gk_client_config *cfg, const char *s)
{
	cfg->nretry_on = 0;
	while (*s) {
		char *end;
		long v = strtol(s, &end, 10);
		if (end == s || v < 100 || v > 599 || cfg->nretry_on >= 16)
			return -1;
		cfg->retry_on[cfg->nretry_on++] = (int)v;
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return 0;
}

/* True when the comma-separated tags hold tag exactly. */
static bool
has_tag(const char *tags, const char *tag)
{
	size_t n = strlen(tag);
	for (const char *p = tags; *p;) {
		size_t len = strcspn(p, ",");
		if (len == n && !strncmp(p, tag, n))
			return true;
		p += len;
		if (*p)
			p++;
	}
	return false;
}

/* ---- per-endpoint metrics ---- */

static void
backend_metrics(gk_client *c, gk_backend *be)
{
	if (be->m_requests)
		return;
	be->m_requests = gk_series_get(c->m_requests, be->ep.addr, (char *)0);
	be->m_errors = gk_series_get(c->m_errors, be->ep.addr, (char *)0);
	be->m_ejections = gk_series_get(c->m_ejections, be->ep.addr, (char *)0);
	be->m_ejected = gk_series_get(c->m_ejected, be->ep.addr, (char *)0);
	be->m_duration = gk_series_get(c->m_duration, be->ep.addr, (char *)0);
	be->m_pool = gk_series_get(c->m_pool, be->ep.addr, (char *)0);
}

/* ---- the connection pool, counted per endpoint ---- */

/* A socket was opened for the transfer whose arg is a (the state of a
 * request or of a check: both begin with their struct sockowner). */
static void
pool_opened(void *a, int fd)
{
	struct sockowner *o = a;
	gk_client *c = o->c;
	if ((size_t)fd >= c->nfdpool) {
		size_t n = c->nfdpool ? c->nfdpool : 64;
		while (n <= (size_t)fd)
			n *= 2;
		c->fdpool = gk_xrealloc(c->fdpool, n * sizeof *c->fdpool);
		memset(c->fdpool + c->nfdpool, 0,
		    (n - c->nfdpool) * sizeof *c->fdpool);
		c->nfdpool = n;
	}
	c->fdpool[fd] = o->pool;
	if (o->pool)
		gk_gauge_add(o->pool, 1);
}

static void
pool_closed(void *arg, int fd)
{
	gk_client *c = arg;
	if (fd >= 0 && (size_t)fd < c->nfdpool && c->fdpool[fd]) {
		gk_gauge_add(c->fdpool[fd], -1);
		c->fdpool[fd] = NULL;
	}
}

static int
addr_cmp(const void *key, const void *ep)
{
	return strcmp(key, ((const gk_endpoint *)ep)->addr);
}

/* The socket fd is in the pool whose gauge is arg. */
static bool
in_pool(void *arg, int fd)
{
	struct sockowner *o = arg;
	return (size_t)fd < o->c->nfdpool && o->c->fdpool[fd] == o->pool;
}

/* Endpoints that leave the set: their idle connections are closed now,
 * not kept open until the upstream closes them (tries running there
 * finish on theirs). */
static void
drop_left(gk_client *c, const gk_endpoint *set, size_t n)
{
	for (size_t i = 0; i < gk_balancer_size(c->bal); i++) {
		gk_backend *be = gk_balancer_at(c->bal, i);
		/* the set is sorted by addr (resolver.h) */
		if (bsearch(be->ep.addr, set, n, sizeof *set, addr_cmp))
			continue;
		if (c->uh)
			gk_uh_drop_idle(c->uh, be->ep.addr);
		if (be->m_pool) {
			struct sockowner o = {c, be->m_pool};
			gk_curl_drop_idle(c->curl, in_pool, &o);
		}
	}
}

static void
on_endpoints(const gk_endpoint *set, size_t n, void *arg)
{
	gk_client *c = arg;
	c->got_set = true;
	if (c->starting)
		gk_loop_stop(c->loop);
	drop_left(c, set, n);
	gk_balancer_update(c->bal, set, n);
	for (size_t i = 0; i < gk_balancer_size(c->bal); i++)
		backend_metrics(c, gk_balancer_at(c->bal, i));
	gk_gauge_set(c->m_endpoints, (double)n);
	char k[32];
	snprintf(k, sizeof k, "count=%zu", n);
	gk_log(n ? GK_INFO : GK_WARN, "endpoints", k);
}

/* ---- at start: the first set ---- */

static void
on_start_expired(gk_loop *loop, void *arg)
{
	gk_client *c = arg;
	char k[48];
	snprintf(k, sizeof k, "waited_ms=%llu",
	    (unsigned long long)c->cfg.wait_endpoints_ms);
	gk_log(GK_WARN, "no endpoints yet: serving without them", k);
	gk_counter_add(c->m_start_expired, 1);
	gk_loop_stop(loop);
}

static void
on_start_signal(gk_loop *loop, int signo, void *arg)
{
	gk_client *c = arg;
	c->start_signal = signo;
	gk_loop_stop(loop);
}

/*
 * A source that has not answered yet (a DNS lookup, a registry query, a
 * file not written yet): run the loop for it alone, at most
 * --wait-endpoints, before the stage goes on.  Until then there is no
 * READY=1 and no request is read (they wait in the pipe or the socket),
 * rather than answered 503 for want of a set that is about to come.  An
 * empty set is an answer: it ends the wait.  TERM or INT ends it too, and
 * is raised again (held, being blocked) for the stage to drain on; HUP
 * waits for the stage; USR1 is answered now.
 */
static void
wait_first_set(gk_client *c)
{
	sigset_t hup;
	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	sigprocmask(SIG_BLOCK, &hup, NULL);
	gk_loop_signal(c->loop, SIGTERM, on_start_signal, c);
	gk_loop_signal(c->loop, SIGINT, on_start_signal, c);
	gk_loop_signal(c->loop, SIGUSR1, gk_metrics_on_signal, NULL);
	gk_timer_start(c->loop, &c->start_timer, c->cfg.wait_endpoints_ms,
	    on_start_expired, c);
	c->starting = true;
	gk_loop_run(c->loop);
	c->starting = false;
	gk_timer_stop(c->loop, &c->start_timer);
	if (c->start_signal)
		raise(c->start_signal);
}

/* ---- the retry budget ---- */

static void
budget_note(gk_client *c, bool retry)
{
	uint64_t s = gk_loop_now(c->loop) / 1000;
	unsigned i = (unsigned)(s % BUDGET_SECONDS);
	if (c->budget[i].second != s)
		c->budget[i].second = s, c->budget[i].requests = 0,
		c->budget[i].retries = 0;
	if (retry)
		c->budget[i].retries++;
	else
		c->budget[i].requests++;
}

static bool
budget_allows(gk_client *c)
{
	uint64_t s = gk_loop_now(c->loop) / 1000;
	double req = 0, ret = 0;
	for (unsigned i = 0; i < BUDGET_SECONDS; i++)
		if (c->budget[i].second + BUDGET_SECONDS > s) {
			req += c->budget[i].requests;
			ret += c->budget[i].retries;
		}
	return ret + 1 <= c->cfg.budget_min_per_s * BUDGET_SECONDS +
	    c->cfg.budget_percent * req;
}

/* ---- active checks ---- */

struct check {
	struct sockowner so; /* first, as in struct cstate */
	gk_client *c;
	char addr[262];
};

/* True when one more endpoint of the set may go out of rotation: never
 * more than --max-ejected of the set, ejected or failing its check. */
static bool
room_to_take_out(gk_client *c, uint64_t now)
{
	size_t n = gk_balancer_size(c->bal), out = 0;
	for (size_t i = 0; i < n; i++)
		out += !gk_backend_available(gk_balancer_at(c->bal, i), now);
	return (double)(out + 1) <= c->cfg.max_ejected * (double)n;
}

static void
check_done(CURL *easy, CURLcode result, void *arg)
{
	struct check *k = arg;
	gk_client *c = k->c;
	long code = 0;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
	bool ok = result == CURLE_OK && code >= 200 && code < 300;
	for (size_t i = 0; i < gk_balancer_size(c->bal); i++) {
		gk_backend *be = gk_balancer_at(c->bal, i);
		if (strcmp(be->ep.addr, k->addr))
			continue;
		be->check_running = false;
		if (be->check_fails != !ok) {
			char a[300];
			snprintf(a, sizeof a, "endpoint=%s", be->ep.addr);
			gk_log(ok ? GK_INFO : GK_WARN,
			    ok ? "endpoint check passes" : "endpoint check fails", a);
		}
		be->check_fails = !ok;
		/* A failing endpoint goes out of rotation when --max-ejected
		 * leaves room, else stays in until a later check finds room
		 * (another one back) or passes. */
		uint64_t now = gk_loop_now(c->loop);
		if (ok)
			be->check_failed = false;
		else if (!be->check_failed && (!gk_backend_available(be, now) ||
		    room_to_take_out(c, now)))
			be->check_failed = true;
		gk_gauge_set(be->m_ejected, !gk_backend_available(be, now));
	}
	curl_easy_cleanup(easy);
	free(k);
}

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

/*
 * HTTP/2 with prior knowledge for --http2 or a backend tagged h2, else
 * HTTP/1.1; where libcurl cannot reuse such connections (before 8.0.0),
 * one connection a request, said once.
 */
static void
set_http_version(gk_client *c, const gk_backend *be, CURL *e)
{
	if (c->cfg.http2 || has_tag(be->ep.tags, "h2")) {
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
		    (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
		if (c->h2_no_reuse) {
			curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
			curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
			if (!c->h2_warned) {
				char v[64];
				snprintf(v, sizeof v, "libcurl=%s",
				    curl_version_info(CURLVERSION_NOW)->version);
				c->h2_warned = true;
				gk_log(GK_WARN, "libcurl before 8.0.0 cannot reuse "
				    "HTTP/2 connections made with prior knowledge: "
				    "one connection per request", v);
			}
		}
	} else
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
		    (long)CURL_HTTP_VERSION_1_1);
}

static void
on_check_timer(gk_loop *loop, void *arg)
{
	gk_client *c = arg;
	for (size_t i = 0; i < gk_balancer_size(c->bal); i++) {
		gk_backend *be = gk_balancer_at(c->bal, i);
		/* One check in flight an endpoint: a check that outlives the
		 * interval (a hanging endpoint, up to 2 s) is not joined by
		 * more, whose late verdicts would override a newer one. */
		if (be->check_running)
			continue;
		struct check *k = gk_xcalloc(1, sizeof *k);
		k->c = c;
		k->so = (struct sockowner){c, be->m_pool};
		snprintf(k->addr, sizeof k->addr, "%s", be->ep.addr);
		char url[600];
		snprintf(url, sizeof url, "http://%s%s", be->ep.addr,
		    c->cfg.check_path);
		CURL *e = curl_easy_init();
		curl_easy_setopt(e, CURLOPT_URL, url);
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		/* Directly, as the requests: no http_proxy from the
		 * environment. */
		curl_easy_setopt(e, CURLOPT_PROXY, "");
		set_http_version(c, be, e);
		be->check_running = true;
		if (gk_curl_start(c->curl, e, check_done, k) < 0) {
			be->check_running = false;
			curl_easy_cleanup(e);
			free(k);
		}
	}
	gk_timer_start(loop, &c->check_timer, c->cfg.check_every_ms,
	    on_check_timer, c);
}

gk_client *
gk_client_new(gk_stage *st, const gk_client_config *cfg, const char **why)
{
	gk_client *c = gk_xcalloc(1, sizeof *c);
	c->cfg = *cfg;
	if (!c->cfg.via)
		c->cfg.via = "gokit";
	c->st = st;
	c->loop = gk_stage_loop(st);
	c->curl = gk_curl_new(c->loop, cfg->max_host_connections);
	gk_curl_socket_hooks(c->curl, pool_opened, pool_closed, c);
	/* The native engine has no queue for --max-conns-per-endpoint:
	 * with that bound every try goes through libcurl. */
	if (cfg->native && !cfg->max_host_connections)
		c->uh = gk_uh_new(c->loop, cfg->connect_timeout_ms, pool_opened,
		    pool_closed, c);
	if (c->uh)
		gk_uh_count_pools(c->uh, gk_metric_series(gk_gauge_new(
		    "gk_client_native_addresses",
		    "Addresses the native engine keeps a record (a pool) of: "
		    "those of the set it has tried, and those that left it "
		    "while a connection or a try there was still open",
		    NULL)));
	c->bal = gk_balancer_new(cfg->balance);
	c->m_requests = gk_counter_new("gk_client_requests_total",
	    "Requests sent upstream, by endpoint (tries, retries included)",
	    "endpoint");
	c->m_errors = gk_counter_new("gk_client_errors_total",
	    "Tries that failed (5xx or transport), by endpoint", "endpoint");
	c->m_ejections = gk_counter_new("gk_client_ejections_total",
	    "Times an endpoint was ejected by outlier detection", "endpoint");
	c->m_ejected = gk_gauge_new("gk_client_ejected",
	    "1 while an endpoint is out of rotation", "endpoint");
	c->m_duration = gk_histogram_new("gk_client_request_duration_seconds",
	    "Upstream latency of a try, by endpoint", "endpoint", NULL, 0);
	c->m_pool = gk_gauge_new("gk_client_connections",
	    "Upstream connections open (the pool), by endpoint", "endpoint");
	c->m_endpoints = gk_metric_series(gk_gauge_new("gk_client_endpoints",
	    "Endpoints in the current set", NULL));
	c->m_retries = gk_metric_series(gk_counter_new(
	    "gk_client_retries_total", "Retries made", NULL));
	c->m_budget_exhausted = gk_metric_series(gk_counter_new(
	    "gk_client_retry_budget_exhausted_total",
	    "Retries not made because the budget was spent", NULL));
	c->m_no_ep = gk_metric_series(gk_counter_new(
	    "gk_client_no_endpoint_total",
	    "Requests answered 503 for want of an endpoint", NULL));
	c->m_connects = gk_metric_series(gk_counter_new(
	    "gk_client_connections_opened_total",
	    "Upstream connections opened (the rest reused one)", NULL));
	c->m_not_resent = gk_metric_series(gk_counter_new(
	    "gk_client_not_resent_total",
	    "Non-idempotent requests answered 502 rather than sent again on a "
	    "new connection after a reused one closed", NULL));
	gk_gauge_set(gk_metric_series(gk_gauge_new("gk_client_pool_max",
	    "Idle upstream connections kept for reuse at most, all endpoints",
	    NULL)), GK_CURL_MAX_IDLE);
	gk_gauge_set(gk_metric_series(gk_gauge_new(
	    "gk_client_pool_max_per_endpoint",
	    "Idle upstream connections the native engine keeps for reuse at "
	    "most, per endpoint", NULL)),
	    c->uh ? GK_UH_MAX_IDLE_PER_ENDPOINT : 0);
	c->m_start_expired = gk_metric_series(gk_counter_new(
	    "gk_client_start_wait_expired_total",
	    "Starts that went on without a set after --wait-endpoints", NULL));
	gk_gauge_set(gk_metric_series(gk_gauge_new(
	    "gk_client_start_wait_max_seconds",
	    "How long a start waits for the source's first set at most "
	    "(--wait-endpoints)", NULL)),
	    (double)cfg->wait_endpoints_ms / 1000);
	c->h2_no_reuse = curl_version_info(CURLVERSION_NOW)->version_num < 0x080000;
	c->res = gk_resolver_new(c->loop, cfg->source, &cfg->ropts,
	    on_endpoints, c, why);
	if (!c->res)
		return NULL;
	size_t n;
	const gk_endpoint *set = gk_resolver_set(c->res, &n);
	if (n && !gk_balancer_size(c->bal))
		on_endpoints(set, n, c);
	if (cfg->check_path && cfg->check_every_ms)
		gk_timer_start(c->loop, &c->check_timer, 0, on_check_timer, c);
	if (!c->got_set && cfg->wait_endpoints_ms)
		wait_first_set(c);
	return c;
}

/* ---- one request ---- */

static bool
hop_by_hop(const char *name, size_t n)
{
	static const char *const hop[] = {"connection", "keep-alive",
	    "proxy-connection", "transfer-encoding", "te", "trailer",
	    "upgrade", "proxy-authorization", "proxy-authenticate",
	    "content-length", "expect", NULL};
	for (int i = 0; hop[i]; i++)
		if (strlen(hop[i]) == n && !strncmp(hop[i], name, n))
			return true;
	return false;
}

/* The next element of a comma-separated list (RFC 9110 5.6.1) at *v,
 * before end: [*b, *e), blanks trimmed, maybe empty; false past the end. */
static bool
list_item(const char **v, const char *end, const char **b, const char **e)
{
	if (*v >= end)
		return false;
	const char *comma = memchr(*v, ',', (size_t)(end - *v));
	const char *s = *v, *t = comma ? comma : end;
	while (s < t && (*s == ' ' || *s == '\t'))
		s++;
	while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
		t--;
	*b = s;
	*e = t;
	*v = comma ? comma + 1 : end;
	return true;
}

/* Append the options of a Connection header value (v, n) to list:
 * lowercase, blanks trimmed, each followed by a comma (for has_tag). */
static void
connection_options(gk_buf *list, const char *v, size_t n)
{
	const char *end = v + n, *b, *t;
	while (list_item(&v, end, &b, &t)) {
		if (t > b) {
			if (list->len)
				gk_buf_addc(list, ',');
			for (const char *q = b; q < t; q++)
				gk_buf_addc(list, (char)tolower((unsigned char)*q));
		}
	}
}

/*
 * The options of a Connection list (connection_options) as a set, so that
 * checking each header against it is not a scan of the whole list: a
 * request or an answer may hold thousands of both.  Open
 * addressing, 1 + the offset of an option in the list per slot.
 */
struct option_set {
	const char *list;
	size_t *slot, mask, small[16];
};

/* The slot of option (p, n): empty, or holding it. */
static size_t *
option_slot(const struct option_set *o, const char *p, size_t n)
{
	for (size_t i = (size_t)gk__hash_bytes(p, n) & o->mask;;
	     i = (i + 1) & o->mask) {
		if (!o->slot[i])
			return &o->slot[i];
		const char *q = o->list + o->slot[i] - 1;
		if (!strncmp(q, p, n) && (q[n] == ',' || !q[n]))
			return &o->slot[i];
	}
}

static void
option_set_init(struct option_set *o, const char *list)
{
	size_t count = *list ? 1 : 0, cap = 16;
	for (const char *p = list; *p; p++)
		count += *p == ',';
	while (cap < 2 * count)
		cap <<= 1;
	o->list = list;
	o->mask = cap - 1;
	o->slot = cap > 16 ? gk_xcalloc(cap, sizeof *o->slot) : o->small;
	if (o->slot == o->small)
		memset(o->small, 0, sizeof o->small);
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		size_t *slot = option_slot(o, p, len);
		if (!*slot)
			*slot = (size_t)(p - list) + 1;
		p += len;
		if (*p)
			p++;
	}
}

static bool
option_set_has(const struct option_set *o, const char *name, size_t n)
{
	return *o->list && *option_slot(o, name, n);
}

static void
option_set_free(struct option_set *o)
{
	if (o->slot != o->small)
		free(o->slot);
}

/* A Transfer-Encoding value (v, n) names a coding other than chunked.
 * Neither engine decodes one: passed on, its bytes would read as the
 * content once the header, hop-by-hop, stays here (RFC 9112 6.1, 7). */
static bool
coding_not_chunked(const char *v, size_t n)
{
	const char *end = v + n, *b, *e;
	while (list_item(&v, end, &b, &e))
		if (e > b && !(e - b == 7 && !strncasecmp(b, "chunked", 7)))
			return true;
	return false;
}

static void
store_header(struct cstate *s, const char *p, size_t nl, const char *v,
    const char *end)
{
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
	    end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (s->nrh == s->caprh) {
		s->caprh = s->caprh ? s->caprh * 2 : 16;
		s->rh = gk_xrealloc(s->rh, s->caprh * sizeof *s->rh);
	}
	size_t vl = (size_t)(end - v);
	/* A name that is not a token or a value with a control byte: the
	 * stage above could not pass the answer on (gk-listener would
	 * answer 502 for it, blaming nobody), so it is the upstream's
	 * invalid answer here. */
	if (!gk_http_field_name(p, nl) || !gk_http_field_value(v, vl))
		s->invalid = true;
	/* obs-text (Latin-1, say) is field content, but the wire carries
	 * UTF-8 only: such a value could only go north changed (U+FFFD),
	 * so the answer is refused, as gk-listener refuses such a request
	 * (gk-wire(5)). */
	if (!gk_utf8_valid(v, vl))
		s->invalid = true;
	/* (a HEAD answer has no body: its coding says what a GET's had) */
	if (nl == 17 && !strncasecmp(p, "transfer-encoding", 17) &&
	    coding_not_chunked(v, vl) &&
	    strcmp(gk_buf_cstr(&s->method), "HEAD"))
		s->invalid = true;
	gk_buf *a = &s->harena;
	gk_buf_reserve(a, nl + vl + 2);
	size_t name = a->len;
	for (size_t i = 0; i < nl; i++)
		a->data[a->len++] = (char)tolower((unsigned char)p[i]);
	a->data[a->len++] = 0;
	size_t value = a->len;
	memcpy(a->data + a->len, v, vl);
	a->len += vl;
	a->data[a->len++] = 0;
	s->rh[s->nrh++] = (struct hdr){.name = name, .value = value};
}

/*
 * The answer whose header section libcurl just gave announces a body past
 * --max-response, or past any number (which libcurl would take for a body
 * that ends at the close): refused now, as on the native engine, rather
 * than waited for.  Not for a HEAD, a 1xx, 204 or 304, which have no body
 * whatever their Content-Length says.
 */
static bool
length_past_bound(const struct cstate *s)
{
	long code = 0;
	curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code < 200 || code == 204 || code == 304 ||
	    (s->method.len == 4 && !memcmp(s->method.data, "HEAD", 4)))
		return false;
	for (size_t i = 0; i < s->nrh; i++) {
		const char *name = s->harena.data + s->rh[i].name;
		const char *v = s->harena.data + s->rh[i].value;
		if (strcmp(name, "content-length"))
			continue;
		uint64_t len;
		if (*v && strspn(v, "0123456789") == strlen(v) &&
		    (gk_parse_uint(v, 0, UINT64_MAX, &len) < 0 ||
		    len > s->c->cfg.max_response))
			return true;
	}
	return false;
}

/*
 * The header section libcurl just gave frames its body two ways: two
 * different Content-Lengths, or one with Transfer-Encoding (RFC 9112
 * 6.3: a sign of response splitting, to be handled as an error).  The
 * native engine's parser refuses both.
 */
static bool
ambiguous_length(const struct cstate *s)
{
	const char *len = NULL;
	bool te = false;
	for (size_t i = 0; i < s->nrh; i++) {
		const char *name = s->harena.data + s->rh[i].name;
		const char *v = s->harena.data + s->rh[i].value;
		if (!strcmp(name, "transfer-encoding"))
			te = true;
		else if (!strcmp(name, "content-length")) {
			if (len && strcmp(len, v))
				return true;
			len = v;
		}
	}
	return te && len;
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	struct cstate *s = arg;
	size_t len = size * n;
	if (len >= 5 && !strncmp(p, "HTTP/", 5)) {
		/* A new status line (after 100 Continue, or a redirect):
		 * only the last response's headers count. */
		s->nrh = 0;
		s->harena.len = 0;
		s->in_trailers = false;
		s->invalid = false;
		return len;
	}
	if (s->in_trailers)
		return len; /* a trailer field: dropped (RFC 9110 6.5.1) */
	if (len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n')) {
		/* the end of the header section */
		s->in_trailers = true;
		if (ambiguous_length(s))
			s->invalid = true;
		if (s->invalid)
			return 0; /* aborts the transfer */
		if (length_past_bound(s)) {
			s->too_big = true;
			return 0;
		}
		return len;
	}
	if ((p[0] == ' ' || p[0] == '\t') && s->nrh) {
		/* obs-fold: the line goes on the last value, after one SP
		 * (RFC 9112 5.2), as http_parser does on the native engine;
		 * that value ends the arena. */
		const char *v = p, *end = p + len;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
		    end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (!gk_utf8_valid(v, (size_t)(end - v)))
			s->invalid = true; /* as store_header */
		gk_buf *a = &s->harena;
		a->len--; /* its NUL */
		gk_buf_addc(a, ' ');
		gk_buf_add(a, v, (size_t)(end - v));
		gk_buf_addc(a, 0);
		return len;
	}
	char *colon = memchr(p, ':', len);
	if (!colon)
		return len;
	store_header(s, p, (size_t)(colon - p), colon + 1, p + len);
	return len;
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	struct cstate *s = arg;
	size_t len = size * n;
	if (s->response.len + len > s->c->cfg.max_response) {
		s->too_big = true;
		return 0; /* aborts the transfer */
	}
	gk_buf_add(&s->response, p, len);
	return len;
}

static CURL *
easy_get(gk_client *c)
{
	if (c->nspare) {
		CURL *e = c->spare[--c->nspare];
		curl_easy_reset(e);
		return e;
	}
	return curl_easy_init();
}

static void
easy_put(gk_client *c, CURL *e)
{
	/* Reusing easy handles keeps their DNS and connection caches. */
	if (c->nspare < 64)
		c->spare[c->nspare++] = e;
	else
		curl_easy_cleanup(e);
}

static void reset_try(struct cstate *s);
static void try_once(struct cstate *s);

static bool
idempotent(const char *m)
{
	static const char *const ok[] = {"GET", "HEAD", "PUT", "DELETE",
	    "OPTIONS", "TRACE", NULL};
	for (int i = 0; ok[i]; i++)
		if (!strcmp(m, ok[i]))
			return true;
	return false;
}

/* The traceparent of a try: a new client span in the request's trace,
 * with its sampled and random flags. */
static void
client_traceparent(struct cstate *s, char tp[56])
{
	gk_random_id(s->span_id, 8);
	gk_traceparent_format_flags(s->trace_id, s->span_id,
	    (uint8_t)(s->sampled | s->random << 1), tp);
}

static void
emit_client_span(struct cstate *s, int status, const char *method,
    const char *url)
{
	if (!s->has_trace || !s->sampled)
		return;
	char hex[33];
	gk_jw *w = gk_event_begin("span");
	gk_hex(s->trace_id, 16, hex);
	gk_jw_key(w, "trace_id");
	gk_jw_cstr(w, hex);
	gk_hex(s->span_id, 8, hex);
	gk_jw_key(w, "span_id");
	gk_jw_cstr(w, hex);
	gk_hex(s->parent, 8, hex);
	gk_jw_key(w, "parent_id");
	gk_jw_cstr(w, hex);
	gk_jw_key(w, "name");
	gk_jw_cstr(w, method);
	gk_jw_key(w, "kind");
	gk_jw_cstr(w, "client");
	gk_jw_key(w, "start_us");
	gk_jw_int(w, (int64_t)(gk_realtime_us() -
	    (gk_monotonic_us() - s->start_us)));
	gk_jw_key(w, "duration_us");
	gk_jw_int(w, (int64_t)(gk_monotonic_us() - s->start_us));
	gk_jw_key(w, "status");
	gk_jw_cstr(w, status >= 500 || status == 0 ? "error" : "ok");
	gk_jw_key(w, "attrs");
	gk_jw_object(w);
	gk_jw_key(w, "http.request.method");
	gk_jw_cstr(w, method);
	gk_jw_key(w, "url.full");
	gk_jw_cstr(w, url);
	if (s->be) {
		const char *a = s->be->ep.addr;
		const char *colon = strrchr(a, ':');
		gk_jw_key(w, "server.address");
		gk_jw_string(w, a, colon ? (size_t)(colon - a) : strlen(a));
		if (colon) {
			gk_jw_key(w, "server.port");
			gk_jw_int(w, atoi(colon + 1));
		}
	}
	if (status) {
		gk_jw_key(w, "http.response.status_code");
		gk_jw_int(w, status);
	}
	gk_jw_object_end(w);
	gk_event_end();
}

/* The slot of the header name (p, n), lowercase as store_header keeps
 * names, in the table of upstream_line (mask + 1 slots, a power of two, at least twice
 * the headers): 1 + the index of the first header of that name, or 0. */
static size_t *
name_slot(const struct cstate *s, size_t *tab, size_t mask, const char *p,
    size_t n)
{
	for (size_t i = (size_t)gk__hash_bytes(p, n) & mask;;
	     i = (i + 1) & mask) {
		if (!tab[i])
			return &tab[i];
		const char *name = s->harena.data + s->rh[tab[i] - 1].name;
		if (!strncmp(name, p, n) && !name[n])
			return &tab[i];
	}
}

/* The wire line of the upstream's answer (status, and the headers and
 * body s holds) to the request whose id is id, appended to b. */
static void
upstream_line(struct cstate *s, gk_json id, int status, gk_buf *b)
{
	gk_buf_adds(b, "{\"id\":");
	gk_buf_add(b, id.p, id.len);
	gk_buf_adds(b, ",\"status\":");
	gk_buf_adduint(b, (uint64_t)status);
	gk_buf_adds(b, ",\"headers\":{");
	/* Repeated headers become arrays, in order.  Hop-by-hop ones stay
	 * behind, and so do those the upstream's Connection header names
	 * (RFC 9110 7.6.1).  Content-Length is the framing of a body the
	 * stage above frames again, but the answer to a HEAD and a 304 have
	 * no body: there it states the length of the representation, which
	 * gk-listener passes on (RFC 9110 8.6, 9.3.2: a HEAD answer carries
	 * the fields a GET's would). */
	bool keep_length =
	    status == 304 || !strcmp(gk_buf_cstr(&s->method), "HEAD");
	/* An upstream may send thousands of headers (http_parser bounds the
	 * section at 80 KiB): the headers of one name are linked through a
	 * table by name, and Connection's options are a set, so that this is
	 * linear, not quadratic. */
	const char *arena = s->harena.data;
	size_t n = s->nrh, cap = 32, small[32];
	while (cap < 2 * n)
		cap <<= 1;
	size_t *tab = small;
	if (cap > 32)
		tab = gk_xcalloc(cap, sizeof *tab);
	else
		memset(small, 0, sizeof small);
	for (size_t i = 0; i < n; i++) {
		struct hdr *h = &s->rh[i];
		const char *name = arena + h->name;
		size_t *slot = name_slot(s, tab, cap - 1, name, strlen(name));
		h->next = 0;
		h->first = !*slot;
		if (h->first) {
			*slot = i + 1;
			h->tail = i;
			h->count = 1;
		} else {
			struct hdr *f = &s->rh[*slot - 1];
			s->rh[f->tail].next = i;
			f->tail = i;
			f->count++;
		}
	}
	gk_buf conn = {0};
	/* 1 + the first Connection header, then its chain (0 ends it). */
	for (size_t j = *name_slot(s, tab, cap - 1, "connection", 10); j;) {
		const char *v = arena + s->rh[j - 1].value;
		connection_options(&conn, v, strlen(v));
		j = s->rh[j - 1].next ? s->rh[j - 1].next + 1 : 0;
	}
	if (tab != small)
		free(tab);
	struct option_set listed;
	option_set_init(&listed, conn.len ? gk_buf_cstr(&conn) : "");
	bool first = true;
	for (size_t i = 0; i < n; i++) {
		const struct hdr *h = &s->rh[i];
		if (!h->first)
			continue;
		const char *name = arena + h->name;
		size_t nl = strlen(name);
		if ((hop_by_hop(name, nl) &&
		     !(keep_length && !strcmp(name, "content-length"))) ||
		    option_set_has(&listed, name, nl))
			continue;
		if (!first)
			gk_buf_addc(b, ',');
		first = false;
		gk_json_quote(b, name, nl);
		gk_buf_addc(b, ':');
		if (h->count > 1)
			gk_buf_addc(b, '[');
		for (size_t j = i;;) {
			const char *value = arena + s->rh[j].value;
			gk_json_quote(b, value, strlen(value));
			if (!(j = s->rh[j].next))
				break;
			gk_buf_addc(b, ',');
		}
		if (h->count > 1)
			gk_buf_addc(b, ']');
	}
	option_set_free(&listed);
	gk_buf_free(&conn);
	gk_buf_addc(b, '}');
	if (s->response.len) {
		if (gk_utf8_valid(s->response.data, s->response.len)) {
			gk_buf_adds(b, ",\"body\":");
			gk_json_quote(b, s->response.data, s->response.len);
		} else {
			gk_buf_adds(b, ",\"body_b64\":\"");
			gk_base64_encode(b, s->response.data, s->response.len);
			gk_buf_addc(b, '"');
		}
	}
	gk_buf_addc(b, '}');
}

static void
answer_from_upstream(struct cstate *s, int status)
{
	gk_buf b = {0};
	upstream_line(s, gk_msg_get(gk_req_msg(s->req), "id"), status, &b);
	gk_req *req = s->req;
	if (b.len > GK_CLIENT_MAX_WIRE_LINE) {
		/* The stage above would drop the line (gk-wire(5)) and the
		 * request would wait for its deadline. */
		gk_buf_free(&b);
		gk_answer(req, 502, NULL, "bad gateway\n",
		    "upstream response too large");
		return;
	}
	gk_wire_error err;
	gk_msg *m = gk_msg_adopt(&b, &err);
	if (!m) {
		gk_answer(req, 502, NULL, "bad gateway\n", "invalid upstream response");
		return;
	}
	gk_pass(req, m);
}

/* ---- outlier ejection ---- */

static void
on_eject_timer(gk_loop *loop, void *arg)
{
	gk_client *c = arg;
	uint64_t now = gk_loop_now(loop), next = 0;
	for (size_t i = 0; i < gk_balancer_size(c->bal); i++) {
		gk_backend *be = gk_balancer_at(c->bal, i);
		if (!be->ejected_until_ms)
			continue;
		if (be->ejected_until_ms <= now) {
			be->ejected_until_ms = 0;
			gk_gauge_set(be->m_ejected, be->check_failed);
			char a[300];
			snprintf(a, sizeof a, "endpoint=%s", be->ep.addr);
			gk_log(GK_INFO, "endpoint back in rotation", a);
		} else if (!next || be->ejected_until_ms < next)
			next = be->ejected_until_ms;
	}
	if (next)
		gk_timer_start(loop, &c->eject_timer, next - now, on_eject_timer,
		    c);
}

/* be is in the current set (not one that left it). */
static bool
in_set(gk_client *c, const gk_backend *be)
{
	for (size_t i = 0; i < gk_balancer_size(c->bal); i++)
		if (gk_balancer_at(c->bal, i) == be)
			return true;
	return false;
}

/* An endpoint of the current set has the address addr. */
static bool
addr_in_set(gk_client *c, const char *addr)
{
	for (size_t i = 0; i < gk_balancer_size(c->bal); i++)
		if (!strcmp(gk_balancer_at(c->bal, i)->ep.addr, addr))
			return true;
	return false;
}

static void
eject_maybe(gk_client *c, gk_backend *be)
{
	if (!c->cfg.eject_after || be->consecutive_failures < c->cfg.eject_after)
		return;
	uint64_t now = gk_loop_now(c->loop);
	if (!gk_backend_available(be, now))
		return; /* already out (a late answer of an ejected one) */
	if (!in_set(c, be))
		return; /* no longer in the set */
	if (!room_to_take_out(c, now))
		return; /* never more than --max-ejected of the set */
	be->ejections++;
	be->consecutive_failures = 0;
	uint64_t ms = c->cfg.eject_base_ms * be->ejections;
	if (ms > GK_CLIENT_MAX_EJECT_MS)
		ms = GK_CLIENT_MAX_EJECT_MS;
	be->ejected_until_ms = now + ms;
	gk_counter_add(be->m_ejections, 1);
	gk_gauge_set(be->m_ejected, 1);
	if (!gk_timer_armed(&c->eject_timer) ||
	    c->eject_timer.when_ms > be->ejected_until_ms)
		gk_timer_start(c->loop, &c->eject_timer, ms, on_eject_timer, c);
	char a[300], t[48], k[32];
	snprintf(a, sizeof a, "endpoint=%s", be->ep.addr);
	snprintf(t, sizeof t, "for_ms=%llu", (unsigned long long)ms);
	snprintf(k, sizeof k, "ejections=%u", be->ejections);
	gk_log(GK_WARN, "endpoint ejected", a, t, k);
}

/* ---- the end of a try ---- */

static void
on_retry_timer(gk_loop *loop, void *arg)
{
	(void)loop;
	try_once(arg);
}

static bool
retry_status(const gk_client *c, int status)
{
	for (int i = 0; i < c->cfg.nretry_on; i++)
		if (c->cfg.retry_on[i] == status)
			return true;
	return false;
}

/* be for the next try (its reference taken); NULL: the request is done
 * with every endpoint it tried. */
static void
set_backend(struct cstate *s, gk_backend *be)
{
	if (be)
		gk_backend_ref(be);
	gk_backend *old = s->be;
	s->be = be;
	bool keep = old && be && old != be &&
	    s->ntried < GK_CLIENT_RETRIES_MAX;
	for (unsigned i = 0; keep && i < s->ntried; i++)
		keep = s->tried[i] != old;
	if (keep)
		s->tried[s->ntried++] = old; /* its reference kept */
	else
		gk_backend_unref(old);
	if (!be) {
		for (unsigned i = 0; i < s->ntried; i++)
			gk_backend_unref(s->tried[i]);
		s->ntried = 0;
	}
}

/* The URL of a try, for spans: http://ADDR/PATH?QUERY. */
static void
try_url(struct cstate *s, gk_buf *url)
{
	gk_msg *m = gk_req_msg(s->req);
	gk_buf tmp = {0};
	gk_buf_adds(url, "http://");
	gk_buf_adds(url, s->be->ep.addr);
	if (gk_json_string(gk_msg_get(m, "path"), url) < 0)
		gk_buf_addc(url, '/');
	if (gk_json_string(gk_msg_get(m, "query"), &tmp) == 0 && tmp.len) {
		gk_buf_addc(url, '?');
		gk_buf_add(url, tmp.data, tmp.len);
	}
	gk_buf_free(&tmp);
}

/* The client span of the try that ends the request, when sampled;
 * status 0 for no answer. */
static void
try_span(struct cstate *s, int status)
{
	if (!s->sampled)
		return;
	char *url = NULL;
	gk_buf u = {0};
	if (s->native) {
		try_url(s, &u);
		url = gk_buf_cstr(&u);
	} else if (s->easy)
		curl_easy_getinfo(s->easy, CURLINFO_EFFECTIVE_URL, &url);
	emit_client_span(s, status, gk_buf_cstr(&s->method), url ? url : "");
	gk_buf_free(&u);
}

enum try_end { TRY_ANSWERED, TRY_TIMEDOUT, TRY_BROKEN };

/*
 * The end of a try on either engine: code is the upstream's status (when
 * answered); unsent is true when nothing reached the upstream; why names a
 * broken try.
 */
static void
finish_try(struct cstate *s, long code, enum try_end how, bool unsent,
    const char *why, long connects)
{
	gk_client *c = s->c;
	s->running = false;
	if (how == TRY_ANSWERED && s->invalid) {
		how = TRY_BROKEN;
		why = "invalid upstream response";
	}
	uint64_t now_us = gk_monotonic_us();
	uint64_t took = now_us - s->try_start_us;
	if (connects)
		gk_counter_add(c->m_connects, (double)connects);
	gk_backend *be = s->be;
	gk_balancer_finished(be, now_us, took);
	gk_histogram_observe(be->m_duration, (double)took / 1e6);
	bool transport_error = how != TRY_ANSWERED;
	bool failed = transport_error || code >= 500;
	if (failed) {
		gk_counter_add(be->m_errors, 1);
		be->consecutive_failures++;
		eject_maybe(c, be);
	} else
		be->consecutive_failures = 0;

	/*
	 * Safe to try again?  Nothing reached the upstream (no connection),
	 * or an idempotent method got an answer the operator named in
	 * --retry-on: the upstream's status, or the one gk-client answers
	 * for a broken connection (502) or a try that timed out (504).
	 */
	int would = (int)code;
	if (transport_error)
		would = how == TRY_TIMEDOUT ? 504 : 502;
	bool retryable = unsent || (s->idempotent && !s->too_big &&
	    !s->not_resent && retry_status(c, would));
	uint64_t deadline = gk_req_deadline(s->req);
	if (retryable && s->tries <= c->cfg.retries) {
		uint64_t cap = c->cfg.backoff_base_ms << (s->tries - 1);
		if (cap > c->cfg.backoff_max_ms)
			cap = c->cfg.backoff_max_ms;
		uint64_t wait = (uint64_t)(gk_random_unit() * (double)cap);
		if (deadline && gk_loop_realtime_ms(c->loop) + wait >= deadline) {
			/* no time left: answer with what we have */
		} else if (!budget_allows(c)) {
			gk_counter_add(c->m_budget_exhausted, 1);
		} else {
			budget_note(c, true);
			gk_counter_add(c->m_retries, 1);
			reset_try(s);
			gk_timer_start(c->loop, &s->retry_timer, wait,
			    on_retry_timer, s);
			return;
		}
	}
	try_span(s, transport_error ? 0 : (int)code);
	if (!transport_error) {
		answer_from_upstream(s, (int)code);
		return;
	}
	if (how == TRY_TIMEDOUT)
		gk_answer(s->req, 504, NULL, "gateway timeout\n",
		    "upstream timeout");
	else if (s->too_big)
		gk_answer(s->req, 502, NULL, "bad gateway\n",
		    "upstream response too large");
	else if (s->not_resent) {
		gk_counter_add(c->m_not_resent, 1);
		gk_answer(s->req, 502, NULL, "bad gateway\n",
		    "upstream closed the connection");
	} else
		gk_answer(s->req, 502, NULL, "bad gateway\n",
		    unsent ? "connect failed" : why);
}

static void
transfer_done(CURL *easy, CURLcode result, void *arg)
{
	struct cstate *s = arg;
	long code = 0, connects = 0;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects);
	if (s->be && s->be->m_pool && !addr_in_set(s->c, s->be->ep.addr)) {
		/* The endpoint left the set while this try ran: its
		 * connection, back in libcurl's cache now, is closed, as
		 * drop_left closed the idle ones then.  (By address: one
		 * that came back is a new backend, with the same pool.) */
		struct sockowner o = {s->c, s->be->m_pool};
		gk_curl_drop_idle(s->c->curl, in_pool, &o);
	}
	bool unsent = result == CURLE_COULDNT_CONNECT ||
	    result == CURLE_COULDNT_RESOLVE_HOST ||
	    (result == CURLE_OPERATION_TIMEDOUT && s->prereqs == 0);
	finish_try(s, code, result == CURLE_OK ? TRY_ANSWERED :
	    result == CURLE_OPERATION_TIMEDOUT ? TRY_TIMEDOUT : TRY_BROKEN,
	    unsent, s->invalid ? "invalid upstream response" :
	    curl_easy_strerror(result), connects);
}

/* ---- the native engine's callbacks ---- */

static void
native_reset(void *arg)
{
	struct cstate *s = arg;
	s->nrh = 0;
	s->harena.len = 0;
	s->invalid = false;
}

/* A header no valid answer has ends the try at the header section, as
 * on_header does on libcurl's: the body is not waited for (an upstream
 * that holds the connection open would hold the try to its deadline). */
static int
native_header(void *arg, const char *name, size_t nl, const char *value,
    size_t vl)
{
	struct cstate *s = arg;
	store_header(s, name, nl, value, value + vl);
	return s->invalid ? -1 : 0;
}

static int
native_body(void *arg, const char *p, size_t n)
{
	struct cstate *s = arg;
	if (s->response.len + n > s->c->cfg.max_response) {
		s->too_big = true;
		return -1;
	}
	gk_buf_add(&s->response, p, n);
	return 0;
}

static void
native_done(void *arg, enum gk_uh_result r, int status, bool sent)
{
	struct cstate *s = arg;
	const char *why = "upstream closed the connection";
	enum try_end how = TRY_BROKEN;
	switch (r) {
	case GK_UH_OK:
		how = TRY_ANSWERED;
		break;
	case GK_UH_TIMEOUT:
		how = TRY_TIMEDOUT;
		break;
	case GK_UH_NOT_RESENT:
		s->not_resent = true;
		break;
	case GK_UH_BAD:
		why = "invalid upstream response";
		break;
	case GK_UH_ABORTED:
		s->too_big = true; /* (native_body refused, or the length) */
		break;
	case GK_UH_REFUSED:
	case GK_UH_CLOSED:
		break;
	}
	finish_try(s, status, how, !sent, why, (long)s->ux.connects);
}

static const gk_uh_ops native_ops = {
	native_reset, native_header, native_body, native_done,
};

static void
reset_try(struct cstate *s)
{
	gk_client *c = s->c;
	if (s->easy) {
		if (s->running)
			gk_curl_cancel(c->curl, s->easy);
		easy_put(c, s->easy);
		s->easy = NULL;
	}
	if (s->native)
		gk_uh_cancel(&s->ux);
	/* A try cut short (deadline, client gone) took at least this long:
	 * a sample for the peak EWMA like any other. */
	if (s->running && s->be) {
		uint64_t now = gk_monotonic_us();
		gk_balancer_finished(s->be, now, now - s->try_start_us);
	}
	s->running = false;
	curl_slist_free_all(s->headers);
	s->headers = NULL;
	s->response.len = 0;
	s->too_big = false;
	s->invalid = false;
	s->prereqs = 0;
	s->not_resent = false;
	s->nrh = 0;
	s->harena.len = 0;
	s->in_trailers = false;
}

/*
 * Called by libcurl each time it is about to send the request.  A second
 * time in one try means a reused connection closed before any answer came
 * back and libcurl wants to send it again on a new one: for a method that
 * is not idempotent the upstream may have acted on the first, so refuse.
 */
static int
on_prereq(void *arg, char *ip, char *local_ip, int port, int local_port)
{
	(void)ip;
	(void)local_ip;
	(void)port;
	(void)local_port;
	struct cstate *s = arg;
	if (++s->prereqs > 1 && !s->idempotent) {
		s->not_resent = true;
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

static void
add_header(struct cstate *s, const char *line)
{
	struct curl_slist *l = curl_slist_append(s->headers, line);
	if (!l)
		gk_fatal(GK_EXIT_NOMEM, "out of memory");
	s->headers = l;
}

/* A field line goes upstream only when it cannot split into more. */
static bool
one_line(const char *p, size_t n)
{
	return !memchr(p, '\r', n) && !memchr(p, '\n', n) && !memchr(p, 0, n);
}

/* Append the values of the request's Via (a string, or an array for
 * repeated lines) to vals, comma-separated, as RFC 9110 5.3 combines
 * field lines; a value that would split the line, or a blank one, is
 * left out. */
static void
via_values(gk_buf *vals, gk_json v)
{
	gk_json one;
	gk_json_iter vi;
	bool arr = v.type == GK_JSON_ARRAY;
	if (arr)
		gk_json_iter_init(&vi, v);
	while (arr ? gk_json_iter_next(&vi, NULL, &one) : (one = v, true)) {
		size_t at = vals->len;
		if (at)
			gk_buf_adds(vals, ", ");
		size_t start = vals->len;
		bool blank = true;
		if (gk_json_string(one, vals) == 0)
			for (size_t i = start; i < vals->len && blank; i++)
				blank = vals->data[i] == ' ' ||
				        vals->data[i] == '\t';
		if (blank || !one_line(vals->data + start, vals->len - start))
			vals->len = at;
		if (!arr)
			break;
	}
}

/*
 * The request's headers that go upstream, minus hop-by-hop ones and those
 * gk-client writes itself: to libcurl's list, or (out) as HTTP/1.1 lines.
 * Via, last: the request's Via values, then this proxy (RFC 9110 7.6.3),
 * as one line, the order of the hops kept.
 * Returns true when a Host header was written.
 */
static bool
request_headers(struct cstate *s, gk_buf *tmp, gk_buf *out)
{
	gk_client *c = s->c;
	gk_msg *m = gk_req_msg(s->req);
	gk_json h = gk_msg_get(m, "headers");
	gk_json_iter it;
	gk_json k, v;
	gk_json_iter_init(&it, h);
	gk_buf line = c->line;
	bool host = false;
	/* The options of the Connection header name more hop-by-hop
	 * headers (RFC 9110 7.6.1): they stay here too. */
	gk_buf conn = {0};
	gk_json cv = gk_json_member(h, "connection");
	if (cv.type == GK_JSON_STRING || cv.type == GK_JSON_ARRAY) {
		gk_json one;
		gk_json_iter ci;
		bool arr = cv.type == GK_JSON_ARRAY;
		if (arr)
			gk_json_iter_init(&ci, cv);
		while (arr ? gk_json_iter_next(&ci, NULL, &one) :
		    (one = cv, true)) {
			tmp->len = 0;
			if (gk_json_string(one, tmp) == 0)
				connection_options(&conn, tmp->data, tmp->len);
			if (!arr)
				break;
		}
	}
	struct option_set listed;
	option_set_init(&listed, conn.len ? gk_buf_cstr(&conn) : "");
	gk_buf vals = {0}; /* of Via */
	while (h.type == GK_JSON_OBJECT && gk_json_iter_next(&it, &k, &v)) {
		tmp->len = 0;
		gk_json_string(k, tmp);
		const char *name = gk_buf_cstr(tmp);
		size_t nl = tmp->len;
		if (hop_by_hop(name, nl) || !strcmp(name, "x-gk-timeout-ms") ||
		    (s->has_trace && !strcmp(name, "traceparent")) ||
		    option_set_has(&listed, name, nl))
			continue;
		if (!strcmp(name, "host") && !c->cfg.preserve_host)
			continue;
		if (!strcmp(name, "via")) {
			via_values(&vals, v);
			continue;
		}
		gk_json one;
		gk_json_iter vi;
		bool arr = v.type == GK_JSON_ARRAY;
		if (arr)
			gk_json_iter_init(&vi, v);
		while (arr ? gk_json_iter_next(&vi, NULL, &one) : (one = v, true)) {
			line.len = 0;
			gk_buf_add(&line, name, nl);
			gk_buf_adds(&line, ": ");
			gk_json_string(one, &line);
			size_t vi = nl + 2;
			while (vi < line.len && (line.data[vi] == ' ' ||
			    line.data[vi] == '\t'))
				vi++;
			if (!out && vi == line.len) {
				/* An empty value: libcurl takes "name:" for
				 * "do not send name", "name;" for it empty. */
				line.len = nl;
				gk_buf_addc(&line, ';');
				add_header(s, gk_buf_cstr(&line));
			} else if (!out)
				add_header(s, gk_buf_cstr(&line));
			else if (one_line(line.data, line.len)) {
				/* (no header splitting upstream) */
				gk_buf_add(out, line.data, line.len);
				gk_buf_adds(out, "\r\n");
				host |= !strcmp(name, "host");
			}
			if (!arr)
				break;
		}
	}
	option_set_free(&listed);
	gk_buf_free(&conn);
	/* The wire does not say which HTTP version the client spoke: 1.1,
	 * the version gk-listener answers in. */
	line.len = 0;
	gk_buf_adds(&line, "Via: ");
	if (vals.len) {
		gk_buf_add(&line, vals.data, vals.len);
		gk_buf_adds(&line, ", ");
	}
	gk_buf_adds(&line, "1.1 ");
	gk_buf_adds(&line, c->cfg.via);
	if (out) {
		gk_buf_add(out, line.data, line.len);
		gk_buf_adds(out, "\r\n");
	} else
		add_header(s, gk_buf_cstr(&line));
	c->line = line;
	gk_buf_free(&vals);
	return host;
}

/* The request target, percent-encoding what HTTP/1.1 cannot carry, and
 * '#', which would end it at a fragment (libcurl drops what follows). */
static void
add_target(gk_buf *out, const char *p, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch <= 0x20 || ch >= 0x7f || ch == '#') {
			gk_buf_addc(out, '%');
			gk_buf_addc(out, hex[ch >> 4]);
			gk_buf_addc(out, hex[ch & 15]);
		} else
			gk_buf_addc(out, (char)ch);
	}
}

/* The request is OPTIONS with the target "*" (path, no query). */
static bool
asterisk_form(const char *method, const gk_buf *path)
{
	return path->len == 1 && path->data[0] == '*' &&
	    !strcmp(method, "OPTIONS");
}

/* A try on the native engine: the request rendered in one buffer. */
static void
try_native(struct cstate *s, gk_backend *be, uint64_t timeout,
    const char *remaining)
{
	gk_client *c = s->c;
	gk_msg *m = gk_req_msg(s->req);
	gk_buf *b = &s->reqbuf, tmp = c->tmp;
	const char *meth = gk_buf_cstr(&s->method);
	bool get = !strcmp(meth, "GET"), head = !strcmp(meth, "HEAD");
	b->len = 0;
	gk_buf_add(b, s->method.data, s->method.len);
	gk_buf_addc(b, ' ');
	tmp.len = 0;
	if (gk_json_string(gk_msg_get(m, "path"), &tmp) < 0)
		tmp.len = 0;
	/* OPTIONS * goes on as it came (RFC 9112 3.2.4), no slash before. */
	if (!asterisk_form(meth, &tmp) && (!tmp.len || tmp.data[0] != '/'))
		gk_buf_addc(b, '/');
	add_target(b, tmp.data, tmp.len);
	tmp.len = 0;
	if (gk_json_string(gk_msg_get(m, "query"), &tmp) == 0 && tmp.len) {
		gk_buf_addc(b, '?');
		add_target(b, tmp.data, tmp.len);
	}
	gk_buf_adds(b, " HTTP/1.1\r\n");
	size_t at = b->len;
	bool host = request_headers(s, &tmp, b);
	c->tmp = tmp;
	if (!host) {
		/* Host first, as libcurl writes it. */
		size_t hl = strlen(be->ep.addr) + 8;
		gk_buf_reserve(b, hl);
		memmove(b->data + at + hl, b->data + at, b->len - at);
		memcpy(b->data + at, "Host: ", 6);
		memcpy(b->data + at + 6, be->ep.addr, hl - 8);
		memcpy(b->data + at + hl - 2, "\r\n", 2);
		b->len += hl;
	}
	if (remaining[0]) {
		gk_buf_adds(b, remaining);
		gk_buf_adds(b, "\r\n");
	}
	if (s->has_trace) {
		char tp[56];
		client_traceparent(s, tp);
		gk_buf_adds(b, "traceparent: ");
		gk_buf_adds(b, tp);
		gk_buf_adds(b, "\r\n");
	}
	bool body = !head && (s->body.len || !get);
	if (body) {
		gk_buf_adds(b, "Content-Length: ");
		gk_buf_adduint(b, (uint64_t)s->body.len);
		gk_buf_adds(b, "\r\n");
	}
	gk_buf_adds(b, "\r\n");
	if (body && s->body.len)
		gk_buf_add(b, s->body.data, s->body.len);

	s->native = true;
	s->ux.max_body = c->cfg.max_response;
	s->try_start_us = gk_monotonic_us();
	gk_balancer_started(be);
	s->running = true;
	gk_uh_start(c->uh, &s->ux, be->ep.addr, b->data, b->len,
	    s->idempotent, head, timeout, &native_ops, s, &s->so);
}

static void
try_once(struct cstate *s)
{
	gk_client *c = s->c;
	gk_req *req = s->req;
	gk_msg *m = gk_req_msg(req);
	uint64_t now = gk_loop_now(c->loop);
	gk_buf key = {0};
	if (c->cfg.key)
		gk_key_of(c->cfg.key, m, &key);
	/* Every endpoint tried so far is avoided: the one in s->be (this
	 * request's last) and those before it. */
	gk_backend *avoid[GK_CLIENT_RETRIES_MAX + 1];
	size_t navoid = s->ntried;
	memcpy(avoid, s->tried, navoid * sizeof *avoid);
	if (s->be)
		avoid[navoid++] = s->be;
	gk_backend *be = gk_balancer_pick(c->bal, now, key.data, key.len,
	    avoid, navoid);
	gk_buf_free(&key);
	if (!be) {
		gk_counter_add(c->m_no_ep, 1);
		gk_answer(req, 503, (const gk_header[]){{"retry-after", "1"}, {0}},
		    "service unavailable: no endpoints\n", "no endpoints");
		return;
	}
	set_backend(s, be);
	s->so = (struct sockowner){c, be->m_pool};
	s->tries++;
	backend_metrics(c, be);
	gk_counter_add(be->m_requests, 1);

	uint64_t timeout = c->cfg.try_timeout_ms;
	uint64_t deadline = gk_req_deadline(req);
	char remaining[48] = "";
	if (deadline) {
		uint64_t real = gk_loop_realtime_ms(c->loop);
		uint64_t left = deadline > real ? deadline - real : 1;
		if (!timeout || left < timeout)
			timeout = left;
	}
	/* The next stack honours what is left of ours: of the deadline, or
	 * of this try when --try-timeout ends it first (past it nobody
	 * waits for the answer). */
	if (timeout)
		snprintf(remaining, sizeof remaining, "x-gk-timeout-ms: %llu",
		    (unsigned long long)timeout);
	s->native = false;
	if (c->uh && !c->cfg.http2 && !has_tag(be->ep.tags, "h2") &&
	    gk_uh_handles(c->uh, be->ep.addr)) {
		try_native(s, be, timeout, remaining);
		return;
	}

	gk_buf url = c->url, tmp = c->tmp;
	url.len = tmp.len = 0;
	gk_buf_adds(&url, "http://");
	gk_buf_adds(&url, be->ep.addr);
	/* The path begins with /, as on the native engine; OPTIONS * is
	 * sent with the target * (RFC 9112 3.2.4). */
	if (gk_json_string(gk_msg_get(m, "path"), &tmp) < 0)
		tmp.len = 0;
	bool asterisk = asterisk_form(gk_buf_cstr(&s->method), &tmp);
	if (!asterisk) {
		if (!tmp.len || tmp.data[0] != '/')
			gk_buf_addc(&url, '/');
		add_target(&url, tmp.data, tmp.len);
	}
	tmp.len = 0;
	if (gk_json_string(gk_msg_get(m, "query"), &tmp) == 0 && tmp.len) {
		gk_buf_addc(&url, '?');
		add_target(&url, tmp.data, tmp.len);
	}
	CURL *e = easy_get(c);
	s->easy = e;
	curl_easy_setopt(e, CURLOPT_URL, gk_buf_cstr(&url));
	if (asterisk)
		curl_easy_setopt(e, CURLOPT_REQUEST_TARGET, "*");
	/* The path as it came, as on the native engine: dot segments are
	 * the upstream's to resolve. */
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	set_http_version(c, be, e);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)c->cfg.connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, s);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	/* Upstreams are reached directly: no http_proxy from the
	 * environment (and no getenv of it for every request). */
	curl_easy_setopt(e, CURLOPT_PROXY, "");

	if (timeout)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout);

	const char *meth = gk_buf_cstr(&s->method);
	bool get = !strcmp(meth, "GET"), head = !strcmp(meth, "HEAD");
	if (head)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (s->body.len || !get) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS,
		    s->body.data ? s->body.data : "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)s->body.len);
		if (strcmp(meth, "POST"))
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, meth);
	}

	/* Request headers, minus hop-by-hop ones; ours for tracing. */
	request_headers(s, &tmp, NULL);
	/* Headers libcurl would add of its own: none goes upstream but
	 * the request's (an empty one only disables libcurl's). */
	add_header(s, "Expect:");
	add_header(s, "Accept:");
	add_header(s, "Content-Type:");
	if (remaining[0])
		add_header(s, remaining);
	if (s->has_trace) {
		char tp[56], tl[80];
		client_traceparent(s, tp);
		snprintf(tl, sizeof tl, "traceparent: %s", tp);
		add_header(s, tl);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
	c->url = url;
	c->tmp = tmp;

	s->try_start_us = gk_monotonic_us();
	gk_balancer_started(be);
	s->running = true;
	if (gk_curl_start(c->curl, e, transfer_done, s) < 0) {
		s->running = false;
		gk_balancer_finished(be, gk_monotonic_us(), 0);
		gk_answer(req, 502, NULL, "bad gateway\n", "unable to start transfer");
	}
}

static int
unhex_id(gk_json v, uint8_t *out, size_t n)
{
	gk_buf b = {0};
	int rc = -1;
	if (gk_json_string(v, &b) == 0 && b.len == 2 * n) {
		rc = 0;
		for (size_t i = 0; i < n && rc == 0; i++) {
			unsigned x;
			char two[3] = {b.data[2 * i], b.data[2 * i + 1], 0};
			if (!isxdigit((unsigned char)two[0]) ||
			    !isxdigit((unsigned char)two[1]) ||
			    sscanf(two, "%2x", &x) != 1)
				rc = -1;
			else
				out[i] = (uint8_t)x;
		}
	}
	gk_buf_free(&b);
	return rc;
}

/*
 * Why the request cannot go upstream as it is, or NULL.  Its method and
 * header names are written as they are: one that is not a token, or a
 * value with a control character (CR, LF), would split the request or
 * bend its framing at the upstream (a name "transfer-encoding " that
 * some servers read as Transfer-Encoding).  gk-listener sends none, but
 * a stage between may make one.
 */
static const char *
unfit_request(gk_msg *m, const gk_buf *method, gk_buf *tmp)
{
	if (!gk_http_field_name(method->data, method->len))
		return "method is not a token";
	gk_json h = gk_msg_get(m, "headers"), k, v, one;
	gk_json_iter it, vi;
	if (h.type != GK_JSON_OBJECT)
		return NULL;
	gk_json_iter_init(&it, h);
	while (gk_json_iter_next(&it, &k, &v)) {
		tmp->len = 0;
		if (gk_json_string(k, tmp) < 0 ||
		    !gk_http_field_name(tmp->data, tmp->len))
			return "header name is not a token";
		bool arr = v.type == GK_JSON_ARRAY;
		if (arr)
			gk_json_iter_init(&vi, v);
		while (arr ? gk_json_iter_next(&vi, NULL, &one) :
		    (one = v, true)) {
			tmp->len = 0;
			if (gk_json_string(one, tmp) < 0)
				return "header value is not a string";
			if (!gk_http_field_value(tmp->data, tmp->len))
				return "control character in header value";
			if (!arr)
				break;
		}
	}
	return NULL;
}

void
gk_client_request(gk_client *c, gk_req *req)
{
	struct cstate *s = gk_req_state(req);
	memset(s, 0, sizeof *s);
	s->c = c;
	s->req = req;
	s->start_us = gk_monotonic_us();
	gk_msg *m = gk_req_msg(req);
	if (gk_json_string(gk_msg_get(m, "method"), &s->method) < 0 ||
	    !s->method.len) {
		s->method.len = 0;
		gk_buf_adds(&s->method, "GET");
	}
	s->idempotent = idempotent(gk_buf_cstr(&s->method));
	const char *why = unfit_request(m, &s->method, &c->tmp);
	if (why) {
		gk_answer(req, 400, NULL, "bad request\n", why);
		return;
	}
	if (gk_msg_body(m, &s->body, &why) < 0) {
		gk_answer(req, 400, NULL, "bad request\n", why);
		return;
	}
	gk_json tr = gk_msg_get(m, "trace");
	if (tr.type == GK_JSON_OBJECT &&
	    unhex_id(gk_json_member(tr, "trace_id"), s->trace_id, 16) == 0 &&
	    unhex_id(gk_json_member(tr, "span_id"), s->parent, 8) == 0) {
		s->has_trace = true;
		s->sampled = gk_json_member(tr, "sampled").type == GK_JSON_TRUE;
		s->random = gk_json_member(tr, "random").type == GK_JSON_TRUE;
	}
	budget_note(c, false);
	try_once(s);
}

void
gk_client_done(gk_client *c, gk_req *req, int status)
{
	struct cstate *s = gk_req_state(req);
	if (!s->c)
		return;
	gk_timer_stop(c->loop, &s->retry_timer);
	uint64_t deadline = gk_req_deadline(req);
	if (s->running && s->be && (status == 504 || (deadline &&
	    gk_loop_realtime_ms(c->loop) + 5 >= deadline))) {
		/* The request's deadline came while the try waited for its
		 * answer (the runtime's 504 here, or a cancel from a stage
		 * above whose timer fired first): a try that timed out, for
		 * the metrics and outlier ejection, as when its own timer
		 * fires first.  The 5 ms: timers in whole milliseconds on
		 * the monotonic clock fire just before a real-time deadline.
		 * A client that went away before says nothing of the
		 * endpoint. */
		gk_backend *be = s->be;
		gk_counter_add(be->m_errors, 1);
		gk_histogram_observe(be->m_duration,
		    (double)(gk_monotonic_us() - s->try_start_us) / 1e6);
		be->consecutive_failures++;
		eject_maybe(c, be);
	}
	/* A try cut short is the request's last: its span, unanswered. */
	if (s->running && s->be)
		try_span(s, 0);
	/* Answered by a deadline or the client left: stop the transfer. */
	reset_try(s);
	set_backend(s, NULL);
	gk_buf_free(&s->body);
	gk_buf_free(&s->response);
	gk_buf_free(&s->method);
	gk_buf_free(&s->harena);
	gk_buf_free(&s->reqbuf);
	gk_uh_xfer_free(&s->ux);
	free(s->rh);
	s->c = NULL;
}

/* ---- without a stage (fuzz/fuzz_upstream.c) ---- */

struct gk__client_probe {
	gk_client c; /* only its cfg.max_response is read */
	struct cstate s;
};

gk__client_probe *
gk__client_probe_new(const char *method, size_t max_response,
    gk_uh_ops *ops, void **arg)
{
	gk__client_probe *p = gk_xcalloc(1, sizeof *p);
	p->c.cfg.max_response = max_response;
	p->s.c = &p->c;
	gk_buf_adds(&p->s.method, method);
	*ops = native_ops;
	ops->done = NULL; /* finish_try needs a stage: the caller's own */
	*arg = &p->s;
	return p;
}

int
gk__client_probe_line(gk__client_probe *p, gk_json id, int status,
    gk_buf *out)
{
	size_t at = out->len;
	upstream_line(&p->s, id, status, out);
	/* answer_from_upstream answers 502 past a wire line */
	return out->len - at > GK_CLIENT_MAX_WIRE_LINE ? -1 : 0;
}

bool
gk__client_probe_too_big(const gk__client_probe *p)
{
	return p->s.too_big;
}

void
gk__client_probe_free(gk__client_probe *p)
{
	gk_buf_free(&p->s.response);
	gk_buf_free(&p->s.method);
	gk_buf_free(&p->s.harena);
	free(p->s.rh);
	free(p);
}
