/*
 * resolver_consul.c: consul:http://127.0.0.1:8500/SERVICE?tag=T&passing,
 * Consul's health API (GET /v1/health/service/SERVICE) with blocking
 * queries, as Consul's documentation describes them: each query passes
 * back the X-Consul-Index of the last answer as index (and wait), the
 * index starts over from 0 when it goes backwards, a returned 0 is used as
 * 1, and queries are rate limited because an answer may come back at once.
 * After an error the retry does not block, so a recovery is seen at once.
 * The query string is passed on as written (tag, passing, dc, filter,
 * ...); wait is ours too (default 5m, as Consul's).  CONSUL_HTTP_TOKEN is
 * sent as X-Consul-Token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolver_http.h"
#include "resolver_source.h"

#define DEFAULT_WAIT_MS (5 * 60 * 1000)
#define MAX_WAIT_MS (10 * 60 * 1000)
#define MIN_GAP_MS 500 /* between the starts of two queries */
#define NO_INDEX_POLL_MS 5000 /* an answer without X-Consul-Index */
#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 10000

struct consul_state {
	gk_resolver *r;
	gk_loop *loop;
	gk_curl *curl;
	gk_rhttp h;
	char *url; /* up to and including the user's query */
	bool has_query;
	char wait[32];
	uint64_t wait_ms, index, started_ms, gap_ms;
	unsigned failures;
	gk_timer next;
	char token[600];
	const char *headers[2];
	gk_series *m_resets, *m_queries, *m_bad;
};

static void query(struct consul_state *c);

static void
on_next(gk_loop *loop, void *arg)
{
	(void)loop;
	query(arg);
}

static void
query(struct consul_state *c)
{
	gk_buf u = {0};
	gk_buf_adds(&u, c->url);
	gk_buf_addf(&u, "%cwait=%s", c->has_query ? '&' : '?', c->wait);
	if (c->index)
		gk_buf_addf(&u, "&index=%llu", (unsigned long long)c->index);
	c->started_ms = gk_loop_now(c->loop);
	gk_counter_add(c->m_queries, 1);
	/* Consul adds up to wait/16 of jitter to the wait. */
	uint64_t timeout = c->index ? c->wait_ms + c->wait_ms / 16 + 10000 :
	    30000;
	if (gk__rhttp_start(&c->h, "GET", gk_buf_cstr(&u), NULL, 0, timeout,
	    c->token[0] ? c->headers : NULL) < 0) {
		gk__resolver_error(c->r, "consul: unable to start a request");
		gk_timer_start(c->loop, &c->next, RETRY_MAX_MS, on_next, c);
	}
	gk_buf_free(&u);
}

/* One instance of the health API's answer into ep; false to skip it
 * (*why says what is wrong with it). */
static bool
instance(jv e, gk_endpoint *ep, const char **why)
{
	memset(ep, 0, sizeof *ep);
	jv svc = gk__jv_get(e, "Service");
	jv node = gk__jv_get(e, "Node");
	char host[256] = "";
	uint64_t port = 0;
	jv p = gk__jv_get(svc, "Port");
	bool ok = (gk__jv_strcpy(svc, "Address", host, sizeof host) && *host) ||
	    (gk__jv_strcpy(node, "Address", host, sizeof host) && *host);
	if (!ok)
		*why = "no Service.Address nor Node.Address";
	else if (jv_get_kind(p) != JV_KIND_NUMBER || !gk__jv_uint(p, &port) ||
	         port < 1 || port > 65535)
		*why = "Service.Port is not a number from 1 to 65535",
		ok = false;
	jv_free(p);
	if (ok) {
		snprintf(ep->addr, sizeof ep->addr,
		    strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
		    (unsigned)port);
		if (!gk__host_port(ep->addr)) {
			*why = "the address is no host or IP address";
			ok = false;
		}
	}
	if (ok) {
		/* The worst check decides the weight, as Consul's DNS
		 * interface does: Weights.Passing, or Weights.Warning. */
		bool warning = false;
		jv checks = gk__jv_get(e, "Checks");
		if (jv_get_kind(checks) == JV_KIND_ARRAY)
			for (int i = 0; i < jv_array_length(jv_copy(checks)); i++) {
				char st[32];
				jv ch = jv_array_get(jv_copy(checks), i);
				if (gk__jv_strcpy(ch, "Status", st, sizeof st) &&
				    !strcmp(st, "warning"))
					warning = true;
				jv_free(ch);
			}
		jv_free(checks);
		jv w = gk__jv_path(svc, "Weights", warning ? "Warning" :
		    "Passing", (char *)0);
		uint64_t wv;
		ep->weight = gk__jv_uint(w, &wv) && wv >= 1 && wv <= 1000000 ?
		    (unsigned)wv : 1;
		jv_free(w);
		jv tags = gk__jv_get(svc, "Tags");
		if (jv_get_kind(tags) == JV_KIND_ARRAY) {
			gk_buf t = {0};
			for (int i = 0; i < jv_array_length(jv_copy(tags)); i++) {
				jv tag = jv_array_get(jv_copy(tags), i);
				if (jv_get_kind(tag) == JV_KIND_STRING &&
				    *jv_string_value(tag)) {
					if (t.len)
						gk_buf_addc(&t, ',');
					/* A tag is one word of the endpoints
					 * format: no blanks, commas or '#'. */
					for (const char *s = jv_string_value(tag);
					    *s; s++)
						gk_buf_addc(&t, strchr(" \t\r\n,#",
						    *s) ? '_' : *s);
				}
				jv_free(tag);
			}
			if (t.len)
				gk__resolver_set_tags(ep, t.data, t.len);
			gk_buf_free(&t);
		}
		jv_free(tags);
	}
	jv_free(svc);
	jv_free(node);
	return ok;
}

/* The answer's set, published; -1 when it is not the health API's
 * array, -2 when it lists instances but none usable (the last good set is
 * kept: an answer of only malformed instances is a lie, not "none"). */
static int
parse(struct consul_state *c, const char *body, size_t len)
{
	jv doc = jv_parse_sized(body ? body : "", (int)len);
	if (jv_get_kind(doc) != JV_KIND_ARRAY) {
		jv_free(doc);
		return -1;
	}
	/* All of them: the core bounds the set once duplicates are gone (an
	 * instance listed twice takes no room of another). */
	int n = jv_array_length(jv_copy(doc));
	gk_endpoint *set = gk_xcalloc(n ? (size_t)n : 1, sizeof *set);
	size_t k = 0, bad = 0;
	char id[300] = "id=", w[100] = "";
	for (int i = 0; i < n; i++) {
		jv e = jv_array_get(jv_copy(doc), i);
		const char *why = NULL;
		if (instance(e, &set[k], &why))
			k++;
		else if (!bad++) {
			/* The first one named, the others counted: an answer
			 * of thousands is one warning, not thousands. */
			jv svc = gk__jv_get(e, "Service");
			if (!gk__jv_strcpy(svc, "ID", id + 3, sizeof id - 3))
				snprintf(id, sizeof id, "index=%d", i);
			jv_free(svc);
			snprintf(w, sizeof w, "error=%s", why);
		}
		jv_free(e);
	}
	if (bad) {
		char m[64];
		snprintf(m, sizeof m, "skipped=%zu", bad);
		gk_counter_add(c->m_bad, (double)bad);
		gk_log(GK_WARN, "consul: malformed instances skipped", id, w,
		       m);
	}
	jv_free(doc);
	if (bad && !k) {
		free(set);
		return -2;
	}
	gk__resolver_publish(c->r, set, k);
	free(set);
	return 0;
}

static void
on_done(gk_rhttp *h, bool ok, void *arg)
{
	struct consul_state *c = arg;
	(void)h;
	uint64_t now = gk_loop_now(c->loop);
	int bad_body = 0;
	if (ok) {
		uint64_t idx = 0;
		char *end;
		bool have = c->h.have_header;
		if (have) {
			idx = strtoull(c->h.header_value, &end, 10);
			if (*end || !*c->h.header_value)
				have = false, idx = 0;
		}
		if ((bad_body = parse(c, c->h.body.data, c->h.body.len)) == 0) {
			if (have && idx < c->index) {
				/* Backwards (a snapshot restore, a leader
				 * change): start the blocking loop over. */
				char a[64], b[64];
				snprintf(a, sizeof a, "index=%llu",
				    (unsigned long long)c->index);
				snprintf(b, sizeof b, "returned=%llu",
				    (unsigned long long)idx);
				gk_log(GK_INFO, "consul: index went backwards, "
				    "starting over", a, b);
				gk_counter_add(c->m_resets, 1);
				c->index = 0;
			} else if (have)
				c->index = idx ? idx : 1;
			else
				c->index = 0; /* no blocking: polled */
			c->failures = 0;
			uint64_t since = now - c->started_ms;
			uint64_t gap = have ? c->gap_ms : NO_INDEX_POLL_MS;
			gk_timer_start(c->loop, &c->next,
			    since >= gap ? 0 : gap - since, on_next, c);
			return;
		}
	}
	char what[400];
	if (bad_body == -1)
		snprintf(what, sizeof what, "consul: not a health API answer "
		    "(expected a JSON array)");
	else if (bad_body == -2)
		snprintf(what, sizeof what,
		         "consul: no usable instance in the "
		         "answer, only malformed ones");
	else
		snprintf(what, sizeof what, "consul: %s", gk__rhttp_error(&c->h));
	gk__resolver_error(c->r, what);
	/* The retry asks without blocking: a recovered agent's answer is
	 * seen at once, not when a wait runs out. */
	c->index = 0;
	uint64_t wait = RETRY_MIN_MS << (c->failures < 5 ? c->failures : 5);
	if (wait > RETRY_MAX_MS)
		wait = RETRY_MAX_MS;
	c->failures++;
	gk_timer_start(c->loop, &c->next, wait, on_next, c);
}

static int
consul_start(gk_resolver *r, const char *rest, void **state, const char **why)
{
	*why = "expected consul:http://HOST:PORT/SERVICE[?tag=T&passing&wait=DUR]";
	const char *sep = strstr(rest, "://");
	if (!sep || (strncmp(rest, "http://", 7) && strncmp(rest, "https://", 8)))
		return -1;
	const char *path = strchr(sep + 3, '/');
	if (!path || path == sep + 3)
		return -1;
	const char *q = strchr(path, '?');
	size_t svclen = q ? (size_t)(q - path - 1) : strlen(path + 1);
	if (!svclen || memchr(path + 1, '/', svclen))
		return -1;
	struct consul_state *c = gk_xcalloc(1, sizeof *c);
	c->wait_ms = DEFAULT_WAIT_MS;
	snprintf(c->wait, sizeof c->wait, "5m");
	gk_buf u = {0};
	gk_buf_add(&u, rest, (size_t)(path - rest));
	gk_buf_adds(&u, "/v1/health/service/");
	gk_buf_add(&u, path + 1, svclen);
	/* The query as written, but wait is ours and index is not the
	 * user's to give. */
	for (const char *p = q ? q + 1 : ""; *p;) {
		size_t n = strcspn(p, "&");
		if (n > 5 && !strncmp(p, "wait=", 5)) {
			char v[32];
			uint64_t ms;
			if (n - 5 >= sizeof v)
				goto bad;
			memcpy(v, p + 5, n - 5);
			v[n - 5] = 0;
			if (gk_parse_duration_ms(v, &ms) < 0 || ms < 1000 ||
			    ms > MAX_WAIT_MS) {
				*why = "bad wait= in consul: (expected 1s to 10m)";
				goto bad;
			}
			c->wait_ms = ms;
			snprintf(c->wait, sizeof c->wait, "%llus",
			    (unsigned long long)(ms / 1000));
		} else if ((n >= 5 && !strncmp(p, "index", 5) &&
		    (n == 5 || p[5] == '='))) {
			*why = "consul: takes no index= (it keeps its own)";
			goto bad;
		} else if (n) {
			gk_buf_addc(&u, c->has_query ? '&' : '?');
			gk_buf_add(&u, p, n);
			c->has_query = true;
		}
		p += n;
		if (*p == '&')
			p++;
	}
	c->url = gk_xstrdup(gk_buf_cstr(&u));
	gk_buf_free(&u);
	c->r = r;
	c->loop = gk__resolver_loop(r);
	c->gap_ms = gk__resolver_options(r)->min_refresh_ms;
	if (!c->gap_ms)
		c->gap_ms = MIN_GAP_MS;
	const char *tok = getenv("CONSUL_HTTP_TOKEN");
	if (tok && *tok && strlen(tok) < sizeof c->token - 20 &&
	    !strpbrk(tok, "\r\n")) {
		snprintf(c->token, sizeof c->token, "X-Consul-Token: %s", tok);
		c->headers[0] = c->token;
	}
	c->curl = gk_curl_new(c->loop, 0);
	gk__rhttp_init(&c->h, c->curl);
	c->h.done = on_done;
	c->h.arg = c;
	c->h.want_header = "X-Consul-Index";
	c->m_resets = gk_metric_series(gk_counter_new(
	    "gk_resolver_consul_index_resets_total",
	    "Times the X-Consul-Index went backwards and the blocking loop "
	    "started over", NULL));
	c->m_queries = gk_metric_series(gk_counter_new(
	    "gk_resolver_consul_queries_total",
	    "Queries of Consul's health API", NULL));
	gk_metric *dropped = gk_counter_new("gk_resolver_dropped_total",
	    "Endpoints a source left out: over the bound, or malformed",
	    "reason");
	c->m_bad = gk_series_get(dropped, "bad", (char *)0);
	*state = c;
	query(c);
	return 0;
bad:
	gk_buf_free(&u);
	free(c);
	return -1;
}

static void
consul_stop(void *state)
{
	struct consul_state *c = state;
	gk_timer_stop(c->loop, &c->next);
	gk__rhttp_free(&c->h);
	gk_curl_free(c->curl);
	free(c->url);
	free(c);
}

const gk_resolver_source gk_resolver_consul = {"consul", consul_start,
    consul_stop};
