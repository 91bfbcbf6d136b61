/*
 * http_parser.c: HTTP/1.x requests in, wire requests out.
 *
 * node's http_parser (libhttp-parser) does the parsing; this file adds what
 * a front server must check on top of it (request smuggling, limits,
 * obs-fold, field content), accumulates the pieces that arrive across
 * reads, and encodes one wire request per HTTP request.
 *
 * Memory: an idle connection holds only struct gk_http_parser.  Everything
 * a request needs (URL, headers, body) lives in a struct req allocated at
 * the first byte of a request and freed by gk_http_parser_encode.
 */
#include <http_parser.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

#define MAX_HEADERS 256   /* 431 past it: bounds the grouping in encode */
#define INLINE_HEADERS 12 /* a typical request needs no second malloc */
#define BODY_PREALLOC (64 * 1024) /* reserve for Content-Length, at most */
#define DEFAULT_MAX_HEADER (8 * 1024)
#define DEFAULT_MAX_BODY (1024 * 1024)

/* PH_METHOD: the method is none http_parser knows; the rest of the request
 * line is gathered to tell 501 from 400 (method_rest). */
enum phase { PH_IDLE, PH_HEAD, PH_METHOD, PH_BODY, PH_DONE, PH_ERROR };
/* Why the parser paused, so feed knows what to check. */
enum pause {
	PZ_NONE,
	PZ_HEADERS,   /* at the LF ending the header section (not consumed) */
	PZ_CHUNK,     /* after the LF of a chunk-size line */
	PZ_CHUNK_END, /* after the CRLF that ends chunk data */
	PZ_TRAILERS,  /* at the LF ending the trailer section (not consumed) */
	PZ_MESSAGE,
};
enum last { L_NONE, L_FIELD, L_VALUE };

struct hdr {
	uint32_t name_off, val_off, val_len, hash;
	uint16_t name_len;
	uint8_t esc; /* the value holds bytes JSON must escape or check */
};

struct req {
	gk_buf text; /* URL, header names and values, then the body */
	struct hdr *h;
	uint32_t nh, hcap;
	uint32_t url_len;
	uint32_t path_off, path_len, query_off, query_len;
	uint32_t body_off;
	uint32_t auth_off, auth_len; /* an absolute-form target's authority */
	int cl_idx, te_idx, expect_idx, host_idx; /* -1 when absent */
	uint8_t last, ncl, nte, nhost, nexpect, ntimeout;
	uint8_t url_esc;
	struct hdr inl[INLINE_HEADERS];
};

struct gk_http_parser {
	http_parser hp;
	gk_http_info info;
	uint32_t max_header;
	uint32_t hdr_bytes; /* fed since the request began, until headers end */
	size_t max_body;
	struct req *r;
	const char *slice; /* the bytes being executed now (for checks) */
	uint8_t phase, pause, cont;
	uint8_t last_byte;  /* last byte of the bytes executed before */
	bool method_prefix; /* PH_METHOD: known method bytes came before */
	gk_buf method_line; /* PH_METHOD: the line from the unknown byte on */
	uint8_t tail_lf_ws; /* they ended in LF then only SP/HT */
	/* The bytes executed next are a chunk-size line (CL_AFTER_HEAD: after
	 * the LF that ends the header section, not yet consumed). */
	enum { CL_NO, CL_YES, CL_AFTER_HEAD } chunk_line;
	uint8_t chunk_at;          /* enum chunk_at: where in that line */
	uint32_t chunk_line_bytes; /* of that line so far: --max-header */
	size_t ext_bytes;       /* chunk-ext bytes of the request: --max-body */
	uint32_t trailer_bytes; /* of its trailer section: --max-header */
};

/* tchar (RFC 9110 §5.6.2) to its lowercase; 0 for anything else. */
#define T(c) [c] = c
static const unsigned char tlower[256] = {
    T('!'),      T('#'),      T('$'),      T('%'),      T('&'),
    T('\''),     T('*'),      T('+'),      T('-'),      T('.'),
    T('^'),      T('_'),      T('`'),      T('|'),      T('~'),
    ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3', ['4'] = '4',
    ['5'] = '5', ['6'] = '6', ['7'] = '7', ['8'] = '8', ['9'] = '9',
    ['a'] = 'a', ['b'] = 'b', ['c'] = 'c', ['d'] = 'd', ['e'] = 'e',
    ['f'] = 'f', ['g'] = 'g', ['h'] = 'h', ['i'] = 'i', ['j'] = 'j',
    ['k'] = 'k', ['l'] = 'l', ['m'] = 'm', ['n'] = 'n', ['o'] = 'o',
    ['p'] = 'p', ['q'] = 'q', ['r'] = 'r', ['s'] = 's', ['t'] = 't',
    ['u'] = 'u', ['v'] = 'v', ['w'] = 'w', ['x'] = 'x', ['y'] = 'y',
    ['z'] = 'z', ['A'] = 'a', ['B'] = 'b', ['C'] = 'c', ['D'] = 'd',
    ['E'] = 'e', ['F'] = 'f', ['G'] = 'g', ['H'] = 'h', ['I'] = 'i',
    ['J'] = 'j', ['K'] = 'k', ['L'] = 'l', ['M'] = 'm', ['N'] = 'n',
    ['O'] = 'o', ['P'] = 'p', ['Q'] = 'q', ['R'] = 'r', ['S'] = 's',
    ['T'] = 't', ['U'] = 'u', ['V'] = 'v', ['W'] = 'w', ['X'] = 'x',
    ['Y'] = 'y', ['Z'] = 'z',
};
#undef T

/*
 * Bytes of header values and URLs: 1 plain, 2 allowed but to be escaped or
 * UTF-8-checked by gk_json_quote, 0 not field-content (RFC 9110 §5.5:
 * VCHAR, obs-text, SP, HTAB).
 */
static const unsigned char fchar[256] =
    {
        ['\t'] = 2,          [0x20 ... 0x21] = 1, ['"'] = 2,
        [0x23 ... 0x5b] = 1, ['\\'] = 2,          [0x5d ... 0x7e] = 1,
        [0x80 ... 0xff] = 2,
};

/* True when every byte is printable ASCII other than '"' and '\\': the
 * common case, in a loop the compiler can vectorize. */
static bool
plain(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned odd = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[i];
		odd |=
		    (unsigned char)(c - 0x20) >= 0x5f || c == '"' || c == '\\';
	}
	return !odd;
}

static int
fail(gk_http_parser *p, int status, const char *why)
{
	p->info.error_status = status;
	p->info.error = why;
	p->info.keep_alive = false;
	p->phase = PH_ERROR;
	return -1; /* stops http_parser with HPE_CB_* */
}

/*
 * A request's state lives only while it is parsed (an idle connection holds
 * none); the finished ones of a thread are kept for the next, with their
 * text buffer, up to a bound.
 */
#define SPARE_REQS 32
#define SPARE_TEXT_MAX 4096
static _Thread_local struct req *spare_req[SPARE_REQS];
static _Thread_local unsigned nspare_req;

static struct req *
req_new(void)
{
	struct req *r;
	gk_buf text = {0};
	if (nspare_req) {
		r = spare_req[--nspare_req];
		text = r->text;
		text.len = 0;
	} else
		r = gk_xmalloc(sizeof *r);
	memset(r, 0, offsetof(struct req, inl));
	r->text = text;
	gk_buf_reserve(&r->text, 1000); /* most requests fit: no realloc */
	r->h = r->inl;
	r->hcap = INLINE_HEADERS;
	r->cl_idx = r->te_idx = r->expect_idx = r->host_idx = -1;
	return r;
}

static void
req_free(struct req *r)
{
	if (!r)
		return;
	if (r->h != r->inl)
		free(r->h);
	if (nspare_req < SPARE_REQS && r->text.cap <= SPARE_TEXT_MAX) {
		spare_req[nspare_req++] = r;
		return;
	}
	gk_buf_free(&r->text);
	free(r);
}

static int
on_message_begin(http_parser *hp)
{
	gk_http_parser *p = hp->data;
	memset(&p->info, 0, sizeof p->info);
	p->info.http_minor = 1;
	p->ext_bytes = 0;
	p->trailer_bytes = 0;
	p->phase = PH_HEAD;
	if (!p->r)
		p->r = req_new();
	return 0;
}

static int
on_url(http_parser *hp, const char *at, size_t n)
{
	gk_http_parser *p = hp->data;
	/* The method is known now: an error answered from here on is one
	 * to a HEAD, without a body (RFC 9112 §6.3), if it is one. */
	p->info.head = hp->method == HTTP_HEAD;
	if (!plain(at, n)) {
		/* RFC 9112 §3.2: the target is ASCII; other bytes would
		 * become U+FFFD on the wire, and different targets one. */
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)at[i];
			if (c >= 0x80)
				return fail(p, 400,
				            "request target is not ASCII");
			/* http_parser lets HTAB and FF through; a parser
			 * splitting on any whitespace would end the target
			 * there (RFC 9112 §3). */
			if (c < 0x20 || c == 0x7f)
				return fail(
				    p, 400,
				    "control character in request target");
		}
		p->r->url_esc = 1;
	}
	gk_buf_add(&p->r->text, at, n);
	p->r->url_len += (uint32_t)n;
	return 0;
}

static bool
name_is(const struct req *r, const struct hdr *h, const char *s, size_t n)
{
	return h->name_len == n &&
	       memcmp(r->text.data + h->name_off, s, n) == 0;
}

static bool
ieq(const char *a, size_t n, const char *lit)
{
	size_t m = strlen(lit);
	return n == m && strncasecmp(a, lit, n) == 0;
}

/* The value of the last header is complete: trim it, note what it is. */
static void
finish_value(struct req *r)
{
	struct hdr *h = &r->h[r->nh - 1];
	const char *v = r->text.data + h->val_off;
	while (h->val_len &&
	       (v[h->val_len - 1] == ' ' || v[h->val_len - 1] == '\t'))
		h->val_len--;
	r->text.len = h->val_off + h->val_len;
	/* A cheap key for grouping repeated names in encode. */
	const unsigned char *nm =
	    (const unsigned char *)r->text.data + h->name_off;
	h->hash = (uint32_t)h->name_len | (uint32_t)nm[0] << 8 |
	          (uint32_t)nm[h->name_len / 2] << 16 |
	          (uint32_t)nm[h->name_len - 1] << 24;
	int i = (int)r->nh - 1;
	switch (h->name_len) {
	case 4:
		if (name_is(r, h, "host", 4))
			r->nhost++, r->host_idx = i;
		break;
	case 6:
		if (name_is(r, h, "expect", 6))
			r->nexpect++, r->expect_idx = i;
		break;
	case 14:
		if (name_is(r, h, "content-length", 14)) {
			if (r->ncl++ == 0)
				r->cl_idx = i;
		}
		break;
	case 15:
		if (name_is(r, h, "x-gk-timeout-ms", 15))
			r->ntimeout = 1;
		break;
	case 17:
		if (name_is(r, h, "transfer-encoding", 17))
			r->nte++, r->te_idx = i;
		break;
	}
}

/* A value piece that starts a line (after LF and blanks): obs-fold, which
 * http_parser joins to the line before; RFC 9112 §5.2 lets us reject it. */
static bool
folded(const gk_http_parser *p, const char *at)
{
	const char *q = at;
	while (q > p->slice && (q[-1] == ' ' || q[-1] == '\t'))
		q--;
	return q > p->slice ? q[-1] == '\n' : p->tail_lf_ws;
}

/*
 * Trailer fields are dropped, but framed by the same rules as header
 * fields: http_parser lets a space into a name (so "X : v" would pass)
 * and joins folded lines, which a server or proxy behind or before us
 * may read differently.
 */
static int
trailer_piece(gk_http_parser *p, const char *at, size_t n, bool name)
{
	for (size_t i = 0; i < n; i++)
		if (name ? !tlower[(unsigned char)at[i]]
		         : !fchar[(unsigned char)at[i]])
			return fail(p, 400,
			            name ? "invalid trailer field name"
			                 : "invalid byte in trailer field");
	if (!name && n && folded(p, at))
		return fail(p, 400, "obs-fold in trailer field");
	return 0;
}

static int
on_header_field(http_parser *hp, const char *at, size_t n)
{
	gk_http_parser *p = hp->data;
	struct req *r = p->r;
	if (p->phase != PH_HEAD) /* trailers of a chunked body: dropped */
		return trailer_piece(p, at, n, true);
	if (r->last != L_FIELD) {
		/* A name begins a line; anything else is a bare CR taken
		 * for a line end. */
		char before = at > p->slice ? at[-1] : (char)p->last_byte;
		if (n && before != '\n')
			return fail(p, 400, "bare CR in header section");
		if (r->last == L_VALUE)
			finish_value(r);
		if (r->nh == MAX_HEADERS)
			return fail(p, 431, "too many header fields");
		if (r->nh == r->hcap) {
			uint32_t cap = r->hcap * 2;
			struct hdr *h = gk_xmalloc(cap * sizeof *h);
			memcpy(h, r->h, r->nh * sizeof *h);
			if (r->h != r->inl)
				free(r->h);
			r->h = h;
			r->hcap = cap;
		}
		struct hdr *h = &r->h[r->nh++];
		h->name_off = (uint32_t)r->text.len;
		h->name_len = 0;
		h->esc = 0;
		h->val_off = h->val_len = 0;
		r->last = L_FIELD;
	}
	struct hdr *h = &r->h[r->nh - 1];
	if (h->name_len + n > UINT16_MAX)
		return fail(p, 431, "header name too long");
	gk_buf_reserve(&r->text, n);
	char *o = r->text.data + r->text.len;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = tlower[(unsigned char)at[i]];
		if (!c)
			return fail(p, 400, "invalid header name");
		o[i] = (char)c;
	}
	h->name_len += (uint16_t)n;
	r->text.len += n;
	return 0;
}

static int
on_header_value(http_parser *hp, const char *at, size_t n)
{
	gk_http_parser *p = hp->data;
	struct req *r = p->r;
	if (p->phase != PH_HEAD)
		return trailer_piece(p, at, n, false);
	if (r->last != L_VALUE) {
		if (r->last != L_FIELD || r->h[r->nh - 1].name_len == 0)
			return fail(p, 400, "empty header name");
		r->h[r->nh - 1].val_off = (uint32_t)r->text.len;
		r->last = L_VALUE;
	}
	if (!n)
		return 0;
	if (folded(p, at))
		return fail(p, 400, "obs-fold in header value");
	if (!plain(at, n)) {
		/* the slow path, only for values with something to look at */
		unsigned cls = 1;
		for (size_t i = 0; i < n; i++) {
			unsigned c = fchar[(unsigned char)at[i]];
			if (!c)
				return fail(p, 400,
				            "invalid byte in header value");
			cls |= c;
		}
		r->h[r->nh - 1].esc |= cls != 1;
	}
	gk_buf_add(&r->text, at, n);
	r->h[r->nh - 1].val_len += (uint32_t)n;
	return 0;
}

static const char *
hval(const struct req *r, int i, size_t *n)
{
	*n = r->h[i].val_len;
	return r->text.data + r->h[i].val_off;
}

/* reg-name and IPv4address bytes (RFC 3986 §3.2.2): unreserved,
 * pct-encoded, sub-delims. */
static const unsigned char hostc[256] = {
    ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['0' ... '9'] = 1, ['-'] = 1,
    ['.'] = 1,         ['_'] = 1,         ['~'] = 1,         ['%'] = 1,
    ['!'] = 1,         ['$'] = 1,         ['&'] = 1,         ['\''] = 1,
    ['('] = 1,         [')'] = 1,         ['*'] = 1,         ['+'] = 1,
    [','] = 1,         [';'] = 1,         ['='] = 1,
};

/*
 * uri-host [":" port] (RFC 9112 §3.2, RFC 3986 §3.2.2), or empty (RFC
 * 9110 §7.2).  Anything else is a Host the server MUST answer 400: a
 * space, '/', '@' or '?' would make the authority a handler rebuilds
 * from it another one than the client's.
 */
static bool
host_valid(const char *s, size_t n)
{
	size_t i = 0;
	if (n && s[0] == '[') { /* IP-literal, its zone id percent-encoded */
		while (++i < n && s[i] != ']')
			if (!hostc[(unsigned char)s[i]] && s[i] != ':')
				return false;
		if (i++ >= n)
			return false;
	} else
		while (i < n && hostc[(unsigned char)s[i]])
			i++;
	if (i < n && s[i] == ':')
		while (++i < n)
			if (s[i] < '0' || s[i] > '9')
				return false;
	return i == n;
}

/* Split the request target into path and query (no '?', no fragment), and
 * the authority of an absolute-form one.  Returns 0, or the reason for a
 * 400. */
static const char *
split_url(struct req *r, enum http_method method)
{
	const char *u = r->text.data;
	size_t n = r->url_len;
	if (n && u[0] == '/') {
		const char *hash = memchr(u, '#', n);
		if (hash)
			n = (size_t)(hash - u);
		const char *qm = memchr(u, '?', n);
		r->path_off = 0;
		r->path_len = (uint32_t)(qm ? (size_t)(qm - u) : n);
		r->query_off = qm ? r->path_len + 1 : 0;
		r->query_len = qm ? (uint32_t)(n - r->path_len - 1) : 0;
		return NULL;
	}
	if (n == 1 && u[0] == '*') { /* OPTIONS * */
		/* RFC 9112 §3.2.4: the asterisk-form is OPTIONS's only */
		if (method != HTTP_OPTIONS)
			return "asterisk-form target not with OPTIONS";
		r->path_off = 0;
		r->path_len = 1;
		return NULL;
	}
	/*
	 * absolute-form: its authority is the host (RFC 9112 §3.2.2: the
	 * Host header is ignored), and its path and query are kept.
	 */
	struct http_parser_url pu;
	http_parser_url_init(&pu);
	if (!n || http_parser_parse_url(u, n, 0, &pu) != 0 ||
	    !(pu.field_set & (1 << UF_HOST)) ||
	    !(pu.field_set & (1 << UF_SCHEMA)))
		return "invalid request target";
	const char *sch = u + pu.field_data[UF_SCHEMA].off;
	size_t sl = pu.field_data[UF_SCHEMA].len;
	if (!ieq(sch, sl, "http") && !ieq(sch, sl, "https"))
		return "request target scheme not http or https";
	/* Credentials in the target (RFC 9110 §4.2.4), wherever
	 * http_parser would put them. */
	size_t a = (size_t)(sch - u) + sl + 3, e = a;
	if (a > n || memcmp(sch + sl, "://", 3) != 0)
		return "invalid request target";
	while (e < n && u[e] != '/' && u[e] != '?' && u[e] != '#')
		e++;
	if ((pu.field_set & (1 << UF_USERINFO)) || memchr(u + a, '@', e - a))
		return "userinfo in request target";
	if (!host_valid(u + a, e - a))
		return "invalid authority in request target";
	r->auth_off = (uint32_t)a;
	r->auth_len = (uint32_t)(e - a);
	if (pu.field_set & (1 << UF_PATH)) {
		r->path_off = pu.field_data[UF_PATH].off;
		r->path_len = pu.field_data[UF_PATH].len;
	} else {
		r->path_off = UINT32_MAX; /* "/" */
		r->path_len = 1;
	}
	if (pu.field_set & (1 << UF_QUERY)) {
		r->query_off = pu.field_data[UF_QUERY].off;
		r->query_len = pu.field_data[UF_QUERY].len;
	}
	return NULL;
}

/* http_should_keep_alive, but "close" wins over "keep-alive" in HTTP/1.0
 * too (RFC 9112 §9.3: close is looked at first, whatever the version). */
static bool
keep_alive(const http_parser *hp)
{
	return http_should_keep_alive(hp) && !(hp->flags & F_CONNECTION_CLOSE);
}

static int
on_headers_complete(http_parser *hp)
{
	gk_http_parser *p = hp->data;
	struct req *r = p->r;
	if (r->last == L_FIELD)
		return fail(p, 400, "header without colon");
	if (r->last == L_VALUE)
		finish_value(r);
	r->last = L_NONE;
	p->info.http_minor = hp->http_minor ? 1 : 0;
	if (hp->http_major != 1)
		return fail(p, 505, "HTTP version not supported");
	if (hp->method == HTTP_CONNECT)
		return fail(p, 501, "CONNECT not supported");
	size_t n;
	const char *v;
	if (r->nte) {
		if (r->ncl)
			return fail(p, 400,
			            "content-length with transfer-encoding");
		v = hval(r, r->te_idx, &n);
		if (r->nte > 1 || !ieq(v, n, "chunked"))
			return fail(p, 501, "unsupported transfer-encoding");
	}
	if (r->ncl > 1) {
		/* Never reached with libhttp_parser, which refuses a second
		 * Content-Length, identical or not (gk-listener(1) says
		 * so); kept should it ever merge identical copies. */
		size_t n0;
		const char *v0 = hval(r, r->cl_idx, &n0);
		for (uint32_t i = (uint32_t)r->cl_idx + 1; i < r->nh; i++) {
			if (!name_is(r, &r->h[i], "content-length", 14))
				continue;
			v = hval(r, (int)i, &n);
			if (n != n0 || memcmp(v, v0, n) != 0)
				return fail(p, 400,
				            "conflicting content-length");
		}
	}
	/* obs-text is field content, but the wire carries UTF-8 only: a value
	 * that is not would arrive changed (U+FFFD), so it is refused. */
	for (uint32_t i = 0; i < r->nh; i++)
		if (r->h[i].esc &&
		    !gk_utf8_valid(r->text.data + r->h[i].val_off,
		                   r->h[i].val_len))
			return fail(p, 400, "header value is not UTF-8");
	if (r->nhost > 1 || (hp->http_minor >= 1 && r->nhost == 0))
		return fail(p, 400, "missing or repeated host");
	if (r->nhost) {
		v = hval(r, r->host_idx, &n);
		if (!host_valid(v, n))
			return fail(p, 400, "invalid host");
	}
	const char *bad = split_url(r, (enum http_method)hp->method);
	if (bad)
		return fail(p, 400, bad);
	bool chunked = hp->flags & F_CHUNKED;
	bool has_cl = !chunked && r->ncl;
	if (has_cl && hp->content_length > p->max_body)
		return fail(p, 413, "content-length over the body limit");
	bool has_body = chunked || (has_cl && hp->content_length > 0);

	const char *m = http_method_str((enum http_method)hp->method);
	size_t ml = strlen(m);
	if (ml >= sizeof p->info.method)
		ml = sizeof p->info.method - 1;
	memcpy(p->info.method, m, ml);
	p->info.method[ml] = 0;
	p->info.head = hp->method == HTTP_HEAD;
	p->info.timeout_header = r->ntimeout;
	p->info.keep_alive = keep_alive(hp);

	p->cont = 0;
	if (r->nexpect && hp->http_minor >= 1) {
		/* RFC 9110 §10.1.1; HTTP/1.0 clients' Expect is ignored */
		v = hval(r, r->expect_idx, &n);
		/* An empty value is an empty list: nothing is expected. */
		if (r->nexpect > 1 || (n && !ieq(v, n, "100-continue")))
			return fail(p, 417, "unsupported expectation");
		p->cont = n && has_body;
	}
	/* Upgrade is not supported: serve the request as plain HTTP/1.1. */
	hp->upgrade = 0;
	r->body_off = (uint32_t)r->text.len;
	if (has_cl)
		gk_buf_reserve(&r->text, hp->content_length < BODY_PREALLOC
		                             ? (size_t)hp->content_length
		                             : BODY_PREALLOC);
	p->phase = PH_BODY;
	p->pause = PZ_HEADERS;
	http_parser_pause(hp, 1);
	return 0;
}

static int
on_body(http_parser *hp, const char *at, size_t n)
{
	gk_http_parser *p = hp->data;
	struct req *r = p->r;
	if (r->text.len - r->body_off + n > p->max_body)
		return fail(p, 413, "body over the limit");
	gk_buf_add(&r->text, at, n);
	return 0;
}

static int
on_chunk_header(http_parser *hp)
{
	gk_http_parser *p = hp->data;
	/* A chunk that cannot fit is refused now, as a Content-Length is,
	 * not once its bytes have come. */
	if (hp->content_length >
	    p->max_body - (p->r->text.len - p->r->body_off))
		return fail(p, 413, "chunk over the body limit");
	p->pause = PZ_CHUNK;
	http_parser_pause(hp, 1);
	return 0;
}

static int
on_chunk_complete(http_parser *hp)
{
	gk_http_parser *p = hp->data;
	/* http_parser also calls it at the end of the trailers. */
	p->pause = hp->flags & F_TRAILING ? PZ_TRAILERS : PZ_CHUNK_END;
	http_parser_pause(hp, 1);
	return 0;
}

static int
on_message_complete(http_parser *hp)
{
	gk_http_parser *p = hp->data;
	/* RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing:
	 * answer, then close. */
	p->info.keep_alive =
	    keep_alive(hp) && !(p->r->nte && hp->http_minor == 0);
	p->info.body_len = p->r->text.len - p->r->body_off;
	p->phase = PH_DONE;
	p->pause = PZ_MESSAGE;
	http_parser_pause(hp, 1);
	return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
};

gk_http_parser *
gk_http_parser_new(const gk_http_limits *limits)
{
	gk_http_parser *p = gk_xcalloc(1, sizeof *p);
	size_t mh = limits && limits->max_header ? limits->max_header
	                                         : DEFAULT_MAX_HEADER;
	if (mh > UINT32_MAX / 2)
		mh = UINT32_MAX / 2;
	p->max_header = (uint32_t)mh;
	p->max_body =
	    limits && limits->max_body ? limits->max_body : DEFAULT_MAX_BODY;
	if (p->max_body > UINT32_MAX / 2)
		p->max_body = UINT32_MAX / 2; /* offsets are 32-bit */
	/* http_parser's own limit (a process-wide setting) must not be the
	 * one that bites first: only ever raise it. */
	static uint32_t hp_max = HTTP_MAX_HEADER_SIZE;
	if (mh + 1024 > hp_max) {
		hp_max = (uint32_t)mh + 1024;
		http_parser_set_max_header_size(hp_max);
	}
	http_parser_init(&p->hp, HTTP_REQUEST);
	p->hp.data = p;
	p->last_byte = '\n';
	p->info.http_minor = 1;
	return p;
}

void
gk_http_parser_free(gk_http_parser *p)
{
	if (!p)
		return;
	req_free(p->r);
	gk_buf_free(&p->method_line);
	free(p);
}

size_t
gk_http_parser_footprint(const gk_http_parser *p)
{
	size_t n = malloc_usable_size((void *)p) + sizeof(size_t);
	if (p->r) {
		n += malloc_usable_size(p->r) + sizeof(size_t);
		n += p->r->text.cap;
		if (p->r->h != p->r->inl)
			n += p->r->hcap * sizeof(struct hdr);
	}
	return n;
}

bool
gk_http_parser_idle(const gk_http_parser *p)
{
	return p->phase == PH_IDLE;
}

bool
gk_http_parser_in_body(const gk_http_parser *p)
{
	return p->phase == PH_BODY;
}

const gk_http_info *
gk_http_parser_info(const gk_http_parser *p)
{
	return &p->info;
}

/* Remember how the executed bytes end, for checks in the next slice. */
static void
note_tail(gk_http_parser *p, const char *s, size_t n)
{
	if (!n)
		return;
	p->last_byte = (uint8_t)s[n - 1];
	size_t i = n;
	while (i && (s[i - 1] == ' ' || s[i - 1] == '\t'))
		i--;
	if (i)
		p->tail_lf_ws = s[i - 1] == '\n';
}

/*
 * http_parser stops at the first byte that no method it knows has there.
 * When the request line is well formed but for that (token SP target SP
 * HTTP/d.d CRLF), it names a method we do not implement, or a lowercase
 * one (methods are case-sensitive): 501, RFC 9110 §9.1.  Anything else is
 * a malformed request.  s is the line from that byte on, prefix whether
 * method bytes came before it.  1: 501, 0: 400, -1: the line is not whole
 * yet (the answer must not depend on how the bytes were cut).
 */
static int
method_line(const char *s, size_t n, bool prefix)
{
	size_t i = 0;
	while (i < n && tlower[(unsigned char)s[i]])
		i++;
	if (i >= n)
		return -1;
	if ((i == 0 && !prefix) || s[i++] != ' ')
		return 0;
	size_t t = i;
	while (i < n && (unsigned char)s[i] > ' ' && (unsigned char)s[i] < 0x7f)
		i++;
	if (i >= n)
		return -1;
	if (i == t)
		return 0;
	static const char version[] = " HTTP/d.d\r\n";
	for (size_t k = 0; k < sizeof version - 1; k++, i++) {
		if (i >= n)
			return -1;
		char c = s[i];
		if (version[k] == 'd' ? c < '0' || c > '9' : c != version[k])
			return 0;
	}
	return 1;
}

static enum gk_http_feed parse_error(gk_http_parser *p);

/* Past --max-header: 414 while the request line is not yet whole (RFC 9112
 * §3: a target longer than the server will parse), 431 after (its LF the
 * last byte in: a line of just --max-header bytes is not over it). */
static void
head_too_large(gk_http_parser *p)
{
	if (p->r && p->r->nh == 0 && p->phase == PH_HEAD &&
	    p->last_byte != '\n')
		fail(p, 414, "request line too long");
	else
		fail(p, 431, "request header section too large");
}

/*
 * Where a chunk-size line is (RFC 9112 §7.1, §7.1.1):
 *   chunk-size [ chunk-ext ] CRLF
 *   chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted ) ] )
 * http_parser takes whatever follows the size and a space or ';' up to the
 * CR, so "3 \r\n", "3 x" or "3;" pass it; a parser in front or behind
 * that reads them otherwise (or takes a bare LF for the line end, §2.2)
 * frames the body otherwise: request smuggling.  So every byte is checked
 * here, whole lines or pieces alike.  BWS only ever comes before ';' or
 * '=' or after them: never before the CR.
 */
enum chunk_at {
	CK_SIZE0,   /* the first hex digit is next */
	CK_SIZE,    /* in the size */
	CK_BWS,     /* BWS after the size or a value: ';' must follow */
	CK_NAME0,   /* after ';' (and BWS): a name must follow */
	CK_NAME,    /* in a name */
	CK_NAME_WS, /* BWS after a name: '=' or ';' must follow */
	CK_VAL0,    /* after '=' (and BWS): a token or quoted-string */
	CK_TOKEN,   /* in a token value */
	CK_QUOTED,  /* in a quoted-string */
	CK_QPAIR,   /* after a backslash in one */
	CK_QEND,    /* after a closing quote */
	CK_CR,      /* after the CR: the LF must follow */
	CK_DONE,    /* after the LF */
	CK_BAD,
};

static enum chunk_at
chunk_step(enum chunk_at at, unsigned char c)
{
	bool ws = c == ' ' || c == '\t', tc = tlower[c] != 0;
	bool hex =
	    (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
	switch (at) {
	case CK_SIZE0: return hex ? CK_SIZE : CK_BAD;
	case CK_SIZE:
	case CK_TOKEN:
	case CK_QEND:
		if (at == CK_SIZE && hex)
			return CK_SIZE;
		if (at == CK_TOKEN && tc)
			return CK_TOKEN;
		return c == '\r'  ? CK_CR
		       : c == ';' ? CK_NAME0
		       : ws       ? CK_BWS
		                  : CK_BAD;
	case CK_BWS: return ws ? CK_BWS : c == ';' ? CK_NAME0 : CK_BAD;
	case CK_NAME0: return ws ? CK_NAME0 : tc ? CK_NAME : CK_BAD;
	case CK_NAME:
		if (tc)
			return CK_NAME;
		return c == '\r'  ? CK_CR
		       : c == ';' ? CK_NAME0
		       : c == '=' ? CK_VAL0
		       : ws       ? CK_NAME_WS
		                  : CK_BAD;
	case CK_NAME_WS:
		return ws         ? CK_NAME_WS
		       : c == ';' ? CK_NAME0
		       : c == '=' ? CK_VAL0
		                  : CK_BAD;
	case CK_VAL0:
		return ws         ? CK_VAL0
		       : c == '"' ? CK_QUOTED
		       : tc       ? CK_TOKEN
		                  : CK_BAD;
	case CK_QUOTED: /* qdtext: HTAB, SP, VCHAR but '"' and '\\', obs-text */
		if (c == '"')
			return CK_QEND;
		if (c == '\\')
			return CK_QPAIR;
		return (c >= 0x20 && c != 0x7f) || c == '\t' ? CK_QUOTED
		                                             : CK_BAD;
	case CK_QPAIR:
		return (c >= 0x20 && c != 0x7f) || c == '\t' ? CK_QUOTED
		                                             : CK_BAD;
	case CK_CR: return c == '\n' ? CK_DONE : CK_BAD;
	case CK_DONE:
	case CK_BAD: break;
	}
	return CK_BAD;
}

/*
 * The bytes of a chunk-size line just executed (the whole line or a piece;
 * after_head: the first is the LF that ends the header section).  Nothing
 * of an extension is kept, but its bytes are bounded all the same: a line
 * by --max-header, as a header line is, and those of a request with its
 * data by --max-body; else a client could send without end (a few bytes
 * of data, each with a long extension) for one request.
 */
static bool
chunk_line_ok(gk_http_parser *p, const char *s, size_t n, bool after_head)
{
	enum chunk_at at = p->chunk_at;
	size_t i = after_head && n, ext = 0;
	for (; i < n && at != CK_BAD; i++) {
		if (at > CK_SIZE && at < CK_CR && s[i] != '\r')
			ext++;
		at = chunk_step(at, (unsigned char)s[i]);
	}
	p->chunk_at = (uint8_t)at;
	p->chunk_line_bytes += (uint32_t)(n - (after_head && n));
	p->ext_bytes += ext;
	const char *why = NULL;
	int status = 400;
	if (at == CK_BAD)
		why = "invalid chunk line";
	else if (at != CK_DONE && p->chunk_line_bytes >= p->max_header)
		status = 431, why = "chunk line too long";
	else if (p->ext_bytes > p->max_body - (p->r->text.len - p->r->body_off))
		status = 413, why = "chunk extensions over the body limit";
	if (why)
		fail(p, status, why);
	return !why;
}

/* PH_METHOD: take the line up to its LF (within the header limit) and
 * decide once it is whole. */
static enum gk_http_feed
method_rest(gk_http_parser *p, const char *data, size_t len, size_t *consumed)
{
	size_t room = p->max_header - p->hdr_bytes;
	size_t n = len < room ? len : room;
	const char *lf = memchr(data, '\n', n);
	size_t take = lf ? (size_t)(lf - data) + 1 : n;
	gk_buf_add(&p->method_line, data, take);
	p->hdr_bytes += (uint32_t)take;
	*consumed += take;
	int r = method_line(p->method_line.data, p->method_line.len,
	                    p->method_prefix);
	if (r < 0 && p->hdr_bytes < p->max_header)
		return GK_HTTP_NEED_MORE;
	gk_buf_free(&p->method_line);
	if (r < 0) {
		fail(p, 431, "request header section too large");
		return GK_HTTP_ERROR;
	}
	if (r) {
		fail(p, 501, "method not implemented");
		return GK_HTTP_ERROR;
	}
	return parse_error(p);
}

static enum gk_http_feed
parse_error(gk_http_parser *p)
{
	if (p->phase == PH_ERROR)
		return GK_HTTP_ERROR; /* a callback said why */
	enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
	int status = 400;
	if (e == HPE_HEADER_OVERFLOW)
		status = 431;
	else if (e == HPE_INVALID_TRANSFER_ENCODING)
		status = 501;
	fail(p, status, http_errno_description(e));
	return GK_HTTP_ERROR;
}

enum gk_http_feed
gk_http_parser_feed(gk_http_parser *p, const char *data, size_t len,
                    size_t *consumed)
{
	*consumed = 0;
	if (p->phase == PH_ERROR)
		return GK_HTTP_ERROR;
	if (p->phase == PH_DONE)
		return GK_HTTP_REQUEST; /* encode it first */
	if (p->phase == PH_METHOD)
		return method_rest(p, data, len, consumed);
	size_t off = 0;
	while (off < len) {
		size_t n = len - off;
		bool head = p->phase < PH_BODY;
		if (head) {
			/* Never hand http_parser more header bytes than
			 * allowed: past the limit is a 431, not a parse. */
			size_t room = p->max_header - p->hdr_bytes;
			if (n > room)
				n = room;
		} else if (p->chunk_line) {
			/* nor more of a chunk line (the LF that ends the
			 * headers aside): past it is a 431 too */
			size_t room = p->max_header - p->chunk_line_bytes +
			              (p->chunk_line == CL_AFTER_HEAD);
			if (n > room)
				n = room;
		}
		/* nor more of a trailer section than of a header section
		 * (http_parser's own bound is its process-wide one) */
		bool trail = !head && p->phase == PH_BODY && !p->chunk_line &&
		             (p->hp.flags & F_TRAILING);
		if (trail && n > p->max_header - p->trailer_bytes)
			n = p->max_header - p->trailer_bytes;
		if (HTTP_PARSER_ERRNO(&p->hp) == HPE_PAUSED)
			http_parser_pause(&p->hp, 0);
		p->pause = PZ_NONE;
		p->slice = data + off;
		size_t got =
		    http_parser_execute(&p->hp, &settings, data + off, n);
		const char *s = data + off;
		enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
		/* A chunk line's own fault first, whatever http_parser made
		 * of it (it takes bytes >= 0x80 for the digit 0: "3\xff" is a
		 * size of 0x30, over --max-body or not), so that the answer
		 * is the same however it is cut. */
		if (p->chunk_line &&
		    !chunk_line_ok(p, s, got, p->chunk_line == CL_AFTER_HEAD)) {
			*consumed = off + got;
			return GK_HTTP_ERROR;
		}
		if (e != HPE_OK && e != HPE_PAUSED) {
			*consumed = off + got;
			if (e == HPE_INVALID_METHOD) {
				/* Method bytes came before when the message
				 * began (http_parser calls that at the first
				 * byte of a method it may know). */
				p->method_prefix = p->phase == PH_HEAD;
				p->phase = PH_METHOD;
				if (head)
					p->hdr_bytes += (uint32_t)got;
				return method_rest(p, s + got, n - got,
				                   consumed);
			}
			return parse_error(p);
		}
		char prev = (char)p->last_byte;
		if (got && p->chunk_line == CL_AFTER_HEAD)
			p->chunk_line = CL_YES; /* that LF is behind */
		note_tail(p, s, got);
		if (head)
			p->hdr_bytes += (uint32_t)got;
		if (trail)
			p->trailer_bytes += (uint32_t)got;
		off += got;
		if (e == HPE_PAUSED) {
			/*
			 * http_parser takes any byte for the LF after the
			 * CR that ends the header section or a chunk line:
			 * check it is one (see enum pause for where).
			 */
			bool bad = false;
			switch (p->pause) {
			case PZ_HEADERS:
			case PZ_TRAILERS:
				bad = got >= n || s[got] != '\n';
				break;
			case PZ_CHUNK:
				bad = !got || s[got - 1] != '\n' ||
				      p->chunk_at != CK_DONE;
				break;
			case PZ_CHUNK_END:
				bad = !got || s[got - 1] != '\n' ||
				      (got >= 2 ? s[got - 2] : prev) != '\r';
				break;
			case PZ_MESSAGE: /* chunked: the LF after the trailers
			                  */
				bad = (p->hp.flags & F_CHUNKED) &&
				      (!got || s[got - 1] != '\n');
				break;
			}
			if (bad) {
				*consumed = off;
				fail(p, 400, "bad line end in message framing");
				return GK_HTTP_ERROR;
			}
			/* What comes next is a chunk-size line: after the
			 * headers of a chunked request, after a chunk. */
			if (p->pause != PZ_CHUNK) { /* if a line is next */
				p->chunk_at = CK_SIZE0;
				p->chunk_line_bytes = 0;
			}
			if (p->pause == PZ_CHUNK)
				p->chunk_line = CL_NO;
			else if (p->pause == PZ_CHUNK_END)
				p->chunk_line = CL_YES;
			else if (p->pause == PZ_HEADERS &&
			         (p->hp.flags & F_CHUNKED))
				p->chunk_line = CL_AFTER_HEAD;
			if (p->pause == PZ_MESSAGE) {
				*consumed = off;
				return GK_HTTP_REQUEST;
			}
			if (p->pause == PZ_HEADERS && p->cont) {
				p->cont = 0;
				*consumed = off;
				return GK_HTTP_CONTINUE;
			}
			continue;
		}
		if (got < n) { /* cannot happen without an error; be safe */
			*consumed = off;
			fail(p, 400, "malformed request");
			return GK_HTTP_ERROR;
		}
		if (p->phase < PH_BODY && p->hdr_bytes >= p->max_header) {
			*consumed = off;
			head_too_large(p);
			return GK_HTTP_ERROR;
		}
		if (trail && p->trailer_bytes >= p->max_header) {
			*consumed = off;
			fail(p, 431, "trailer section too large");
			return GK_HTTP_ERROR;
		}
	}
	*consumed = off;
	return GK_HTTP_NEED_MORE;
}

static inline void
lit(gk_buf *b, const char *s, size_t n)
{
	memcpy(b->data + b->len, s, n);
	b->len += n;
}
#define LIT(b, s) lit(b, s, sizeof s - 1)

/* A JSON string; text known to need no escaping is copied as it is. */
static inline void
put_str(gk_buf *b, const char *s, size_t n, bool esc)
{
	if (esc) {
		gk_json_quote(b, s, n);
		return;
	}
	gk_buf_reserve(b, n + 2);
	b->data[b->len++] = '"';
	lit(b, s, n);
	b->data[b->len++] = '"';
}

/*
 * Where each member went, while encoding for gk_http_parser_encode_msg: the
 * offsets of its key's opening quote, of its value and of the value's end,
 * kept as offsets because out may move as it grows.
 */
struct member_at {
	size_t key, klen, val, end;
	enum gk_json_type type;
};
struct index_at {
	struct member_at m[8];
	unsigned n;
};

/* A member starts: its key (with quotes, klen bytes) at out->len + skip. */
static inline void
mark(struct index_at *ix, const gk_buf *out, size_t skip, size_t klen,
     enum gk_json_type type)
{
	if (!ix)
		return;
	size_t at = out->len + skip;
	ix->m[ix->n++] = (struct member_at){at, klen, at + klen + 1, 0, type};
}

static void encode(gk_http_parser *p, const char *id, const char *remote,
                   uint64_t deadline_ms, gk_buf *out, struct index_at *ix);

void
gk_http_parser_encode(gk_http_parser *p, const char *id, const char *remote,
                      uint64_t deadline_ms, gk_buf *out)
{
	encode(p, id, remote, deadline_ms, out, NULL);
}

gk_msg *
gk_http_parser_encode_msg(gk_http_parser *p, const char *id, const char *remote,
                          uint64_t deadline_ms)
{
	if (p->phase != PH_DONE)
		return NULL;
	gk_msg *m = gk__msg_blank();
	struct index_at ix = {0};
	encode(p, id, remote, deadline_ms, &m->line, &ix);
	gk_wire_msg *w = &m->wire;
	const char *base = m->line.data;
	w->line = base;
	w->len = m->line.len;
	w->nfields = ix.n;
	w->escaped = 0; /* every key is one of ours, plain */
	for (unsigned i = 0; i < ix.n; i++) {
		const struct member_at *a = &ix.m[i];
		w->field[i].key =
		    (gk_json){GK_JSON_STRING, base + a->key, a->klen};
		w->field[i].value =
		    (gk_json){a->type, base + a->val, a->end - a->val};
	}
#if defined(__SANITIZE_ADDRESS__)
	/* The index must be what a parse makes of the line. */
	gk_wire_msg chk;
	gk_wire_error err;
	if (gk_wire_parse(&chk, base, m->line.len, &err) < 0 ||
	    !gk__wire_same_index(&chk, w))
		abort();
#endif
	return m;
}

static void
encode(gk_http_parser *p, const char *id, const char *remote,
       uint64_t deadline_ms, gk_buf *out, struct index_at *ix)
{
	if (p->phase != PH_DONE)
		return;
#define END_VALUE() (ix ? (void)(ix->m[ix->n - 1].end = out->len) : (void)0)
	struct req *r = p->r;
	const char *t = r->text.data;
	size_t idl = id ? strlen(id) : 0, rl = remote ? strlen(remote) : 0;
	size_t body_len = r->text.len - r->body_off;
	/* One reservation for the common case (nothing to escape), so the
	 * literal pieces below are plain copies. */
	gk_buf_reserve(out, 128 + idl + rl + r->body_off + 8 * r->nh +
	                        body_len + body_len / 3 + 4);

	mark(ix, out, 1, 4, GK_JSON_STRING);
	LIT(out, "{\"id\":");
	gk_json_quote(out, id ? id : "", idl);
	END_VALUE();
	gk_buf_reserve(out, 64);
	mark(ix, out, 1, 8, GK_JSON_STRING);
	LIT(out, ",\"method\":\"");
	lit(out, p->info.method, strlen(p->info.method));
	out->data[out->len++] = '"';
	END_VALUE();
	mark(ix, out, 1, 6, GK_JSON_STRING);
	LIT(out, ",\"path\":");
	if (r->path_off == UINT32_MAX)
		gk_json_quote(out, "/", 1);
	else
		put_str(out, t + r->path_off, r->path_len, r->url_esc);
	END_VALUE();
	gk_buf_reserve(out, 64);
	mark(ix, out, 1, 7, GK_JSON_STRING);
	LIT(out, ",\"query\":");
	put_str(out, t + r->query_off, r->query_len, r->url_esc);
	END_VALUE();
	gk_buf_reserve(out, 64);
	mark(ix, out, 1, 9, GK_JSON_OBJECT);
	LIT(out, ",\"headers\":{");

	/* Repeated names become arrays, at the place of the first one. */
	uint8_t done[MAX_HEADERS];
	memset(done, 0, r->nh);
	bool first = true;
	for (uint32_t i = 0; i < r->nh; i++) {
		if (done[i])
			continue;
		const struct hdr *h = &r->h[i];
		uint32_t more = 0;
		for (uint32_t j = i + 1; j < r->nh; j++) {
			const struct hdr *k = &r->h[j];
			if (k->hash == h->hash && k->name_len == h->name_len &&
			    memcmp(t + k->name_off, t + h->name_off,
			           h->name_len) == 0) {
				done[j] = 1;
				more++;
			}
		}
		/* Names are lowercase tokens: nothing to escape. */
		gk_buf_reserve(out, h->name_len + 8);
		if (!first)
			out->data[out->len++] = ',';
		first = false;
		out->data[out->len++] = '"';
		lit(out, t + h->name_off, h->name_len);
		LIT(out, "\":");
		if ((int)i == r->host_idx && r->auth_len) {
			put_str(out, t + r->auth_off, r->auth_len, r->url_esc);
			continue;
		}
		if (!more) {
			put_str(out, t + h->val_off, h->val_len, h->esc);
			continue;
		}
		gk_buf_addc(out, '[');
		for (uint32_t j = i; j < r->nh; j++) {
			const struct hdr *k = &r->h[j];
			if (j != i && (!done[j] || k->hash != h->hash ||
			               k->name_len != h->name_len ||
			               memcmp(t + k->name_off, t + h->name_off,
			                      h->name_len) != 0))
				continue;
			if (j != i)
				gk_buf_addc(out, ',');
			put_str(out, t + k->val_off, k->val_len, k->esc);
		}
		gk_buf_addc(out, ']');
	}
	if (r->host_idx < 0 && r->auth_len) {
		/* HTTP/1.0 without Host: the target's authority */
		gk_buf_adds(out, first ? "\"host\":" : ",\"host\":");
		put_str(out, t + r->auth_off, r->auth_len, r->url_esc);
	}
	gk_buf_addc(out, '}');
	END_VALUE();
	if (body_len) {
		const char *b = t + r->body_off;
		if (gk_utf8_valid(b, body_len)) {
			mark(ix, out, 1, 6, GK_JSON_STRING);
			gk_buf_adds(out, ",\"body\":");
			gk_json_quote(out, b, body_len);
		} else {
			mark(ix, out, 1, 10, GK_JSON_STRING);
			gk_buf_adds(out, ",\"body_b64\":\"");
			gk_base64_encode(out, b, body_len);
			gk_buf_addc(out, '"');
		}
		END_VALUE();
	}
	if (remote) {
		mark(ix, out, 1, 8, GK_JSON_STRING);
		gk_buf_adds(out, ",\"remote\":");
		gk_json_quote(out, remote, rl);
		END_VALUE();
	}
	if (deadline_ms) {
		mark(ix, out, 1, 10, GK_JSON_NUMBER);
		gk_buf_adds(out, ",\"deadline\":");
		gk_buf_adduint(out, deadline_ms);
		END_VALUE();
	}
	gk_buf_addc(out, '}');
#undef END_VALUE

	/* Ready for the next request; an idle connection holds no buffers. */
	req_free(p->r);
	p->r = NULL;
	p->phase = PH_IDLE;
	p->hdr_bytes = 0;
}
