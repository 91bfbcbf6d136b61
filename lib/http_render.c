/*
 * http_render.c: wire responses out as HTTP/1.x bytes, the transport's own
 * responses, reason phrases and the cached Date.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http.h"

const char *
gk_http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 103: return "Early Hints";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 203: return "Non-Authoritative Information";
	case 204: return "No Content";
	case 205: return "Reset Content";
	case 206: return "Partial Content";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 425: return "Too Early";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

const char *
gk_http_date(void)
{
	/* Per thread: gk_serve -j renders on worker threads. */
	static __thread char buf[32];
	static __thread time_t last = -1;
	static const char wd[7][4] = {"Sun", "Mon", "Tue", "Wed",
	                              "Thu", "Fri", "Sat"};
	static const char mo[12][4] = {"Jan", "Feb", "Mar", "Apr",
	                               "May", "Jun", "Jul", "Aug",
	                               "Sep", "Oct", "Nov", "Dec"};
	time_t now = time(NULL);
	if (now == last)
		return buf;
	struct tm tm;
	gmtime_r(&now, &tm);
	/* Not strftime: %a and %b follow the locale, the header may not. */
	char *o = buf;
	memcpy(o, wd[tm.tm_wday], 3);
	o += 3;
	*o++ = ',';
	*o++ = ' ';
	*o++ = (char)('0' + tm.tm_mday / 10);
	*o++ = (char)('0' + tm.tm_mday % 10);
	*o++ = ' ';
	memcpy(o, mo[tm.tm_mon], 3);
	o += 3;
	*o++ = ' ';
	int y = tm.tm_year + 1900;
	*o++ = (char)('0' + y / 1000 % 10);
	*o++ = (char)('0' + y / 100 % 10);
	*o++ = (char)('0' + y / 10 % 10);
	*o++ = (char)('0' + y % 10);
	*o++ = ' ';
	*o++ = (char)('0' + tm.tm_hour / 10);
	*o++ = (char)('0' + tm.tm_hour % 10);
	*o++ = ':';
	*o++ = (char)('0' + tm.tm_min / 10);
	*o++ = (char)('0' + tm.tm_min % 10);
	*o++ = ':';
	*o++ = (char)('0' + tm.tm_sec / 10);
	*o++ = (char)('0' + tm.tm_sec % 10);
	memcpy(o, " GMT", 5);
	last = now;
	return buf;
}

static const unsigned char tchar[256] = {
    ['!'] = 1,         ['#'] = 1,         ['$'] = 1, ['%'] = 1,
    ['&'] = 1,         ['\''] = 1,        ['*'] = 1, ['+'] = 1,
    ['-'] = 1,         ['.'] = 1,         ['^'] = 1, ['_'] = 1,
    ['`'] = 1,         ['|'] = 1,         ['~'] = 1, ['0' ... '9'] = 1,
    ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1,
};

/* HTTP/1.1 to every client, 1.0 ones included: the version we speak
 * (RFC 9110 §6.2). */
static void
add_status_line(gk_buf *out, int status)
{
	char sl[16] = "HTTP/1.1 000 ";
	sl[9] = (char)('0' + status / 100 % 10);
	sl[10] = (char)('0' + status / 10 % 10);
	sl[11] = (char)('0' + status % 10);
	gk_buf_add(out, sl, 13);
	gk_buf_adds(out, gk_http_reason(status));
	gk_buf_add(out, "\r\n", 2);
}

static void
add_header(gk_buf *out, const char *name, size_t nl, const char *v, size_t vl)
{
	gk_buf_reserve(out, nl + vl + 4);
	memcpy(out->data + out->len, name, nl);
	out->len += nl;
	out->data[out->len++] = ':';
	out->data[out->len++] = ' ';
	memcpy(out->data + out->len, v, vl);
	out->len += vl;
	out->data[out->len++] = '\r';
	out->data[out->len++] = '\n';
}

/*
 * The text of a JSON string value.  Without escapes it is the raw span of
 * the line (no copy, and it cannot hold CR, LF or NUL: valid JSON escapes
 * control characters); otherwise unescaped into tmp.
 */
static int
str_text(gk_json v, gk_buf *tmp, const char **p, size_t *n, bool *escaped)
{
	int r = gk__json_text(v, tmp, p, n);
	*escaped = r == 1;
	return r < 0 ? -1 : 0;
}

static bool
ieq(const char *a, size_t n, const char *lit)
{
	size_t m = strlen(lit);
	return n == m && strncasecmp(a, lit, n) == 0;
}

static bool
digits(const char *p, size_t n)
{
	if (!n || n > 19)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return true;
}

bool
gk_http_field_name(const char *name, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!tchar[(unsigned char)name[i]])
			return false;
	return n > 0;
}

/* No control character but HTAB (RFC 9110 §5.5): CR or LF would split
 * the header, the others are refused by clients or worse. */
bool
gk_http_field_value(const char *v, size_t n)
{
	const unsigned char *p = (const unsigned char *)v;
	unsigned bad = 0;
	for (size_t i = 0; i < n; i++)
		bad |= (p[i] < 0x20 && p[i] != '\t') | (p[i] == 0x7f);
	return !bad;
}

/* Scratch space for unescaped text, per thread, trimmed when huge. */
static __thread gk_buf scratch_body, scratch_name, scratch_val;

static void
trim_scratch(void)
{
	if (scratch_body.cap > (1u << 20))
		gk_buf_free(&scratch_body);
	if (scratch_val.cap > (64u << 10))
		gk_buf_free(&scratch_val);
}

int
gk_http_render(const gk_msg *resp, const gk_http_info *req, bool keep_alive,
               gk_buf *out, size_t *body_bytes, const char **why)
{
	size_t start = out->len;
	const char *err = NULL;
	int minor = req ? req->http_minor : 1;
	bool head = req && req->head;
	*body_bytes = 0;

	int status = gk_msg_status(resp);
	/* The wire has no interim responses: a 1xx would be taken by the
	 * client for an interim one, and the real answer never follows. */
	if (status < 200 || status > 599) {
		err = "status outside 200-599";
		goto fail;
	}
	/* RFC 9110 §8.6: no Content-Length in 204; §15.3.6: a 205 has no
	 * body (Content-Length: 0, below). */
	bool may_length = status != 204;
	bool no_body = head || status == 204 || status == 205 || status == 304;

	const char *bp = "";
	size_t bl = 0;
	bool esc;
	gk_json b = gk_msg_get(resp, "body");
	gk_json b64 = gk_msg_get(resp, "body_b64");
	if (b.type != GK_JSON_NONE && b64.type != GK_JSON_NONE) {
		err = "both body and body_b64";
		goto fail;
	}
	if (b.type != GK_JSON_NONE &&
	    str_text(b, &scratch_body, &bp, &bl, &esc) < 0) {
		err = "body is not a string";
		goto fail;
	}
	if (b64.type != GK_JSON_NONE) {
		const char *s;
		size_t sl;
		if (str_text(b64, &scratch_val, &s, &sl, &esc) < 0) {
			err = "body_b64 is not a string";
			goto fail;
		}
		scratch_body.len = 0;
		if (gk_base64_decode(&scratch_body, s, sl) < 0) {
			err = "malformed body_b64";
			goto fail;
		}
		bp = scratch_body.data ? scratch_body.data : "";
		bl = scratch_body.len;
	}

	gk_buf_reserve(out, 128 + (no_body ? 0 : bl));
	add_status_line(out, status);

	gk_json hs = gk_msg_get(resp, "headers");
	if (hs.type != GK_JSON_NONE && hs.type != GK_JSON_OBJECT) {
		err = "headers is not an object";
		goto fail;
	}
	bool have_date = false, upgrade = false;
	const char *given_len = NULL;
	size_t given_len_n = 0;
	if (hs.type == GK_JSON_OBJECT) {
		gk_json_iter it;
		gk_json k, v;
		gk_json_iter_init(&it, hs);
		while (gk_json_iter_next(&it, &k, &v)) {
			const char *name;
			size_t nl;
			if (str_text(k, &scratch_name, &name, &nl, &esc) < 0 ||
			    !nl) {
				err = "bad header name";
				goto fail;
			}
			if (!gk_http_field_name(name, nl)) {
				err = "header name is not a token";
				goto fail;
			}
			/* Framing and hop-by-hop headers are ours. */
			bool skip = ieq(name, nl, "content-length") ||
			            ieq(name, nl, "transfer-encoding") ||
			            ieq(name, nl, "connection") ||
			            ieq(name, nl, "keep-alive");
			if (ieq(name, nl, "date"))
				have_date = true;
			else if (ieq(name, nl, "upgrade"))
				upgrade = true;
			gk_json_iter vit;
			gk_json one = v, e;
			bool array = v.type == GK_JSON_ARRAY;
			if (array)
				gk_json_iter_init(&vit, v);
			while (!array || gk_json_iter_next(&vit, NULL, &e)) {
				if (array)
					one = e;
				const char *val;
				size_t vl;
				if (str_text(one, &scratch_val, &val, &vl,
				             &esc) < 0) {
					err = "header value is not a string";
					goto fail;
				}
				/* Unescaped JSON text holds no control byte
				 * but DEL: the whole check only for escapes. */
				if (esc ? !gk_http_field_value(val, vl)
				        : memchr(val, 0x7f, vl) != NULL) {
					err = "control character in header "
					      "value";
					goto fail;
				}
				if (skip) {
					if (ieq(name, nl, "content-length") &&
					    digits(val, vl) && !given_len) {
						/* kept: HEAD and 304 may
						 * use it (below) */
						given_len = val;
						given_len_n = vl;
						if (esc) /* scratch is reused */
							given_len = NULL;
					}
				} else {
					/* The name held no CR/LF/NUL:
					 * it is a token. */
					add_header(out, name, nl, val, vl);
				}
				if (!array)
					break;
			}
		}
	}
	if (!have_date)
		add_header(out, "Date", 4, gk_http_date(), 29);
	if (status == 205)
		gk_buf_add(out, "Content-Length: 0\r\n", 19);
	else if (may_length) {
		if ((head || status == 304) && bl == 0 && given_len)
			/* A HEAD or 304 answer may state the length a GET
			 * would have had (RFC 9110 §8.6). */
			add_header(out, "Content-Length", 14, given_len,
			           given_len_n);
		else if (status != 304 && !(head && bl == 0)) {
			/* A HEAD answered with neither a body nor a length
			 * gets none: 0 would claim the GET's is empty, which
			 * §8.6 forbids unless it is. */
			gk_buf_add(out, "Content-Length: ", 16);
			gk_buf_adduint(out, bl);
			gk_buf_add(out, "\r\n", 2);
		}
	}
	/*
	 * Upgrade is the handler's to send (a 426 must, any answer may
	 * advertise), but RFC 9110 §7.8 wants "upgrade" in Connection with
	 * it, so that an intermediary does not pass it on.  No 101 ever
	 * goes out (above): nothing is switched.
	 */
	const char *conn = !keep_alive  ? "close"
	                   : minor == 0 ? "keep-alive"
	                                : NULL;
	if (upgrade || conn) {
		gk_buf_add(out, "Connection: ", 12);
		if (upgrade)
			gk_buf_adds(out, conn ? "upgrade, " : "upgrade");
		if (conn)
			gk_buf_adds(out, conn);
		gk_buf_add(out, "\r\n", 2);
	}
	gk_buf_add(out, "\r\n", 2);
	if (!no_body) {
		gk_buf_add(out, bp, bl);
		*body_bytes = bl;
	}
	trim_scratch();
	return 0;
fail:
	out->len = start;
	if (why)
		*why = err;
	trim_scratch();
	return -1;
}

void
gk_http_render_simple(int status, const char *body, bool keep_alive, bool head,
                      const char *extra_headers, gk_buf *out)
{
	if (status < 100 || status > 599)
		status = 500;
	bool may_length = status >= 200 && status != 204;
	bool no_body = status < 200 || status == 204 || status == 304;
	char dflt[64];
	if (!body) {
		/* Default body: the reason phrase, as a line. */
		const char *r = gk_http_reason(status);
		size_t n = strlen(r);
		memcpy(dflt, r, n);
		dflt[n] = '\n';
		dflt[n + 1] = 0;
		body = dflt;
	}
	size_t bl = no_body ? 0 : strlen(body);
	gk_buf_reserve(out, 160 + bl);
	add_status_line(out, status);
	add_header(out, "Date", 4, gk_http_date(), 29);
	if (bl)
		gk_buf_adds(out, "Content-Type: text/plain; charset=utf-8\r\n");
	if (may_length && status != 304) {
		gk_buf_add(out, "Content-Length: ", 16);
		gk_buf_adduint(out, bl);
		gk_buf_add(out, "\r\n", 2);
	}
	if (!keep_alive)
		gk_buf_add(out, "Connection: close\r\n", 19);
	if (extra_headers)
		gk_buf_adds(out, extra_headers);
	gk_buf_add(out, "\r\n", 2);
	if (!head)
		gk_buf_add(out, body, bl);
}
