/* tracecontext.c: W3C traceparent and B3, parsed strictly. */
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <sys/random.h>
#include <time.h>

#include "tracecontext.h"

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* W3C asks for lowercase; B3 too */
}

/* Exactly 2n lowercase hex digits into n bytes. */
static int
unhex(const char *s, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hexval((unsigned char)s[2 * i]);
		int lo = hexval((unsigned char)s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

bool
gk_id_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

int
gk_traceparent_parse(const char *s, size_t n, gk_trace_ctx *c)
{
	memset(c, 0, sizeof *c);
	if (n < 55)
		return -1;
	uint8_t version, flags;
	if (unhex(s, 1, &version) < 0 || version == 0xff || s[2] != '-')
		return -1;
	/* Version 00 is exactly 55 characters; later versions may append
	 * "-..." and are read as 00. */
	if (version == 0 && n != 55)
		return -1;
	if (version != 0 && n > 55 && s[55] != '-')
		return -1;
	if (unhex(s + 3, 16, c->trace_id) < 0 || s[35] != '-' ||
	    unhex(s + 36, 8, c->span_id) < 0 || s[52] != '-' ||
	    unhex(s + 53, 1, &flags) < 0)
		return -1;
	if (gk_id_zero(c->trace_id, 16) || gk_id_zero(c->span_id, 8))
		return -1;
	c->sampled = flags & 1;
	c->random = flags & 2;
	c->sampled_known = true;
	return 0;
}

static int
parse_trace_id(const char *s, size_t n, uint8_t out[16])
{
	memset(out, 0, 16);
	if (n == 32)
		return unhex(s, 16, out);
	if (n == 16) /* 64-bit B3 ids are left-padded with zeros */
		return unhex(s, 8, out + 8);
	return -1;
}

static int
sampling_state(const char *s, size_t n, gk_trace_ctx *c)
{
	if (n != 1)
		return -1;
	if (*s == '1')
		c->sampled = true;
	else if (*s == '0')
		c->sampled = false;
	else if (*s == 'd')
		c->sampled = c->debug = true;
	else
		return -1;
	c->sampled_known = true;
	return 0;
}

int
gk_b3_parse(const char *s, size_t n, gk_trace_ctx *c, int *sampling_only)
{
	memset(c, 0, sizeof *c);
	*sampling_only = -1;
	if (n == 1) {
		if (sampling_state(s, 1, c) == 0)
			*sampling_only = c->sampled;
		return -1;
	}
	const char *dash = memchr(s, '-', n);
	if (!dash || parse_trace_id(s, (size_t)(dash - s), c->trace_id) < 0)
		return -1;
	const char *p = dash + 1, *end = s + n;
	if (end - p < 16 || unhex(p, 8, c->span_id) < 0)
		return -1;
	p += 16;
	if (p < end) {
		if (*p != '-' || end - p < 2)
			return -1;
		p++;
		if (sampling_state(p, 1, c) < 0)
			return -1;
		p++;
		if (p < end) {
			uint8_t parent[8];
			if (*p != '-' || end - p != 17 || unhex(p + 1, 8, parent) < 0)
				return -1;
		}
	}
	if (gk_id_zero(c->trace_id, 16) || gk_id_zero(c->span_id, 8))
		return -1;
	return 0;
}

/* A header value of n bytes equals the C string lit. */
static bool
is(const char *v, size_t n, const char *lit)
{
	return v && strlen(lit) == n && memcmp(v, lit, n) == 0;
}

/* X-B3-Flags and X-B3-Sampled into c; -1 for a value B3 does not define. */
static int
multi_sampling(const char *sampled, size_t smn, const char *flags, size_t fn,
    gk_trace_ctx *c)
{
	if (is(flags, fn, "1")) {
		c->debug = c->sampled = c->sampled_known = true;
	} else if (sampled) {
		if (is(sampled, smn, "1") || is(sampled, smn, "true"))
			c->sampled = c->sampled_known = true;
		else if (is(sampled, smn, "0") || is(sampled, smn, "false"))
			c->sampled_known = true;
		else
			return -1;
	}
	return 0;
}

int
gk_b3_multi_parsen(const char *trace, size_t tn, const char *span, size_t sn,
    const char *parent, size_t pn, const char *sampled, size_t smn,
    const char *flags, size_t fn, gk_trace_ctx *c, int *sampling_only)
{
	uint8_t parent_id[8];
	memset(c, 0, sizeof *c);
	*sampling_only = -1;
	if (!trace && !span) {
		/* A decision alone, as a lone b3 "0", "1" or "d". */
		if ((sampled || flags) &&
		    multi_sampling(sampled, smn, flags, fn, c) == 0 &&
		    c->sampled_known)
			*sampling_only = c->sampled;
		return -1;
	}
	if (!trace || !span)
		return -1;
	if (parse_trace_id(trace, tn, c->trace_id) < 0 || sn != 16 ||
	    unhex(span, 8, c->span_id) < 0)
		return -1;
	/* Not used, but a bad one is a bad context, as in a b3 header. */
	if (parent && (pn != 16 || unhex(parent, 8, parent_id) < 0))
		return -1;
	if (gk_id_zero(c->trace_id, 16) || gk_id_zero(c->span_id, 8))
		return -1;
	return multi_sampling(sampled, smn, flags, fn, c);
}

int
gk_b3_multi_parse(const char *trace, const char *span, const char *sampled,
    const char *flags, gk_trace_ctx *c)
{
	int only;
	return gk_b3_multi_parsen(trace, trace ? strlen(trace) : 0, span,
	    span ? strlen(span) : 0, NULL, 0, sampled,
	    sampled ? strlen(sampled) : 0, flags, flags ? strlen(flags) : 0, c,
	    &only);
}

/* lcalpha / DIGIT / "_" / "-" / "*" / "/": the rest of a key's parts. */
static bool
keychar(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
	    c == '-' || c == '*' || c == '/';
}

/* simple-key = lcalpha 0*255(keychar), or multi-tenant-key = tenant-id
 * "@" system-id, tenant-id (lcalpha / DIGIT) 0*240(keychar), system-id
 * lcalpha 0*13(keychar). */
static bool
tracestate_key(const char *k, size_t n)
{
	const char *at = memchr(k, '@', n);
	size_t first = at ? (size_t)(at - k) : n;
	/* A tenant id may begin with a digit; a simple key may not. */
	bool lc = k[0] >= 'a' && k[0] <= 'z', digit = k[0] >= '0' && k[0] <= '9';
	if (!first || !(lc || (at && digit)))
		return false;
	for (size_t i = 1; i < first; i++)
		if (!keychar((unsigned char)k[i]))
			return false;
	if (!at)
		return first <= 256;
	const char *sys = at + 1;
	size_t sn = n - first - 1;
	if (first > 241 || !sn || sn > 14 || !(*sys >= 'a' && *sys <= 'z'))
		return false;
	for (size_t i = 1; i < sn; i++)
		if (!keychar((unsigned char)sys[i]))
			return false;
	return true;
}

/* value = 0*255(chr) nblk-chr: printable ASCII but ',' and '=', not
 * ending in a space (trailing optional whitespace is already gone). */
static bool
tracestate_value(const char *v, size_t n)
{
	if (!n || n > 256 || v[n - 1] == ' ')
		return false;
	for (size_t i = 0; i < n; i++)
		if (v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=')
			return false;
	return true;
}

static bool
ows(char c)
{
	return c == ' ' || c == '\t';
}

int
gk_tracestate_clean(const char *s, size_t n, char *out, size_t *outlen)
{
	/* Where each key went in out, to find a key twice. */
	struct {
		size_t at, n;
	} keys[32];
	size_t nkeys = 0, len = 0;
	const char *p = s, *end = s + n, *comma;
	*outlen = 0;
	/* Each member, up to a comma or the end; empty ones are allowed. */
	do {
		comma = memchr(p, ',', (size_t)(end - p));
		const char *m = p, *me = comma ? comma : end;
		if (comma)
			p = comma + 1;
		while (m < me && ows(*m))
			m++;
		while (me > m && ows(me[-1]))
			me--;
		if (m == me)
			continue;
		const char *eq = memchr(m, '=', (size_t)(me - m));
		if (!eq || nkeys == 32 || !tracestate_key(m, (size_t)(eq - m)) ||
		    !tracestate_value(eq + 1, (size_t)(me - eq - 1)))
			return -1;
		size_t kn = (size_t)(eq - m);
		for (size_t i = 0; i < nkeys; i++)
			if (keys[i].n == kn && !memcmp(out + keys[i].at, m, kn))
				return -1;
		if (len)
			out[len++] = ',';
		keys[nkeys].at = len;
		keys[nkeys++].n = kn;
		memcpy(out + len, m, (size_t)(me - m));
		len += (size_t)(me - m);
	} while (comma);
	*outlen = len;
	return 0;
}

/* The two hex digits of every byte. */
#define H4(x) #x "0" #x "1" #x "2" #x "3" #x "4" #x "5" #x "6" #x "7" \
	#x "8" #x "9" #x "a" #x "b" #x "c" #x "d" #x "e" #x "f"
static const char hex_pairs[513] = H4(0) H4(1) H4(2) H4(3) H4(4) H4(5)
    H4(6) H4(7) H4(8) H4(9) H4(a) H4(b) H4(c) H4(d) H4(e) H4(f);
#undef H4

void
gk_hex(const uint8_t *p, size_t n, char *out)
{
	size_t i = 0;
#ifdef __SSE2__
	/* Eight bytes a step (every id is 8 or 16): the nibbles side by
	 * side, then '0'-'9' or 'a'-'f' each, without a table. */
	const __m128i low4 = _mm_set1_epi8(0x0f), nine = _mm_set1_epi8(9);
	for (; n - i >= 8; i += 8) {
		__m128i v = _mm_loadl_epi64((const __m128i *)(const void *)(p + i));
		__m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4);
		__m128i nib = _mm_unpacklo_epi8(hi, _mm_and_si128(v, low4));
		__m128i letter = _mm_and_si128(_mm_cmpgt_epi8(nib, nine),
		    _mm_set1_epi8('a' - '0' - 10));
		_mm_storeu_si128((__m128i *)(void *)(out + 2 * i),
		    _mm_add_epi8(_mm_add_epi8(nib, _mm_set1_epi8('0')), letter));
	}
#endif
	for (; i < n; i++)
		memcpy(out + 2 * i, hex_pairs + 2 * p[i], 2);
	out[2 * n] = 0;
}

void
gk_traceparent_format_flags(const uint8_t trace_id[16],
    const uint8_t span_id[8], uint8_t flags, char out[56])
{
	memcpy(out, "00-", 3);
	gk_hex(trace_id, 16, out + 3);
	out[35] = '-';
	gk_hex(span_id, 8, out + 36);
	out[52] = '-';
	out[53] = '0';
	out[54] = (char)('0' + (flags & 3));
	out[55] = 0;
}

void
gk_traceparent_format(const uint8_t trace_id[16], const uint8_t span_id[8],
    bool sampled, char out[56])
{
	gk_traceparent_format_flags(trace_id, span_id, sampled, out);
}

/* xoshiro256**: fast, good enough for ids; seeded once from getrandom. */
static uint64_t rng[4];
static bool seeded;

static uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t
next64(void)
{
	if (!seeded) {
		if (getrandom(rng, sizeof rng, 0) != sizeof rng) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			rng[0] = (uint64_t)ts.tv_nsec ^ 0x9e3779b97f4a7c15ull;
			rng[1] = (uint64_t)ts.tv_sec;
			rng[2] = (uint64_t)&ts;
			rng[3] = 0x2545f4914f6cdd1dull;
		}
		seeded = true;
	}
	uint64_t r = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
	rng[2] ^= rng[0];
	rng[3] ^= rng[1];
	rng[1] ^= rng[2];
	rng[0] ^= rng[3];
	rng[2] ^= t;
	rng[3] = rotl(rng[3], 45);
	return r;
}

void
gk_random_id(uint8_t *p, size_t n)
{
	do {
		for (size_t i = 0; i < n; i += 8) {
			uint64_t v = next64();
			memcpy(p + i, &v, n - i < 8 ? n - i : 8);
		}
	} while (gk_id_zero(p, n));
}

double
gk_random_unit(void)
{
	return (double)(next64() >> 11) * 0x1.0p-53;
}
