/*
 * resolver_http.h: one HTTP call on libcurl's multi interface and the
 * caller's loop, for the consul: and etcd: sources and for registration
 * (internal).  The body is collected whole, or handed over line by line
 * for a stream (etcd's watch); both are bounded.  JSON is read with
 * libjq's jv, off the hot path.
 */
#ifndef GK_RESOLVER_HTTP_H
#define GK_RESOLVER_HTTP_H

#include <jv.h>

#include "curl_loop.h"
#include "gokit.h"

/* The largest response body (or stream line) a call keeps. */
#define GK_RHTTP_MAX_BODY (16u << 20)

typedef struct gk_rhttp gk_rhttp;
/* The call ended: ok when the transfer worked and the status is 2xx;
 * otherwise gk__rhttp_error says why. */
typedef void gk_rhttp_done_fn(gk_rhttp *h, bool ok, void *arg);
/* One line of a streamed body (without its newline); return false to
 * end the call (done then runs with ok false and h->aborted set). */
typedef bool gk_rhttp_line_fn(gk_rhttp *h, const char *line, size_t len,
    void *arg);

struct gk_rhttp {
	gk_curl *curl;
	CURL *easy;
	struct curl_slist *headers;
	gk_buf req;  /* request body, kept for the transfer */
	gk_buf body; /* response body, or the partial line of a stream */
	size_t scanned; /* of a stream's partial line: bytes without '\n' */
	gk_rhttp_done_fn *done;
	gk_rhttp_line_fn *on_line;
	void *arg;
	bool running, too_big, aborted;
	long status;
	CURLcode result;
	const char *want_header; /* captured into header_value */
	char header_value[64];
	bool have_header;
	char errbuf[CURL_ERROR_SIZE];
	char why[CURL_ERROR_SIZE + 64];
};

void gk__rhttp_init(gk_rhttp *h, gk_curl *curl);
/*
 * Start method url with body (NULL for none; JSON when given) and a
 * timeout for the whole call (0: none, for streams: then only the connect
 * and TCP keepalive bound it).  A call already running is cancelled.
 * Extra headers: NULL-terminated "Name: value" strings, or NULL.
 * -1 when libcurl refused to start it.
 */
int gk__rhttp_start(gk_rhttp *h, const char *method, const char *url,
    const char *body, size_t bodylen, uint64_t timeout_ms,
    const char *const *headers);
void gk__rhttp_cancel(gk_rhttp *h);
/* A streamed body's next bytes (what libcurl writes): each whole line to
 * h->on_line, the partial last line kept in h->body.  -1 when on_line
 * ended the call (h->aborted) or a line is over GK_RHTTP_MAX_BODY
 * (h->too_big). */
int gk__rhttp_stream(gk_rhttp *h, const char *p, size_t len);
void gk__rhttp_free(gk_rhttp *h);
/* Why the last call failed: "HTTP 500: ...", a curl error, "too big". */
const char *gk__rhttp_error(gk_rhttp *h);

/* The member key of obj (obj is not consumed); jv_null() when obj is no
 * object or has no such member. */
jv gk__jv_get(jv obj, const char *key);
/* obj.a.b.c...: NULL-terminated keys; consumes nothing. */
jv gk__jv_path(jv obj, ...);
/* A string member copied into out (cap bytes); false if not a string or
 * too long. */
bool gk__jv_strcpy(jv obj, const char *key, char *out, size_t cap);
/* An unsigned integer given as a JSON number or as a decimal string (as
 * proto3 JSON writes int64); false otherwise. */
bool gk__jv_uint(jv v, uint64_t *out);

/* Percent-encode s for a URL path segment or query value. */
void gk__url_escape(gk_buf *out, const char *s);

/* etcd: "http://host:port/prefix" into base ("http://host:port") and the
 * percent-decoded prefix; -1 if malformed. */
int gk__etcd_parse_url(const char *rest, char **base, gk_buf *prefix);
/* etcd's range end for a prefix: the prefix with its last byte below 0xff
 * incremented, the bytes after it dropped ("\0": every key). */
void gk__etcd_prefix_end(gk_buf *out, const char *p, size_t n);

#endif
