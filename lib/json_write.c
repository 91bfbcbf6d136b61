/* json_write.c: the JSON writer, string quoting, UTF-8 checks and base64. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gokit.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Length of the valid UTF-8 sequence at p (RFC 3629), or 0 if invalid. */
static size_t
utf8_seq(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	if (c < 0xc2)
		return 0;
	if (c < 0xe0) {
		if (n < 2 || (p[1] & 0xc0) != 0x80)
			return 0;
		return 2;
	}
	if (c < 0xf0) {
		if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if (c == 0xe0 && p[1] < 0xa0)
			return 0; /* overlong */
		if (c == 0xed && p[1] >= 0xa0)
			return 0; /* surrogate */
		return 3;
	}
	if (c < 0xf5) {
		if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		if (c == 0xf0 && p[1] < 0x90)
			return 0;
		if (c == 0xf4 && p[1] >= 0x90)
			return 0;
		return 4;
	}
	return 0;
}

bool
gk_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		if (*p < 0x80) {
			p++;
			continue;
		}
		size_t k = utf8_seq(p, (size_t)(end - p));
		if (!k)
			return false;
		p += k;
	}
	return true;
}

/* Bytes that need no escaping inside a JSON string. */
static const unsigned char plain[256] = {
    [0x20] = 1,
    [0x21] = 1,
    [0x23 ... 0x5b] = 1,
    [0x5d ... 0x7f] = 1,
};

/*
 * How many bytes from p need no escaping: sixteen a step with SSE2, where
 * one signed compare flags both control bytes and bytes from 0x80 (which
 * the slow path checks as UTF-8).  Most strings are plain throughout.
 */
static inline size_t
plain_prefix(const unsigned char *p, size_t n)
{
	size_t i = 0;
#if defined(__SSE2__)
	const __m128i quote = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
	const __m128i space = _mm_set1_epi8(0x20);
	for (; n - i >= 16; i += 16) {
		__m128i x =
		    _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		unsigned m = (unsigned)_mm_movemask_epi8(
		    _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote),
		                              _mm_cmpeq_epi8(x, bs)),
		                 _mm_cmplt_epi8(x, space)));
		if (m)
			return i + (size_t)__builtin_ctz(m);
	}
#endif
	while (i < n && plain[p[i]])
		i++;
	return i;
}

void
gk_json_quote(gk_buf *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	gk_buf_reserve(out, n + 2);
	out->data[out->len++] = '"';
	size_t k = plain_prefix(p, n);
	memcpy(out->data + out->len, p, k);
	out->len += k;
	p += k;
	while (p < end) {
		const unsigned char *run = p;
		while (p < end && plain[*p])
			p++;
		if (p > run)
			gk_buf_add(out, run, (size_t)(p - run));
		if (p >= end)
			break;
		unsigned c = *p;
		if (c >= 0x80) {
			size_t k = utf8_seq(p, (size_t)(end - p));
			if (k) {
				gk_buf_add(out, p, k);
				p += k;
			} else {
				gk_buf_add(out, "\xef\xbf\xbd", 3);
				p++;
			}
			continue;
		}
		p++;
		switch (c) {
		case '"': gk_buf_add(out, "\\\"", 2); break;
		case '\\': gk_buf_add(out, "\\\\", 2); break;
		case '\n': gk_buf_add(out, "\\n", 2); break;
		case '\r': gk_buf_add(out, "\\r", 2); break;
		case '\t': gk_buf_add(out, "\\t", 2); break;
		case '\b': gk_buf_add(out, "\\b", 2); break;
		case '\f': gk_buf_add(out, "\\f", 2); break;
		default: {
			char e[6] = {'\\', 'u',         '0',
			             '0',  hex[c >> 4], hex[c & 15]};
			gk_buf_add(out, e, 6);
		}
		}
	}
	gk_buf_addc(out, '"');
}

void
gk_jw_init(gk_jw *w, gk_buf *out)
{
	memset(w, 0, sizeof *w);
	w->out = out;
}

/* Before a value: a comma if a sibling came before, unless after a key. */
static void
before_value(gk_jw *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	uint64_t bit = 1ull << (w->depth & 63);
	if (w->need_comma & bit)
		gk_buf_addc(w->out, ',');
	w->need_comma |= bit;
}

static void
open_container(gk_jw *w, char c)
{
	before_value(w);
	gk_buf_addc(w->out, c);
	w->depth++;
	w->need_comma &= ~(1ull << (w->depth & 63));
}

static void
close_container(gk_jw *w, char c)
{
	w->depth--;
	gk_buf_addc(w->out, c);
}

void
gk_jw_object(gk_jw *w)
{
	open_container(w, '{');
}
void
gk_jw_object_end(gk_jw *w)
{
	close_container(w, '}');
}
void
gk_jw_array(gk_jw *w)
{
	open_container(w, '[');
}
void
gk_jw_array_end(gk_jw *w)
{
	close_container(w, ']');
}

void
gk_jw_comma_list(gk_jw *w, const char *list)
{
	gk_jw_array(w);
	for (const char *t = list; *t;) {
		size_t n = strcspn(t, ",");
		if (n)
			gk_jw_string(w, t, n);
		t += n;
		if (*t == ',')
			t++;
	}
	gk_jw_array_end(w);
}

void
gk_jw_keyn(gk_jw *w, const char *key, size_t n)
{
	before_value(w);
	gk_json_quote(w->out, key, n);
	gk_buf_addc(w->out, ':');
	w->after_key = true;
}

void
gk_jw_key(gk_jw *w, const char *key)
{
	gk_jw_keyn(w, key, strlen(key));
}

void
gk_jw_string(gk_jw *w, const char *s, size_t n)
{
	before_value(w);
	gk_json_quote(w->out, s, n);
}

void
gk_jw_cstr(gk_jw *w, const char *s)
{
	if (!s) {
		gk_jw_null(w);
		return;
	}
	gk_jw_string(w, s, strlen(s));
}

void
gk_jw_int(gk_jw *w, int64_t v)
{
	before_value(w);
	if (v < 0) {
		gk_buf_addc(w->out, '-');
		gk_buf_adduint(w->out, (uint64_t)0 - (uint64_t)v);
	} else
		gk_buf_adduint(w->out, (uint64_t)v);
}

void
gk_jw_double(gk_jw *w, double v)
{
	before_value(w);
	if (!isfinite(v)) {
		/* JSON has no NaN or infinity. */
		gk_buf_adds(w->out, "null");
		return;
	}
	/* The range first: converting a double past int64's is undefined. */
	if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v) {
		int64_t i = (int64_t)v;
		if (i < 0) {
			gk_buf_addc(w->out, '-');
			gk_buf_adduint(w->out, (uint64_t)0 - (uint64_t)i);
		} else
			gk_buf_adduint(w->out, (uint64_t)i);
		return;
	}
	/* A whole number of microseconds (the access event's duration, a
	 * request): its digits, when they read back as v.  The
	 * division is correctly rounded, as strtod is, so they do exactly
	 * when the quotient is v; printf costs ten times as much. */
	double us = v * 1e6;
	if (fabs(us) < 1e15) {
		int64_t n = (int64_t)(us < 0 ? us - 0.5 : us + 0.5);
		uint64_t a = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
		unsigned f = (unsigned)(a % 1000000), digits = 6;
		if (f && (double)n / 1e6 == v) {
			char frac[6];
			while (f % 10 == 0)
				f /= 10, digits--;
			for (unsigned k = digits; k > 0; k--, f /= 10)
				frac[k - 1] = (char)('0' + f % 10);
			if (n < 0)
				gk_buf_addc(w->out, '-');
			gk_buf_adduint(w->out, a / 1000000);
			gk_buf_addc(w->out, '.');
			gk_buf_add(w->out, frac, digits);
			return;
		}
	}
	/* The shortest of %.15g and %.17g that reads back as v. */
	char tmp[32];
	snprintf(tmp, sizeof tmp, "%.15g", v);
	if (strtod(tmp, NULL) != v)
		snprintf(tmp, sizeof tmp, "%.17g", v);
	gk_buf_adds(w->out, tmp);
}

void
gk_jw_bool(gk_jw *w, bool v)
{
	before_value(w);
	gk_buf_adds(w->out, v ? "true" : "false");
}

void
gk_jw_null(gk_jw *w)
{
	before_value(w);
	gk_buf_adds(w->out, "null");
}

void
gk__jw_raw_plain(gk_jw *w, const char *p, size_t n)
{
	before_value(w);
	gk_buf_add(w->out, p, n);
}

void
gk_jw_raw(gk_jw *w, const char *p, size_t n)
{
	before_value(w);
	if (!n)
		return;
	size_t at = w->out->len;
	gk_buf_add(w->out, p, n);
	/* Valid JSON has a byte below 0x20 only as whitespace between
	 * tokens: a space there is the same value, and keeps the output one
	 * line (a newline would end an event, or a wire message). */
	char *o = w->out->data + at;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)o[i] < 0x20)
			o[i] = ' ';
}

void
gk_jw_base64(gk_jw *w, const void *p, size_t n)
{
	before_value(w);
	gk_buf_addc(w->out, '"');
	gk_base64_encode(w->out, p, n);
	gk_buf_addc(w->out, '"');
}

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void
gk_base64_encode(gk_buf *out, const void *src, size_t n)
{
	const unsigned char *p = src;
	gk_buf_reserve(out, (n + 2) / 3 * 4);
	char *o = out->data + out->len;
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		unsigned v =
		    (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
		*o++ = b64[v >> 18];
		*o++ = b64[(v >> 12) & 63];
		*o++ = b64[(v >> 6) & 63];
		*o++ = b64[v & 63];
	}
	if (i < n) {
		unsigned v = (unsigned)p[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)p[i + 1] << 8;
		*o++ = b64[v >> 18];
		*o++ = b64[(v >> 12) & 63];
		*o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	out->len = (size_t)(o - out->data);
}

int
gk_base64_decode(gk_buf *out, const char *s, size_t n)
{
	static signed char rev[256];
	static bool init;
	if (!init) {
		memset(rev, -1, sizeof rev);
		for (int i = 0; i < 64; i++)
			rev[(unsigned char)b64[i]] = (signed char)i;
		init = true;
	}
	if (n % 4)
		return -1;
	gk_buf_reserve(out, n / 4 * 3);
	for (size_t i = 0; i < n; i += 4) {
		int pad = 0;
		unsigned v = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)s[i + k];
			if (c == '=' && i + 4 == n && k >= 2) {
				pad++;
				v <<= 6;
				continue;
			}
			if (pad || rev[c] < 0)
				return -1;
			v = v << 6 | (unsigned)rev[c];
		}
		out->data[out->len++] = (char)(v >> 16);
		if (pad < 2)
			out->data[out->len++] = (char)(v >> 8);
		if (pad < 1)
			out->data[out->len++] = (char)v;
	}
	return 0;
}
