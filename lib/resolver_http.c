/*
 * resolver_http.c: HTTP calls for the consul: and etcd: sources and for
 * registration, on gk_curl (libcurl multi on the caller's loop), and the
 * few jv helpers they share.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "resolver_http.h"

void
gk__rhttp_init(gk_rhttp *h, gk_curl *curl)
{
	memset(h, 0, sizeof *h);
	h->curl = curl;
}

static size_t
on_write(char *p, size_t size, size_t n, void *arg)
{
	gk_rhttp *h = arg;
	size_t len = size * n;
	if (!h->on_line) {
		if (h->body.len + len > GK_RHTTP_MAX_BODY) {
			h->too_big = true;
			return 0;
		}
		gk_buf_add(&h->body, p, len);
		return len;
	}
	return gk__rhttp_stream(h, p, len) < 0 ? 0 : len;
}

int
gk__rhttp_stream(gk_rhttp *h, const char *p, size_t len)
{
	/* A stream: whole lines to the caller, the rest kept.  Only the new
	 * bytes are looked at: what is kept has no newline (h->scanned), and
	 * scanning it again on every chunk made a long line (a big batch of
	 * watch events) cost its length squared. */
	gk_buf_add(&h->body, p, len);
	size_t start = 0, i = h->scanned;
	const char *nl;
	while (i < h->body.len &&
	    (nl = memchr(h->body.data + i, '\n', h->body.len - i))) {
		i = (size_t)(nl - h->body.data);
		if (i > start && !h->on_line(h, h->body.data + start, i - start,
		    h->arg)) {
			h->aborted = true;
			return -1;
		}
		start = ++i;
	}
	gk_buf_consume(&h->body, start);
	h->scanned = h->body.len;
	if (h->body.len > GK_RHTTP_MAX_BODY) {
		h->too_big = true;
		return -1;
	}
	return 0;
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	gk_rhttp *h = arg;
	size_t len = size * n, wn;
	if (!h->want_header || len < (wn = strlen(h->want_header)) + 1 ||
	    strncasecmp(p, h->want_header, wn) || p[wn] != ':')
		return len;
	const char *v = p + wn + 1, *end = p + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
	    end[-1] == ' '))
		end--;
	size_t vn = (size_t)(end - v);
	if (vn < sizeof h->header_value) {
		memcpy(h->header_value, v, vn);
		h->header_value[vn] = 0;
		h->have_header = true;
	}
	return len;
}

static void
on_done(CURL *easy, CURLcode result, void *arg)
{
	gk_rhttp *h = arg;
	h->running = false;
	h->result = result;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &h->status);
	bool ok = result == CURLE_OK && h->status >= 200 && h->status < 300;
	h->done(h, ok, h->arg);
}

int
gk__rhttp_start(gk_rhttp *h, const char *method, const char *url,
    const char *body, size_t bodylen, uint64_t timeout_ms,
    const char *const *headers)
{
	gk__rhttp_cancel(h);
	if (!h->easy)
		h->easy = curl_easy_init();
	else
		curl_easy_reset(h->easy);
	if (!h->easy)
		return -1;
	curl_slist_free_all(h->headers);
	h->headers = NULL;
	gk_buf_reset(&h->body);
	h->scanned = 0;
	gk_buf_reset(&h->req);
	h->too_big = h->aborted = h->have_header = false;
	h->status = 0;
	h->errbuf[0] = 0;
	CURL *e = h->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 10L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 5L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "gk-resolver/" GK_VERSION);
	for (int i = 0; headers && headers[i]; i++)
		h->headers = curl_slist_append(h->headers, headers[i]);
	if (body) {
		gk_buf_add(&h->req, body, bodylen);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, gk_buf_cstr(&h->req));
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)bodylen);
		h->headers = curl_slist_append(h->headers,
		    "Content-Type: application/json");
	}
	/* No "Expect: 100-continue" round trip for small bodies. */
	h->headers = curl_slist_append(h->headers, "Expect:");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
	if (gk_curl_start(h->curl, e, on_done, h) < 0)
		return -1;
	h->running = true;
	return 0;
}

void
gk__rhttp_cancel(gk_rhttp *h)
{
	if (h->running) {
		gk_curl_cancel(h->curl, h->easy);
		h->running = false;
	}
}

void
gk__rhttp_free(gk_rhttp *h)
{
	gk__rhttp_cancel(h);
	if (h->easy)
		curl_easy_cleanup(h->easy);
	curl_slist_free_all(h->headers);
	gk_buf_free(&h->req);
	gk_buf_free(&h->body);
	h->easy = NULL;
	h->headers = NULL;
}

const char *
gk__rhttp_error(gk_rhttp *h)
{
	if (h->too_big)
		snprintf(h->why, sizeof h->why, "response over %u bytes",
		    GK_RHTTP_MAX_BODY);
	else if (h->result != CURLE_OK)
		snprintf(h->why, sizeof h->why, "%s",
		    h->errbuf[0] ? h->errbuf : curl_easy_strerror(h->result));
	else if (h->status < 200 || h->status >= 300) {
		/* The first line of the body says why (Consul and etcd's
		 * gateway both answer a short text or JSON error). */
		size_t n = h->on_line ? 0 : strcspn(gk_buf_cstr(&h->body), "\n");
		if (n > 200)
			n = 200;
		snprintf(h->why, sizeof h->why, "HTTP %ld%s%.*s", h->status,
		    n ? ": " : "", (int)n, h->body.data ? h->body.data : "");
	} else
		snprintf(h->why, sizeof h->why, "bad response");
	return h->why;
}

jv
gk__jv_get(jv obj, const char *key)
{
	if (jv_get_kind(obj) != JV_KIND_OBJECT)
		return jv_null();
	jv v = jv_object_get(jv_copy(obj), jv_string(key));
	if (!jv_is_valid(v)) {
		jv_free(v);
		return jv_null();
	}
	return v;
}

jv
gk__jv_path(jv obj, ...)
{
	va_list ap;
	va_start(ap, obj);
	jv cur = jv_copy(obj);
	const char *k;
	while ((k = va_arg(ap, const char *))) {
		jv next = gk__jv_get(cur, k);
		jv_free(cur);
		cur = next;
	}
	va_end(ap);
	return cur;
}

bool
gk__jv_strcpy(jv obj, const char *key, char *out, size_t cap)
{
	jv v = gk__jv_get(obj, key);
	bool ok = false;
	if (jv_get_kind(v) == JV_KIND_STRING) {
		const char *s = jv_string_value(v);
		size_t n = (size_t)jv_string_length_bytes(jv_copy(v));
		if (n < cap && !memchr(s, 0, n)) {
			memcpy(out, s, n);
			out[n] = 0;
			ok = true;
		}
	}
	jv_free(v);
	return ok;
}

bool
gk__jv_uint(jv v, uint64_t *out)
{
	if (jv_get_kind(v) == JV_KIND_NUMBER) {
		double d = jv_number_value(v);
		if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d)
			return false;
		*out = (uint64_t)d;
		return true;
	}
	if (jv_get_kind(v) != JV_KIND_STRING)
		return false;
	const char *s = jv_string_value(v);
	if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
		return false;
	*out = strtoull(s, NULL, 10);
	return true;
}

void
gk__url_escape(gk_buf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p))
			gk_buf_addc(out, (char)*p);
		else {
			gk_buf_addc(out, '%');
			gk_buf_addc(out, hex[*p >> 4]);
			gk_buf_addc(out, hex[*p & 15]);
		}
	}
}
