/*
 * http.h: HTTP/1.1 request parsing and response rendering (internal to
 * libgokit; shared by gk-listener and gk_serve --http).  Requests are parsed
 * with node's http_parser (libhttp-parser) and turned into wire requests;
 * wire responses are rendered as HTTP bytes.
 */
#ifndef GK_HTTP_H
#define GK_HTTP_H

#include "gokit.h"

typedef struct gk_http_limits {
	size_t max_header; /* request line + headers, bytes (431 past it) */
	size_t max_body;   /* decoded body bytes (413 past it) */
} gk_http_limits;

/* What the parser knows of the request it just finished (or failed). */
typedef struct gk_http_info {
	int error_status;     /* 400, 413, 414, 417, 431, 501, 505: feed said ERROR */
	const char *error;    /* static reason, for the error event */
	bool keep_alive;      /* after this request */
	bool head;            /* method HEAD */
	int http_minor;       /* 0 or 1 */
	char method[16];
	size_t body_len;
	bool timeout_header;  /* an x-gk-timeout-ms header came */
} gk_http_info;

enum gk_http_feed {
	GK_HTTP_NEED_MORE = 0, /* all bytes consumed, request incomplete */
	GK_HTTP_REQUEST,       /* a whole request: call gk_http_parser_encode */
	GK_HTTP_CONTINUE,      /* headers done with Expect: 100-continue;
	                          write "HTTP/1.1 100 Continue" and feed on */
	GK_HTTP_ERROR,         /* answer info.error_status and close */
};

typedef struct gk_http_parser gk_http_parser;

gk_http_parser *gk_http_parser_new(const gk_http_limits *limits);
void gk_http_parser_free(gk_http_parser *p);
/* Bytes of memory held now (for idle connections: small). */
size_t gk_http_parser_footprint(const gk_http_parser *p);
/* True when no part of a request has been seen since the last one. */
bool gk_http_parser_idle(const gk_http_parser *p);
/* True when the headers of the request being read are complete: its body
 * (if any) is coming. */
bool gk_http_parser_in_body(const gk_http_parser *p);

/*
 * Feed bytes.  Sets *consumed; stops right after a complete request (or
 * after the headers of a request that expects 100-continue), so that a
 * pipelined request is taken one at a time: feed the rest again.
 */
enum gk_http_feed gk_http_parser_feed(gk_http_parser *p, const char *data,
    size_t len, size_t *consumed);
const gk_http_info *gk_http_parser_info(const gk_http_parser *p);

/*
 * After GK_HTTP_REQUEST: append the wire request (gk-wire(5)) to out, one
 * JSON object without newline: id, method, path, query, headers (lowercase
 * names; repeated headers as arrays, in order), body (valid UTF-8) or
 * body_b64, remote, deadline (omitted when 0).  Then the parser is ready for
 * the next request.
 */
void gk_http_parser_encode(gk_http_parser *p, const char *id,
    const char *remote, uint64_t deadline_ms, gk_buf *out);
/* The same as a message, its index built while encoding (no parse); NULL
 * unless a request is complete. */
gk_msg *gk_http_parser_encode_msg(gk_http_parser *p, const char *id,
    const char *remote, uint64_t deadline_ms);

/*
 * Render a wire response as HTTP/1.x.  Adds Date and Content-Length (a
 * content-length, transfer-encoding or connection header given by the stack
 * is ignored), "Connection: close" when !keep_alive (and keep-alive for
 * HTTP/1.0 clients that keep it), no body for HEAD, 204, 205 or 304.
 * The status line is HTTP/1.1 whatever the client's version.
 * Returns 0, or -1 with *why set when the response must not be sent (status
 * outside 200-599: no interim responses on the wire; a header name or value
 * holding a control character other than HTAB, a header name that is not a
 * token, malformed headers/body/body_b64): the caller then sends 502
 * instead.  *body_bytes gets the body length.
 */
int gk_http_render(const gk_msg *resp, const gk_http_info *req, bool keep_alive,
    gk_buf *out, size_t *body_bytes, const char **why);

/* A response the transport makes itself (400, 408, 413, 431, 501, 502,
 * 503, 504, health): text/plain body. extra_headers: "Name: value\r\n"... */
void gk_http_render_simple(int status, const char *body, bool keep_alive,
    bool head, const char *extra_headers, gk_buf *out);

/* What gk_http_render sends of a header: a name that is a token (RFC
 * 9110 5.6.2), not empty; a value without a control byte but HTAB (5.5). */
bool gk_http_field_name(const char *name, size_t n);
bool gk_http_field_value(const char *v, size_t n);

const char *gk_http_reason(int status);
/* The IMF-fixdate of now, cached for the current second (29 chars + NUL). */
const char *gk_http_date(void);

#endif
