/*
 * resolver_etcd.c: etcd:http://127.0.0.1:2379/PREFIX, etcd's v3 JSON
 * gateway (etcd 3.4): POST /v3/kv/range over the prefix (key and
 * range_end, base64), then POST /v3/watch from header.revision + 1, a
 * stream of one JSON object a line.  Each key under the prefix holds one
 * endpoint as its value, "HOST:PORT [WEIGHT [TAGS]]".  When the watch
 * breaks (etcd restarted, the revision compacted, the connection lost) the
 * prefix is ranged again and a new watch starts from there, so no change
 * is missed.  The prefix is the URL's path as written (leading slash
 * included, percent-decoded).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolver_http.h"
#include "resolver_source.h"

#define RANGE_TIMEOUT_MS 10000
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
/* A watch that lasted this long, or brought a change, was a success: the
 * backoff starts over.  One that etcd (or a proxy) ends sooner, however
 * well the range before it went, is a failure like a range that failed,
 * so that a watch ended at once every time does not range the prefix
 * every 100 ms. */
#define WATCH_GOOD_MS RETRY_MAX_MS

struct kv {
	char *key;
	size_t keylen;
	gk_endpoint ep;
};

struct etcd_state {
	gk_resolver *r;
	gk_loop *loop;
	gk_curl *curl;
	gk_rhttp range, watch;
	char *base; /* http://host:port */
	gk_buf key64, end64;
	struct kv *kvs;
	size_t n, cap;
	/* Keys under the prefix whose values are not endpoints (ep unused):
	 * when they are all there is, the prefix is malformed, not empty. */
	struct kv *bad;
	size_t nbad, badcap;
	uint64_t revision;
	unsigned failures;
	uint64_t retry_ms; /* the last wait retry_later chose */
	uint64_t watch_started_ms;
	bool watch_changed; /* the watch running brought a change */
	gk_timer retry;
	gk_series *m_reconnects, *m_bad, *m_events, *m_retry;
};

/* Percent-decoding of the URL's path. */
static int
unescape(gk_buf *out, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '%') {
			gk_buf_addc(out, p[i]);
			continue;
		}
		unsigned v;
		if (i + 2 >= n || !isxdigit((unsigned char)p[i + 1]) ||
		    !isxdigit((unsigned char)p[i + 2]) ||
		    sscanf(p + i + 1, "%2x", &v) != 1)
			return -1;
		gk_buf_addc(out, (char)v);
		i += 2;
	}
	return 0;
}

void
gk__etcd_prefix_end(gk_buf *out, const char *p, size_t n)
{
	while (n && (unsigned char)p[n - 1] == 0xff)
		n--;
	if (!n) {
		gk_buf_addc(out, 0);
		return;
	}
	gk_buf_add(out, p, n - 1);
	gk_buf_addc(out, (char)((unsigned char)p[n - 1] + 1));
}

static void start_range(struct etcd_state *e);

static void
on_retry(gk_loop *loop, void *arg)
{
	(void)loop;
	start_range(arg);
}

static void
retry_later(struct etcd_state *e)
{
	uint64_t wait = (uint64_t)RETRY_MIN_MS
	                << (e->failures < 6 ? e->failures : 6);
	if (wait > RETRY_MAX_MS)
		wait = RETRY_MAX_MS;
	e->failures++;
	e->retry_ms = wait;
	gk_gauge_set(e->m_retry, (double)wait / 1000);
	gk_timer_start(e->loop, &e->retry, wait, on_retry, e);
}

static void
publish(struct etcd_state *e)
{
	if (!e->n && e->nbad) {
		char w[200];
		snprintf(w, sizeof w,
		         "etcd: every key under the prefix is "
		         "malformed (%zu), none an endpoint",
		         e->nbad);
		gk__resolver_error(e->r, w);
		return;
	}
	/* Every key: the core bounds the set once duplicates are gone (two
	 * keys of one address, as while an instance registers again, take
	 * one place). */
	gk_endpoint *set = gk_xcalloc(e->n ? e->n : 1, sizeof *set);
	for (size_t i = 0; i < e->n; i++)
		set[i] = e->kvs[i].ep;
	gk__resolver_publish(e->r, set, e->n);
	free(set);
}

static void
clear(struct etcd_state *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->kvs[i].key);
	e->n = 0;
	for (size_t i = 0; i < e->nbad; i++)
		free(e->bad[i].key);
	e->nbad = 0;
}

static void
del_from(struct kv *kvs, size_t *n, const char *key, size_t keylen)
{
	for (size_t i = 0; i < *n; i++)
		if (kvs[i].keylen == keylen &&
		    !memcmp(kvs[i].key, key, keylen)) {
			free(kvs[i].key);
			kvs[i] = kvs[--*n];
			return;
		}
}

static void
del(struct etcd_state *e, const char *key, size_t keylen)
{
	del_from(e->kvs, &e->n, key, keylen);
	del_from(e->bad, &e->nbad, key, keylen);
}

static struct kv *
add(struct kv **kvs, size_t *n, size_t *cap, const char *key, size_t keylen)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		*kvs = gk_xrealloc(*kvs, *cap * sizeof **kvs);
	}
	struct kv *kv = &(*kvs)[(*n)++];
	kv->key = gk_xmalloc(keylen + 1);
	memcpy(kv->key, key, keylen);
	kv->key[keylen] = 0;
	kv->keylen = keylen;
	return kv;
}

/* A key's value: its endpoint, or (malformed) no endpoint at all. */
static void
put(struct etcd_state *e, const char *key, size_t keylen, const char *val,
    size_t vallen)
{
	gk_endpoint ep;
	del(e, key, keylen);
	const char *nl = memchr(val, '\n', vallen);
	if (nl && (size_t)(nl - val) + 1 == vallen)
		vallen--; /* one trailing newline, as "echo ... | etcdctl put"
		             leaves */
	if (memchr(val, '\n', vallen) || memchr(val, 0, vallen) ||
	    gk__resolver_parse_line(val, vallen, &ep) != 0) {
		char k[300];
		snprintf(k, sizeof k, "key=%.*s",
		         (int)(keylen < 200 ? keylen : 200), key);
		gk_log(GK_WARN,
		       "etcd: value is not HOST:PORT [WEIGHT], key "
		       "left out",
		       k);
		gk_counter_add(e->m_bad, 1);
		add(&e->bad, &e->nbad, &e->badcap, key, keylen);
		return;
	}
	add(&e->kvs, &e->n, &e->cap, key, keylen)->ep = ep;
}

/* kv.key and kv.value of a JSON kv, base64 decoded; -1 if malformed. */
static int
decode_kv(jv kv, gk_buf *key, gk_buf *val)
{
	jv k = gk__jv_get(kv, "key"), v = gk__jv_get(kv, "value");
	int rc = -1;
	if (jv_get_kind(k) == JV_KIND_STRING &&
	    gk_base64_decode(key, jv_string_value(k),
	                     strlen(jv_string_value(k))) == 0) {
		rc = 0;
		/* A delete carries no value; an empty value has none either. */
		if (jv_get_kind(v) == JV_KIND_STRING &&
		    gk_base64_decode(val, jv_string_value(v),
		                     strlen(jv_string_value(v))) < 0)
			rc = -1;
	}
	jv_free(k);
	jv_free(v);
	return rc;
}

static void start_watch(struct etcd_state *e);

static void
on_range(gk_rhttp *h, bool ok, void *arg)
{
	struct etcd_state *e = arg;
	(void)h;
	char what[400];
	if (!ok) {
		snprintf(what, sizeof what, "etcd: range: %s",
		         gk__rhttp_error(&e->range));
		gk__resolver_error(e->r, what);
		retry_later(e);
		return;
	}
	jv doc = jv_parse_sized(e->range.body.data ? e->range.body.data : "",
	                        (int)e->range.body.len);
	jv rev = gk__jv_path(doc, "header", "revision", (char *)0);
	uint64_t revision;
	if (!gk__jv_uint(rev, &revision)) {
		jv_free(rev);
		jv_free(doc);
		gk__resolver_error(
		    e->r, "etcd: range: no header.revision in the answer");
		retry_later(e);
		return;
	}
	jv_free(rev);
	clear(e);
	jv kvs = gk__jv_get(doc, "kvs");
	gk_buf key = {0}, val = {0};
	if (jv_get_kind(kvs) == JV_KIND_ARRAY)
		for (int i = 0; i < jv_array_length(jv_copy(kvs)); i++) {
			jv kv = jv_array_get(jv_copy(kvs), i);
			gk_buf_reset(&key);
			gk_buf_reset(&val);
			if (decode_kv(kv, &key, &val) == 0)
				put(e, key.data, key.len,
				    val.data ? val.data : "", val.len);
			jv_free(kv);
		}
	jv_free(kvs);
	jv_free(doc);
	gk_buf_free(&key);
	gk_buf_free(&val);
	e->revision = revision;
	publish(e);
	start_watch(e);
}

static void
start_range(struct etcd_state *e)
{
	gk_buf url = {0}, body = {0};
	gk_buf_addf(&url, "%s/v3/kv/range", e->base);
	gk_buf_addf(&body, "{\"key\":\"%.*s\",\"range_end\":\"%.*s\"}",
	            (int)e->key64.len, e->key64.data, (int)e->end64.len,
	            e->end64.data);
	if (gk__rhttp_start(&e->range, "POST", gk_buf_cstr(&url), body.data,
	                    body.len, RANGE_TIMEOUT_MS, NULL) < 0) {
		gk__resolver_error(e->r, "etcd: unable to start a request");
		retry_later(e);
	}
	gk_buf_free(&url);
	gk_buf_free(&body);
}

/* One message of the watch stream; false ends the watch. */
static bool
on_watch_line(gk_rhttp *h, const char *line, size_t len, void *arg)
{
	struct etcd_state *e = arg;
	(void)h;
	jv doc = jv_parse_sized(line, (int)len);
	jv res = gk__jv_get(doc, "result");
	bool go_on = true;
	if (jv_get_kind(res) != JV_KIND_OBJECT) {
		char m[300];
		snprintf(m, sizeof m, "error=%.*s",
		         (int)(len < 200 ? len : 200), line);
		gk_log(GK_WARN, "etcd: watch answered an error", m);
		go_on = false;
		goto out;
	}
	jv canceled = gk__jv_get(res, "canceled");
	if (jv_get_kind(canceled) == JV_KIND_TRUE) {
		char m[300] = "reason=";
		gk__jv_strcpy(res, "cancel_reason", m + 7, sizeof m - 7);
		gk_log(GK_INFO, "etcd: watch cancelled by the server", m);
		go_on = false;
	}
	jv_free(canceled);
	if (!go_on)
		goto out;
	jv events = gk__jv_get(res, "events");
	if (jv_get_kind(events) == JV_KIND_ARRAY) {
		gk_buf key = {0}, val = {0};
		int n = jv_array_length(jv_copy(events));
		for (int i = 0; i < n; i++) {
			jv ev = jv_array_get(jv_copy(events), i);
			jv kv = gk__jv_get(ev, "kv");
			char type[16] =
			    "PUT"; /* proto3 JSON omits the default */
			gk__jv_strcpy(ev, "type", type, sizeof type);
			gk_buf_reset(&key);
			gk_buf_reset(&val);
			if (decode_kv(kv, &key, &val) == 0) {
				if (!strcmp(type, "DELETE"))
					del(e, key.data, key.len);
				else
					put(e, key.data, key.len,
					    val.data ? val.data : "", val.len);
			}
			uint64_t mod;
			jv m = gk__jv_get(kv, "mod_revision");
			if (gk__jv_uint(m, &mod) && mod > e->revision)
				e->revision = mod;
			jv_free(m);
			jv_free(kv);
			jv_free(ev);
		}
		gk_buf_free(&key);
		gk_buf_free(&val);
		gk_counter_add(e->m_events, n);
		if (n) {
			e->watch_changed = true;
			publish(e);
		}
	}
	jv_free(events);
out:
	jv_free(res);
	jv_free(doc);
	return go_on;
}

static void
on_watch_end(gk_rhttp *h, bool ok, void *arg)
{
	struct etcd_state *e = arg;
	char w[300], r[64];
	/* A stream that ended cleanly was ended by etcd (stopped, or a
	 * leader change): no error of ours or of the transfer. */
	snprintf(w, sizeof w, "error=%s",
	         h->aborted ? "ended by gk-resolver"
	         : ok       ? "etcd ended the watch stream"
	                    : gk__rhttp_error(h));
	if (e->watch_changed ||
	    gk_loop_now(e->loop) - e->watch_started_ms >= WATCH_GOOD_MS)
		e->failures = 0;
	gk_counter_add(e->m_reconnects, 1);
	retry_later(e);
	snprintf(r, sizeof r, "retry_ms=%llu", (unsigned long long)e->retry_ms);
	gk_log(GK_INFO, "etcd: watch ended, ranging the prefix again", w, r);
}

static void
start_watch(struct etcd_state *e)
{
	gk_buf url = {0}, body = {0};
	gk_buf_addf(&url, "%s/v3/watch", e->base);
	gk_buf_addf(&body,
	            "{\"create_request\":{\"key\":\"%.*s\",\"range_end\":"
	            "\"%.*s\",\"start_revision\":\"%llu\"}}",
	            (int)e->key64.len, e->key64.data, (int)e->end64.len,
	            e->end64.data, (unsigned long long)e->revision + 1);
	e->watch_started_ms = gk_loop_now(e->loop);
	e->watch_changed = false;
	if (gk__rhttp_start(&e->watch, "POST", gk_buf_cstr(&url), body.data,
	                    body.len, 0, NULL) < 0) {
		gk__resolver_error(e->r, "etcd: unable to start a watch");
		retry_later(e);
	}
	gk_buf_free(&url);
	gk_buf_free(&body);
}

int
gk__etcd_parse_url(const char *rest, char **base, gk_buf *prefix)
{
	const char *sep = strstr(rest, "://");
	if (!sep ||
	    (strncmp(rest, "http://", 7) && strncmp(rest, "https://", 8)))
		return -1;
	const char *path = strchr(sep + 3, '/');
	if (!path || path == sep + 3 || !path[1] || strpbrk(path, "?#"))
		return -1;
	if (unescape(prefix, path, strlen(path)) < 0)
		return -1;
	*base = gk_xmalloc((size_t)(path - rest) + 1);
	memcpy(*base, rest, (size_t)(path - rest));
	(*base)[path - rest] = 0;
	return 0;
}

static int
etcd_start(gk_resolver *r, const char *rest, void **state, const char **why)
{
	gk_buf prefix = {0}, end = {0};
	char *base;
	if (gk__etcd_parse_url(rest, &base, &prefix) < 0) {
		gk_buf_free(&prefix);
		*why = "expected etcd:http://HOST:PORT/PREFIX";
		return -1;
	}
	struct etcd_state *e = gk_xcalloc(1, sizeof *e);
	e->r = r;
	e->loop = gk__resolver_loop(r);
	e->base = base;
	gk_base64_encode(&e->key64, prefix.data, prefix.len);
	gk__etcd_prefix_end(&end, prefix.data, prefix.len);
	gk_base64_encode(&e->end64, end.data, end.len);
	gk_buf_free(&prefix);
	gk_buf_free(&end);
	e->curl = gk_curl_new(e->loop, 0);
	gk__rhttp_init(&e->range, e->curl);
	e->range.done = on_range;
	e->range.arg = e;
	gk__rhttp_init(&e->watch, e->curl);
	e->watch.done = on_watch_end;
	e->watch.on_line = on_watch_line;
	e->watch.arg = e;
	e->m_reconnects = gk_metric_series(gk_counter_new(
	    "gk_resolver_etcd_watch_restarts_total",
	    "Times the etcd watch ended and the prefix was ranged again",
	    NULL));
	e->m_events = gk_metric_series(gk_counter_new(
	    "gk_resolver_etcd_events_total", "Watch events from etcd", NULL));
	e->m_retry = gk_metric_series(gk_gauge_new(
	    "gk_resolver_etcd_retry_delay_seconds",
	    "The last wait before ranging the prefix again: 0.1 s, doubling "
	    "up to 5 s while ranges fail or watches end within 5 s",
	    NULL));
	gk_metric *dropped = gk_counter_new(
	    "gk_resolver_dropped_total",
	    "Endpoints a source left out: over the bound, or malformed",
	    "reason");
	e->m_bad = gk_series_get(dropped, "bad", (char *)0);
	*state = e;
	start_range(e);
	return 0;
}

static void
etcd_stop(void *state)
{
	struct etcd_state *e = state;
	gk_timer_stop(e->loop, &e->retry);
	gk__rhttp_free(&e->range);
	gk__rhttp_free(&e->watch);
	gk_curl_free(e->curl);
	clear(e);
	free(e->kvs);
	free(e->bad);
	free(e->base);
	gk_buf_free(&e->key64);
	gk_buf_free(&e->end64);
	free(e);
}

const gk_resolver_source gk_resolver_etcd = {"etcd", etcd_start, etcd_stop};
