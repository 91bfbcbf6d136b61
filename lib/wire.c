/*
 * wire.c: the wire codec (gk-wire(5)).
 *
 * Every message on the hot path goes through gk_wire_parse once: a single
 * pass over the line that validates it (strict RFC 8259, UTF-8) and records
 * where its top-level members are, without allocating or building a tree.
 * Everything else here works on spans of text that pass has validated, and
 * splices bytes rather than re-encoding.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gokit.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef const unsigned char *ptr;

/* Classes of bytes inside a string body; 0 is the common case. */
enum { C_PLAIN = 0, C_QUOTE, C_BSLASH, C_CTRL, C_HIGH };

static const unsigned char str_class[256] = {
    [0x00 ... 0x1f] = C_CTRL,
    ['"'] = C_QUOTE,
    ['\\'] = C_BSLASH,
    [0x80 ... 0xff] = C_HIGH,
};

/* Bytes that end a number or literal when skipping validated text. */
static const unsigned char delim[256] = {
    [' '] = 1, ['\t'] = 1, ['\r'] = 1, ['\n'] = 1,
    [','] = 1, [']'] = 1,  ['}'] = 1,  [':'] = 1,
};

static inline bool
isdig(unsigned c)
{
	return c - '0' < 10;
}

static ptr
fail(gk_wire_error *err, ptr base, ptr at, const char *why)
{
	if (err) {
		err->offset = (size_t)(at - base);
		err->reason = why;
	}
	return NULL;
}

/*
 * Whitespace between tokens: space, tab and CR.  A newline is never part of
 * a line (it is the message separator), so it is not whitespace here.
 */
static inline ptr
skip_ws(ptr p, ptr end)
{
	/* Every byte that can start or end a token is above the space. */
	while (p < end && *p <= ' ' && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

/*
 * Skip bytes that need no attention inside a string: printable ASCII other
 * than '"' and '\\'.  Sixteen bytes at a time with SSE2 (one signed compare
 * catches both control bytes and bytes >= 0x80), else eight with SWAR, whose
 * lowest flagged byte is always a true hit, which is all we use.
 */
static inline ptr
skip_plain(ptr p, ptr end)
{
#if defined(__SSE2__)
	const __m128i quote = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
	const __m128i space = _mm_set1_epi8(0x20);
	while (end - p >= 16) {
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
		__m128i t = _mm_or_si128(
		    _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bs)),
		    _mm_cmplt_epi8(x, space));
		unsigned mask = (unsigned)_mm_movemask_epi8(t);
		if (mask)
			return p + __builtin_ctz(mask);
		p += 16;
	}
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t ones = 0x0101010101010101ull;
	const uint64_t high = 0x8080808080808080ull;
	while (end - p >= 8) {
		uint64_t x;
		memcpy(&x, p, 8);
		uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
		uint64_t t = ((x - ones * 0x20) | (q - ones) | (b - ones)) & ~x;
		t = (t | x) & high;
		if (t)
			return p + (__builtin_ctzll(t) >> 3);
		p += 8;
	}
#endif
	while (p < end && str_class[*p] == C_PLAIN)
		p++;
	return p;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629), or 0. */
static inline size_t
utf8_len(ptr p, ptr end)
{
	unsigned c = p[0];
	size_t n = (size_t)(end - p);
	if (c < 0xc2)
		return 0; /* continuation byte, or overlong 2-byte lead */
	if (c < 0xe0)
		return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c < 0xf0) {
		if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))
			return 0; /* overlong, or a surrogate */
		return 3;
	}
	if (c < 0xf5) {
		if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))
			return 0; /* overlong, or past U+10FFFF */
		return 4;
	}
	return 0;
}

static inline int
hexval(unsigned c)
{
	if (c - '0' < 10)
		return (int)(c - '0');
	c |= 0x20;
	if (c - 'a' < 6)
		return (int)(c - 'a' + 10);
	return -1;
}

/* Four hex digits at p (end - p >= 4 checked by the caller), or -1. */
static inline long
hex4(ptr p)
{
	int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]),
	    d = hexval(p[3]);
	if ((a | b | c | d) < 0)
		return -1;
	return (long)a << 12 | b << 8 | c << 4 | d;
}

static ptr scan_string_rest(ptr q, ptr p, ptr end, ptr base,
    gk_wire_error *err, bool *esc);

/*
 * Validate a string whose opening quote is at q; returns the byte after the
 * closing quote.  *esc is set when the string holds an escape.  Most strings
 * are plain ASCII: that case is inline, the rest is out of line.
 */
static inline ptr
scan_string(ptr q, ptr end, ptr base, gk_wire_error *err, bool *esc)
{
	ptr p = skip_plain(q + 1, end);
	if (p < end && *p == '"')
		return p + 1;
	return scan_string_rest(q, p, end, base, err, esc);
}

/* scan_string() from p, the first byte that is not plain. */
static ptr
scan_string_rest(ptr q, ptr p, ptr end, ptr base, gk_wire_error *err,
    bool *esc)
{
	for (;;) {
		p = skip_plain(p, end);
		if (p >= end)
			return fail(err, base, q, "unterminated string");
		if (*p == '"') /* the common case, ahead of the table */
			return p + 1;
		switch (str_class[*p]) {
		case C_QUOTE:
			return p + 1;
		case C_CTRL:
			return fail(err, base, p, "control character in string");
		case C_HIGH: {
			size_t k = utf8_len(p, end);
			if (!k)
				return fail(err, base, p, "invalid UTF-8");
			p += k;
			break;
		}
		default: /* C_BSLASH */
			*esc = true;
			if (end - p < 2)
				return fail(err, base, q, "unterminated string");
			switch (p[1]) {
			case '"': case '\\': case '/': case 'b':
			case 'f': case 'n': case 'r': case 't':
				p += 2;
				break;
			case 'u': {
				if (end - p < 6)
					goto bad_u;
				long u = hex4(p + 2);
				if (u < 0 || (u >= 0xdc00 && u <= 0xdfff))
					goto bad_u;
				if (u >= 0xd800 && u <= 0xdbff) {
					/* Only a whole surrogate pair is a
					 * character (jansson agrees). */
					if (end - p < 12 || p[6] != '\\' ||
					    p[7] != 'u')
						goto bad_u;
					long l = hex4(p + 8);
					if (l < 0xdc00 || l > 0xdfff)
						goto bad_u;
					p += 6;
				}
				p += 6;
				break;
			}
			default:
			bad_u:
				return fail(err, base, p, "invalid escape");
			}
		}
	}
}

static ptr scan_number_rest(ptr p, ptr end, ptr base, gk_wire_error *err);

/*
 * Validate a number at p.  Most are plain integers (a status, a deadline):
 * that case is inline, the rest out of line.
 */
static inline ptr
scan_number(ptr p, ptr end, ptr base, gk_wire_error *err)
{
	ptr q = p;
	if (q < end && *q >= '1' && *q <= '9') {
		do
			q++;
		while (q < end && isdig(*q));
		if (q >= end || (*q != '.' && (*q | 0x20) != 'e'))
			return q;
	}
	return scan_number_rest(p, end, base, err);
}

static ptr
scan_number_rest(ptr p, ptr end, ptr base, gk_wire_error *err)
{
	if (*p == '-')
		p++;
	if (p >= end || !isdig(*p))
		return fail(err, base, p, "invalid number");
	if (*p == '0') {
		p++;
		if (p < end && isdig(*p))
			return fail(err, base, p, "invalid number");
	} else {
		while (p < end && isdig(*p))
			p++;
	}
	if (p < end && *p == '.') {
		p++;
		if (p >= end || !isdig(*p))
			return fail(err, base, p, "invalid number");
		while (p < end && isdig(*p))
			p++;
	}
	if (p < end && (*p | 0x20) == 'e') {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || !isdig(*p))
			return fail(err, base, p, "invalid number");
		while (p < end && isdig(*p))
			p++;
	}
	return p;
}

static ptr literal_error(ptr p, ptr end, ptr base, gk_wire_error *err,
    const char *lit);

static inline ptr
scan_literal(ptr p, ptr end, ptr base, gk_wire_error *err, const char *lit,
    size_t n)
{
	if ((size_t)(end - p) >= n && memcmp(p, lit, n) == 0)
		return p + n;
	return literal_error(p, end, base, err, lit);
}

/* Where a literal goes wrong, for the message. */
static ptr
literal_error(ptr p, ptr end, ptr base, gk_wire_error *err, const char *lit)
{
	for (size_t i = 0;; i++)
		if (p + i >= end || p[i] != (unsigned char)lit[i])
			return fail(err, base, p + i, "invalid literal");
}

/*
 * Validate one value starting at p, inside depth enclosing containers.
 * Iterative, with the kind of each open container kept as one bit, so the
 * depth limit bounds the state and nothing recurses.
 */
static ptr
scan_value(ptr p, ptr end, ptr base, unsigned depth, gk_wire_error *err)
{
	uint64_t objects = 0; /* bit i: level i is an object */
	unsigned lvl = 0;
	bool esc;

value:
	if (p >= end)
		return fail(err, base, p, "expected value");
	switch (*p) {
	case '"':
		p = scan_string(p, end, base, err, &esc);
		break;
	case '{':
		if (depth + lvl >= GK_WIRE_MAX_DEPTH)
			return fail(err, base, p, "too deep");
		objects |= 1ull << lvl++;
		p = skip_ws(p + 1, end);
		if (p < end && *p == '}') {
			p++;
			objects &= ~(1ull << --lvl);
			break;
		}
		goto key;
	case '[':
		if (depth + lvl >= GK_WIRE_MAX_DEPTH)
			return fail(err, base, p, "too deep");
		lvl++;
		p = skip_ws(p + 1, end);
		if (p < end && *p == ']') {
			p++;
			lvl--;
			break;
		}
		goto value;
	case 't':
		p = scan_literal(p, end, base, err, "true", 4);
		break;
	case 'f':
		p = scan_literal(p, end, base, err, "false", 5);
		break;
	case 'n':
		p = scan_literal(p, end, base, err, "null", 4);
		break;
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		p = scan_number(p, end, base, err);
		break;
	default:
		return fail(err, base, p, "expected value");
	}
	if (!p)
		return NULL;

	/* After a value: close containers, or go on to the next element. */
after_value:
	while (lvl) {
		bool obj = objects >> (lvl - 1) & 1;
		/* Punctuation first, whitespace only when it is not there
		 * (as gk_wire_parse does). */
		if (p < end && *p != ',' && *p != '}' && *p != ']')
			p = skip_ws(p, end);
		if (p < end && *p == ',') {
			p++;
			if (p < end && *p <= ' ')
				p = skip_ws(p, end);
			if (obj)
				goto key;
			goto value;
		}
		if (p >= end || *p != (obj ? '}' : ']'))
			return fail(err, base, p,
			    obj ? "expected ',' or '}'" : "expected ',' or ']'");
		p++;
		objects &= ~(1ull << --lvl);
	}
	return p;

key:
	if (p >= end || *p != '"')
		return fail(err, base, p, "expected string key");
	p = scan_string(p, end, base, err, &esc);
	if (!p)
		return NULL;
	/* Most members are "key":"string", written without spaces (a
	 * headers object): taken without the general dispatch. */
	if (end - p >= 2 && p[0] == ':' && p[1] == '"') {
		if (!(p = scan_string(p + 1, end, base, err, &esc)))
			return NULL;
		if (end - p >= 2 && p[0] == ',' && p[1] == '"') {
			p++;
			goto key;
		}
		goto after_value;
	}
	if (p < end && *p != ':')
		p = skip_ws(p, end);
	if (p >= end || *p != ':')
		return fail(err, base, p, "expected ':'");
	p++;
	if (p < end && *p <= ' ')
		p = skip_ws(p, end);
	goto value;
}

/* ------------------------------------------------------------------ */
/* Unescaping                                                          */
/* ------------------------------------------------------------------ */

static size_t
put_utf8(unsigned char *o, unsigned long c)
{
	if (c < 0x80) {
		o[0] = (unsigned char)c;
		return 1;
	}
	if (c < 0x800) {
		o[0] = (unsigned char)(0xc0 | c >> 6);
		o[1] = (unsigned char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		o[0] = (unsigned char)(0xe0 | c >> 12);
		o[1] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
		o[2] = (unsigned char)(0x80 | (c & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | c >> 18);
	o[1] = (unsigned char)(0x80 | (c >> 12 & 0x3f));
	o[2] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
	o[3] = (unsigned char)(0x80 | (c & 0x3f));
	return 4;
}

/*
 * Decode the escape at *pp (a backslash) into o, advancing *pp.  Spans are
 * validated, but a hand-made gk_json must not make us read past its end:
 * anything malformed comes out as the backslash itself, or U+FFFD.
 */
static size_t
unescape_one(ptr *pp, ptr end, unsigned char o[4])
{
	ptr p = *pp;
	if (end - p < 2) {
		*pp = p + 1;
		o[0] = '\\';
		return 1;
	}
	unsigned char c = p[1];
	*pp = p + 2;
	switch (c) {
	case 'b': o[0] = '\b'; return 1;
	case 'f': o[0] = '\f'; return 1;
	case 'n': o[0] = '\n'; return 1;
	case 'r': o[0] = '\r'; return 1;
	case 't': o[0] = '\t'; return 1;
	case 'u': break;
	default: o[0] = c; return 1; /* '"', '\\', '/' */
	}
	long u = end - p >= 6 ? hex4(p + 2) : -1;
	if (u < 0) {
		*pp = p + 1;
		o[0] = '\\';
		return 1;
	}
	*pp = p + 6;
	if (u >= 0xd800 && u <= 0xdbff && end - p >= 12 && p[6] == '\\' &&
	    p[7] == 'u') {
		long l = hex4(p + 8);
		if (l >= 0xdc00 && l <= 0xdfff) {
			*pp = p + 12;
			return put_utf8(o, 0x10000 + ((unsigned long)(u - 0xd800)
			    << 10) + (unsigned long)(l - 0xdc00));
		}
	}
	if (u >= 0xd800 && u <= 0xdfff)
		u = 0xfffd;
	return put_utf8(o, (unsigned long)u);
}

/* A string body read one unescaped byte at a time, for comparisons; a
 * plain one is taken as it is (a C string to compare with). */
struct sdec {
	ptr p, end;
	bool plain;
	unsigned char b[4];
	unsigned n, i;
};

static int
sdec_next(struct sdec *d)
{
	if (d->i < d->n)
		return d->b[d->i++];
	if (d->p >= d->end)
		return -1;
	if (d->plain || *d->p != '\\')
		return *d->p++;
	d->n = (unsigned)unescape_one(&d->p, d->end, d->b);
	d->i = 1;
	return d->b[0];
}

/* The unescaped body a equals b (raw too, unless b_plain). */
static bool
body_eq(ptr a, size_t an, ptr b, size_t bn, bool b_plain)
{
	struct sdec x = {a, a + an, false, {0}, 0, 0};
	struct sdec y = {b, b + bn, b_plain, {0}, 0, 0};
	for (;;) {
		int c = sdec_next(&x);
		if (c != sdec_next(&y))
			return false;
		if (c < 0)
			return true;
	}
}

bool
gk_json_eqn(gk_json v, const char *s, size_t n)
{
	if (v.type != GK_JSON_STRING || v.len < 2)
		return false;
	ptr r = (ptr)v.p + 1;
	size_t rn = v.len - 2;
	/* An escape always makes the text shorter than its raw form. */
	if (rn < n)
		return false;
	/* Up to its first escape the text is the raw bytes: most keys
	 * differ at the first one. */
	if (n && *r != (unsigned char)*s && *r != '\\')
		return false;
	if (rn == n)
		return memcmp(r, s, n) == 0 && !memchr(r, '\\', rn);
	if (!memchr(r, '\\', rn))
		return false;
	return body_eq(r, rn, (ptr)s, n, true);
}

bool
gk_json_eq(gk_json v, const char *s)
{
	return gk_json_eqn(v, s, strlen(s));
}

int
gk__json_text(gk_json v, gk_buf *tmp, const char **p, size_t *n)
{
	if (v.type != GK_JSON_STRING || v.len < 2)
		return -1;
	if (!memchr(v.p + 1, '\\', v.len - 2)) {
		*p = v.p + 1;
		*n = v.len - 2;
		return 0;
	}
	tmp->len = 0;
	gk_json_string(v, tmp);
	*p = tmp->data ? tmp->data : "";
	*n = tmp->len;
	return 1;
}

bool
gk__wire_same_index(const gk_wire_msg *a, const gk_wire_msg *b)
{
	if (a->nfields != b->nfields)
		return false;
	for (unsigned i = 0; i < a->nfields; i++) {
		const gk_wire_field *x = &a->field[i], *y = &b->field[i];
		if (x->key.p != y->key.p || x->key.len != y->key.len ||
		    x->value.p != y->value.p || x->value.len != y->value.len ||
		    x->value.type != y->value.type)
			return false;
	}
	return true;
}

int
gk_json_string(gk_json v, gk_buf *out)
{
	if (v.type != GK_JSON_STRING || v.len < 2)
		return -1;
	ptr p = (ptr)v.p + 1, end = (ptr)v.p + v.len - 1;
	gk_buf_reserve(out, (size_t)(end - p));
	while (p < end) {
		ptr bs = memchr(p, '\\', (size_t)(end - p));
		if (!bs) {
			gk_buf_add(out, p, (size_t)(end - p));
			break;
		}
		gk_buf_add(out, p, (size_t)(bs - p));
		unsigned char o[4];
		size_t k = unescape_one(&bs, end, o);
		gk_buf_add(out, o, k);
		p = bs;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Validation and the top-level index                                  */
/* ------------------------------------------------------------------ */

/* One value, alone in s, inside depth enclosing containers. */
static int
validate_at(const char *s, size_t len, unsigned depth, gk_wire_error *err)
{
	ptr base = (ptr)s, end = base + len;
	ptr p = skip_ws(base, end);
	p = scan_value(p, end, base, depth, err);
	if (!p)
		return -1;
	p = skip_ws(p, end);
	if (p != end) {
		fail(err, base, p, "trailing characters");
		return -1;
	}
	return 0;
}

int
gk_json_validate(const char *s, size_t len, gk_wire_error *err)
{
	return validate_at(s, len, 0, err);
}

/*
 * A value as a top-level member's: validated inside one object, so the
 * depth limit is the one gk_wire_parse applies (gk_msg_set).
 */
int gk__json_validate_member(const char *s, size_t len, gk_wire_error *err);

int
gk__json_validate_member(const char *s, size_t len, gk_wire_error *err)
{
	return validate_at(s, len, 1, err);
}

static bool
key_dup(const gk_wire_msg *m, unsigned n, uint64_t escaped, ptr k,
    size_t klen, bool kesc)
{
	for (unsigned i = 0; i < n; i++) {
		const gk_json *o = &m->field[i].key;
		bool oesc = escaped >> i & 1;
		if (!kesc && !oesc) {
			if (o->len == klen && memcmp(o->p, k, klen) == 0)
				return true;
		} else if (body_eq((ptr)o->p + 1, o->len - 2, k + 1, klen - 2,
		    false))
			return true;
	}
	return false;
}

/*
 * One bit per (length, first and last byte) of the plain keys seen so far:
 * a key whose bit is clear cannot repeat one, which spares the quadratic
 * compare for nearly every member of a line.  The mix is chosen so that
 * gk-wire(5)'s members (id, method, path, query, headers, body, body_b64,
 * remote, deadline, trace, status, error, route) take distinct bits.
 */
static inline uint64_t
key_bit(ptr k, size_t klen)
{
	return 1ull << ((klen + k[1] * 3u + k[klen - 2]) & 63);
}

int
gk_wire_parse(gk_wire_msg *m, const char *line, size_t len,
    gk_wire_error *err)
{
	ptr base = (ptr)line, end = base + len, p;
	uint64_t escaped = 0; /* bit i: key i holds an escape */
	uint64_t seen = 0;    /* key_bit() of every plain key */
	unsigned n = 0;

	m->line = line;
	m->len = len;
	m->nfields = 0;
	m->escaped = 0;
	p = skip_ws(base, end);
	if (p >= end || *p != '{') {
		fail(err, base, p, "top level must be an object");
		return -1;
	}
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
		goto done;
	}
	for (;;) {
		if (p >= end || *p != '"') {
			fail(err, base, p, "expected string key");
			return -1;
		}
		if (n == GK_WIRE_MAX_FIELDS) {
			fail(err, base, p, "too many fields");
			return -1;
		}
		ptr k = p;
		bool kesc = false;
		if (!(p = scan_string(k, end, base, err, &kesc)))
			return -1;
		ptr kend = p;
		size_t klen = (size_t)(p - k);
		uint64_t bit = kesc ? 0 : key_bit(k, klen);
		if ((kesc || escaped || (seen & bit)) &&
		    key_dup(m, n, escaped, k, klen, kesc)) {
			fail(err, base, k, "duplicate key");
			return -1;
		}
		seen |= bit;
		/* Lines are nearly always compact: the punctuation is looked
		 * for first, the whitespace skipped only when it is not there
		 * (a skip where there is none costs as much as the test). */
		if (p < end && *p == ':')
			p++;
		else {
			p = skip_ws(p, end);
			if (p >= end || *p != ':') {
				fail(err, base, p, "expected ':'");
				return -1;
			}
			p++;
		}
		ptr v = p;
		if (p < end && *p == '"') {
			bool vesc;
			p = scan_string(p, end, base, err, &vesc);
		} else if (p < end && isdig(*p))
			p = scan_number(p, end, base, err);
		else {
			v = p = skip_ws(p, end);
			p = scan_value(p, end, base, 1, err);
		}
		if (!p)
			return -1;
		gk_wire_field *f = &m->field[n];
		f->key = (gk_json){GK_JSON_STRING, (const char *)k,
		    (size_t)(kend - k)};
		f->value = (gk_json){gk_json_type_of((char)*v), (const char *)v,
		    (size_t)(p - v)};
		if (kesc)
			escaped |= 1ull << n;
		n++;
		if (p < end && *p != ',')
			p = skip_ws(p, end);
		if (p < end && *p == ',') {
			p++;
			if (p < end && *p != '"')
				p = skip_ws(p, end);
			continue;
		}
		if (p < end && *p == '}') {
			p++;
			break;
		}
		fail(err, base, p, "expected ',' or '}'");
		return -1;
	}
done:
	p = skip_ws(p, end);
	if (p != end) {
		fail(err, base, p, "trailing characters");
		return -1;
	}
	m->nfields = n;
	m->escaped = escaped;
	return 0;
}

/* gk__wire_find() for the keys that hold an escape: compared unescaped. */
int
gk__wire_find_escaped(const gk_wire_msg *m, const char *key, size_t n)
{
	for (unsigned i = 0; i < m->nfields; i++)
		if (m->escaped >> i & 1 && gk_json_eqn(m->field[i].key, key, n))
			return (int)i;
	return -1;
}

/* The exported function behind the macro (for callers through a pointer
 * or another language). */
gk_json
(gk_wire_get)(const gk_wire_msg *m, const char *key)
{
	return gk__wire_get_inline(m, key);
}

/* ------------------------------------------------------------------ */
/* Numbers                                                             */
/* ------------------------------------------------------------------ */

/* A number split into its parts; the exponent saturates. */
struct num {
	bool neg;
	ptr ip;	       /* integer digits */
	size_t ni;
	ptr fp;	       /* fraction digits */
	size_t nf;
	int64_t exp;
};

static bool
split_number(gk_json v, struct num *n)
{
	if (v.type != GK_JSON_NUMBER || !v.len)
		return false;
	ptr p = (ptr)v.p, end = p + v.len;
	memset(n, 0, sizeof *n);
	if (*p == '-') {
		n->neg = true;
		p++;
	}
	n->ip = p;
	while (p < end && isdig(*p))
		p++;
	n->ni = (size_t)(p - n->ip);
	if (!n->ni)
		return false;
	n->fp = p;
	if (p < end && *p == '.') {
		n->fp = ++p;
		while (p < end && isdig(*p))
			p++;
		n->nf = (size_t)(p - n->fp);
		if (!n->nf)
			return false;
	}
	if (p < end && (*p | 0x20) == 'e') {
		bool eneg = false;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			eneg = *p++ == '-';
		if (p >= end)
			return false;
		while (p < end && isdig(*p)) {
			if (n->exp < 100000000000000000ll)
				n->exp = n->exp * 10 + (*p - '0');
			p++;
		}
		if (eneg)
			n->exp = -n->exp;
	}
	return p == end;
}

static inline unsigned
num_digit(const struct num *n, size_t i)
{
	return i < n->ni ? n->ip[i] - '0' : n->fp[i - n->ni] - '0';
}

/*
 * If the eight bytes at p are all digits, d = d * 10^8 + their value.
 * SWAR where the byte order allows: subtract '0' from every byte, check
 * each is below 10, then combine pairs, quads and halves.
 */
static inline bool
eight_digits(ptr p, uint64_t *d)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint64_t x;
	memcpy(&x, p, 8);
	x -= 0x3030303030303030ull;
	if ((x | (x + 0x7676767676767676ull)) & 0x8080808080808080ull)
		return false;
	x = (x * 10 + (x >> 8)) & 0x00ff00ff00ff00ffull;
	x = (x * 100 + (x >> 16)) & 0x0000ffff0000ffffull;
	x = (x * 10000 + (x >> 32)) & 0xffffffffull;
	*d = *d * 100000000 + x;
	return true;
#else
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) {
		if (!isdig(p[i]))
			return false;
		v = v * 10 + (p[i] - '0');
	}
	*d = *d * 100000000 + v;
	return true;
#endif
}

bool
gk_json_int(gk_json v, int64_t *out)
{
	const uint64_t lim = 1ull << 53;
	struct num n;
	/* Plain digits (a status, a deadline) need no splitting: at most 16
	 * of them stay below 10^16, and a leading zero is only "0" itself. */
	if (v.type == GK_JSON_NUMBER && v.len && v.len <= 16) {
		ptr p = (ptr)v.p, end = p + v.len;
		uint64_t d = 0;
		/* Eight at a time while eight remain (a ms deadline has 13). */
		while (end - p >= 8 && eight_digits(p, &d))
			p += 8;
		while (p < end && isdig(*p))
			d = d * 10 + (*p++ - '0');
		if (p == end) {
			if (d > lim)
				return false;
			*out = (int64_t)d;
			return true;
		}
	}
	if (!split_number(v, &n))
		return false;
	/*
	 * The value is D * 10^e for the digits D between the first and last
	 * non-zero digit; it is integral iff e >= 0, and past 2^53 whenever D
	 * and the zeros after it make more than 16 digits.
	 */
	size_t nd = n.ni + n.nf, first = 0, last = nd;
	while (first < nd && num_digit(&n, first) == 0)
		first++;
	if (first == nd) {
		*out = 0;
		return true;
	}
	while (num_digit(&n, last - 1) == 0)
		last--;
	int64_t e = n.exp - (int64_t)n.nf + (int64_t)(nd - last);
	size_t sig = last - first;
	if (e < 0 || (int64_t)sig + e > 16)
		return false;
	uint64_t d = 0;
	for (size_t i = first; i < last; i++)
		d = d * 10 + num_digit(&n, i);
	for (; e > 0; e--)
		d *= 10;
	if (d > lim)
		return false;
	*out = n.neg ? -(int64_t)d : (int64_t)d;
	return true;
}

bool
gk_json_double(gk_json v, double *out)
{
	static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6,
	    1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
	    1e18, 1e19, 1e20, 1e21, 1e22};
	struct num n;
	if (!split_number(v, &n))
		return false;

	/*
	 * Clinger's fast path: a mantissa below 2^53 and a power of ten up to
	 * 1e22 are both exact doubles, so one correctly rounded multiply or
	 * divide gives the correctly rounded value, as strtod would.
	 */
	size_t nd = n.ni + n.nf, first = 0;
	while (first < nd && num_digit(&n, first) == 0)
		first++;
	if (nd - first <= 15) {
		uint64_t d = 0;
		for (size_t i = first; i < nd; i++)
			d = d * 10 + num_digit(&n, i);
		int64_t e = n.exp - (int64_t)n.nf;
		if (d == 0 || (e >= -22 && e <= 22)) {
			double x = (double)d;
			if (d && e < 0)
				x /= pow10[-e];
			else if (d)
				x *= pow10[e];
			*out = n.neg ? -x : x;
			return true;
		}
	}

	/* strtod needs a terminated string.  gokit never sets LC_NUMERIC,
	 * so the decimal point is '.'. */
	char tmp[128], *s = v.len < sizeof tmp ? tmp : gk_xmalloc(v.len + 1);
	memcpy(s, v.p, v.len);
	s[v.len] = 0;
	double x = strtod(s, NULL);
	if (s != tmp)
		free(s);
	*out = x;
	/* JSON has no infinity: a number past DBL_MAX has no double. */
	return isfinite(x);
}

/* ------------------------------------------------------------------ */
/* Iteration over validated text                                       */
/* ------------------------------------------------------------------ */

static ptr
skip_str(ptr p, ptr end)
{
	p++;
	for (;;) {
		p = skip_plain(p, end);
		if (p >= end)
			return end;
		if (*p == '"')
			return p + 1;
		p += *p == '\\' && end - p >= 2 ? 2 : 1;
	}
}

static ptr
skip_value(ptr p, ptr end)
{
	if (p >= end)
		return p;
	switch (*p) {
	case '"':
		return skip_str(p, end);
	case '{':
	case '[': {
		size_t depth = 0;
		while (p < end) {
			switch (*p) {
			case '"':
				p = skip_str(p, end);
				continue;
			case '{':
			case '[':
				depth++;
				break;
			case '}':
			case ']':
				if (--depth == 0)
					return p + 1;
				break;
			}
			p++;
		}
		return end;
	}
	default:
		while (p < end && !delim[*p])
			p++;
		return p;
	}
}

static inline ptr
skip_sep(ptr p, ptr end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' ||
	    *p == '\n' || *p == ',' || *p == ':'))
		p++;
	return p;
}

void
gk_json_iter_init(gk_json_iter *it, gk_json c)
{
	it->object = c.type == GK_JSON_OBJECT;
	if ((c.type == GK_JSON_OBJECT || c.type == GK_JSON_ARRAY) &&
	    c.len >= 2) {
		it->p = c.p + 1;
		it->end = c.p + c.len - 1;
	} else
		it->p = it->end = NULL;
}

bool
gk_json_iter_next(gk_json_iter *it, gk_json *key, gk_json *value)
{
	ptr p = skip_sep((ptr)it->p, (ptr)it->end), end = (ptr)it->end, q;
	if (p >= end)
		return false;
	if (it->object) {
		q = skip_str(p, end);
		if (key)
			*key = (gk_json){GK_JSON_STRING, (const char *)p,
			    (size_t)(q - p)};
		p = skip_sep(q, end);
		if (p >= end) {
			it->p = it->end;
			return false;
		}
	}
	q = skip_value(p, end);
	*value = (gk_json){gk_json_type_of((char)*p), (const char *)p, (size_t)(q - p)};
	it->p = (const char *)q;
	return true;
}

gk_json
gk_json_member(gk_json object, const char *key)
{
	gk_json_iter it;
	gk_json k, v;
	size_t n = strlen(key);
	if (object.type == GK_JSON_OBJECT) {
		gk_json_iter_init(&it, object);
		while (gk_json_iter_next(&it, &k, &v))
			if (gk_json_eqn(k, key, n))
				return v;
	}
	return (gk_json){GK_JSON_NONE, NULL, 0};
}

/* ------------------------------------------------------------------ */
/* Splicing                                                            */
/* ------------------------------------------------------------------ */

/* gk_wire_splice with the member's index known (-1: appended). */
void gk__wire_splice_at(const gk_wire_msg *m, int i, const char *key,
    size_t klen, const char *raw, size_t rawlen, gk_buf *out);

void
gk_wire_splice(const gk_wire_msg *m, const char *key, const char *raw,
    size_t rawlen, gk_buf *out)
{
	size_t klen = strlen(key);
	gk__wire_splice_at(m, gk__wire_find(m, key, klen), key, klen, raw, rawlen,
	    out);
}

void
gk__wire_splice_at(const gk_wire_msg *m, int i, const char *key,
    size_t klen, const char *raw, size_t rawlen, gk_buf *out)
{
	const char *l = m->line, *lend = l + m->len;
	if (i >= 0) {
		const gk_json *v = &m->field[i].value;
		gk_buf_reserve(out, m->len - v->len + rawlen);
		gk_buf_add(out, l, (size_t)(v->p - l));
		gk_buf_add(out, raw, rawlen);
		gk_buf_add(out, v->p + v->len, (size_t)(lend - v->p - v->len));
		return;
	}
	/* Insert before the closing brace: the last byte but trailing
	 * whitespace. */
	size_t c = m->len;
	while (c > 0 && (l[c - 1] == ' ' || l[c - 1] == '\t' ||
	    l[c - 1] == '\r'))
		c--;
	if (c > 0)
		c--;
	gk_buf_reserve(out, m->len + klen + rawlen + 4);
	gk_buf_add(out, l, c);
	if (m->nfields)
		gk_buf_addc(out, ',');
	gk_json_quote(out, key, klen);
	gk_buf_addc(out, ':');
	gk_buf_add(out, raw, rawlen);
	gk_buf_add(out, l + c, m->len - c);
}

void
gk_wire_remove(const gk_wire_msg *m, const char *key, gk_buf *out)
{
	const char *l = m->line, *lend = l + m->len, *from, *to;
	int i = gk__wire_find(m, key, strlen(key));
	if (i < 0) {
		gk_buf_add(out, l, m->len);
		return;
	}
	const gk_wire_field *f = m->field;
	if (i > 0) {
		/* From the end of the previous value: takes the comma before. */
		from = f[i - 1].value.p + f[i - 1].value.len;
		to = f[i].value.p + f[i].value.len;
	} else if (m->nfields > 1) {
		/* The first of several: up to the next key, comma included. */
		from = f[0].key.p;
		to = f[1].key.p;
	} else {
		from = f[0].key.p;
		to = f[0].value.p + f[0].value.len;
	}
	gk_buf_reserve(out, m->len - (size_t)(to - from));
	gk_buf_add(out, l, (size_t)(from - l));
	gk_buf_add(out, to, (size_t)(lend - to));
}
