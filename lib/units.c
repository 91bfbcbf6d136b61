/*
 * units.c: durations, rates, sizes and whole numbers as options give them,
 * and the one-line usage error.
 *
 * Durations: one or more NUMBER UNIT pairs ("250ms", "1.5s", "1m30s"), or a
 * bare NUMBER meaning seconds ("2", "0.25").  Units: us, ms, s, m, h.
 * NUMBER is digits with an optional ".digits" fraction; no sign, exponent or
 * space.  The result is rounded up to a whole millisecond, so "100us" is 1ms
 * and only a true zero gives 0.
 *
 * Rates: NUMBER or NUMBER/UNIT with UNIT one of s, m, h ("100/s", "6000/m",
 * "10/h"); a bare NUMBER is per second.  Zero is rejected.  The exact
 * form is a fraction of whole numbers, as given: "0.25/m" is 25 / 6000.
 *
 * Sizes: a whole number of bytes with an optional suffix, case-insensitive:
 * b; k, kb, kib (1024); m, mb, mib (1024^2); g, gb, gib (1024^3); t, tb,
 * tib (1024^4).  Every multiple is binary ("16KB" is 16384): these are buffer
 * and queue sizes, where nobody means 16000.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "gokit.h"
#include "runtime.h"

/*
 * Parse DIGITS[.DIGITS] at *sp into a whole part and a fraction
 * num/10^k (k <= 18; digits past that only set *sticky when non-zero).
 */
static int
parse_decimal(const char **sp, uint64_t *whole, uint64_t *num, unsigned *k,
              bool *sticky)
{
	const char *s = *sp;
	uint64_t w = 0;
	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (__builtin_mul_overflow(w, 10, &w) ||
		    __builtin_add_overflow(w, (uint64_t)(*s - '0'), &w))
			return -1;
	}
	*num = 0;
	*k = 0;
	*sticky = false;
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -1;
		for (; *s >= '0' && *s <= '9'; s++) {
			if (*k < 18) {
				*num = *num * 10 + (uint64_t)(*s - '0');
				(*k)++;
			} else if (*s != '0')
				*sticky = true;
		}
	}
	*whole = w;
	*sp = s;
	return 0;
}

static uint64_t
pow10u(unsigned k)
{
	uint64_t p = 1;
	while (k--)
		p *= 10;
	return p;
}

int
gk_parse_duration_ms(const char *s, uint64_t *ms)
{
	static const struct {
		const char *name;
		uint64_t us;
	} units[] = {
	    {"us", 1},       {"ms", 1000},         {"s", 1000000},
	    {"m", 60000000}, {"h", 3600000000ull},
	};
	if (!s || !*s)
		return -1;
	uint64_t total_us = 0;
	bool first = true;
	while (*s) {
		uint64_t whole, num;
		unsigned k;
		bool sticky;
		if (parse_decimal(&s, &whole, &num, &k, &sticky) < 0)
			return -1;
		uint64_t unit = 0;
		if (!*s && first)
			unit = 1000000; /* a bare number is seconds */
		else {
			/* Longest unit name first: "ms" before "m". */
			size_t best = 0;
			for (size_t i = 0; i < sizeof units / sizeof units[0];
			     i++) {
				size_t n = strlen(units[i].name);
				if (n > best &&
				    strncmp(s, units[i].name, n) == 0) {
					best = n;
					unit = units[i].us;
				}
			}
			if (!best)
				return -1;
			s += best;
		}
		uint64_t us;
		if (__builtin_mul_overflow(whole, unit, &us))
			return -1;
		/* The fraction, rounded up: exact in 128 bits. */
		unsigned __int128 f = (unsigned __int128)num * unit;
		uint64_t p = pow10u(k);
		uint64_t fus = (uint64_t)(f / p);
		if (f % p || sticky)
			fus++;
		if (__builtin_add_overflow(us, fus, &us) ||
		    __builtin_add_overflow(total_us, us, &total_us))
			return -1;
		first = false;
	}
	*ms = total_us / 1000 + (total_us % 1000 != 0);
	return 0;
}

/* "", "/s", "/m" or "/h" at p: the seconds a rate's count is per; 0 for
 * anything else. */
static unsigned
rate_unit_seconds(const char *p)
{
	if (!*p)
		return 1;
	if (*p++ != '/' || !p[0] || p[1])
		return 0;
	return *p == 's' ? 1 : *p == 'm' ? 60 : *p == 'h' ? 3600 : 0;
}

int
gk_parse_rate(const char *s, double *per_second)
{
	if (!s || !*s)
		return -1;
	const char *p = s;
	uint64_t whole, num;
	unsigned k;
	bool sticky;
	if (parse_decimal(&p, &whole, &num, &k, &sticky) < 0)
		return -1;
	size_t numlen = (size_t)(p - s);
	double div = rate_unit_seconds(p);
	if (!div)
		return -1;
	/* The grammar is checked; strtod does the rounding. */
	char tmp[64];
	if (numlen >= sizeof tmp)
		return -1;
	memcpy(tmp, s, numlen);
	tmp[numlen] = 0;
	double v = strtod(tmp, NULL);
	if (!isfinite(v) || v <= 0)
		return -1;
	v /= div;
	if (v <= 0)
		return -1;
	*per_second = v;
	return 0;
}

int
gk_parse_rate_exact(const char *s, uint64_t *num, uint64_t *den_s)
{
	if (!s)
		return -1;
	const char *p = s;
	uint64_t whole, frac;
	unsigned k;
	bool sticky;
	if (parse_decimal(&p, &whole, &frac, &k, &sticky) < 0 || sticky)
		return -1;
	uint64_t div = rate_unit_seconds(p);
	if (!div)
		return -1;
	uint64_t n, d;
	if (__builtin_mul_overflow(whole, pow10u(k), &n) ||
	    __builtin_add_overflow(n, frac, &n) || !n ||
	    __builtin_mul_overflow(pow10u(k), div, &d))
		return -1;
	*num = n;
	*den_s = d;
	return 0;
}

int
gk_parse_size(const char *s, size_t *bytes)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} suffixes[] = {
	    {"", 0},     {"b", 0},   {"k", 10},   {"kb", 10},  {"kib", 10},
	    {"m", 20},   {"mb", 20}, {"mib", 20}, {"g", 30},   {"gb", 30},
	    {"gib", 30}, {"t", 40},  {"tb", 40},  {"tib", 40},
	};
	if (!s || *s < '0' || *s > '9')
		return -1;
	uint64_t v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
			return -1;
	}
	for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
		if (strcasecmp(s, suffixes[i].suffix) != 0)
			continue;
		unsigned sh = suffixes[i].shift;
		if (sh && v > (UINT64_MAX >> sh))
			return -1;
		v <<= sh;
		if (v > SIZE_MAX)
			return -1;
		*bytes = (size_t)v;
		return 0;
	}
	return -1;
}

int
gk_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return -1;
	uint64_t v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
			return -1;
	}
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

const char *gk__usage_name;

void
gk_usage_error(const char *fmt, ...)
{
	gk_buf b = {0};
	const char *prog = gk__usage_name ? gk__usage_name : gk_proc_name();
	gk_buf_addf(&b, "%s: usage: ", prog && *prog ? prog : "gokit");
	va_list ap;
	va_start(ap, fmt);
	char tmp[1024];
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	/* One line, whatever the message holds. */
	for (char *p = tmp; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	gk_buf_adds(&b, tmp);
	gk_buf_addc(&b, '\n');
	/* Plain stderr, one write, so it cannot interleave with events. */
	(void)!write(2, b.data, b.len);
	gk_buf_free(&b);
	exit(GK_EXIT_USAGE);
}

void
gk_usage_getopt(int c, char *const *argv)
{
	if (c == ':') /* with ':' first in the optstring */
		gk_usage_error("%s: expected a value (see --help)",
		    argv[optind - 1]);
	gk_usage_bad_option(argv);
}

void
gk_usage_bad_option(char *const *argv)
{
	if (optopt)
		gk_usage_error("unknown option -%c (see --help)", optopt);
	gk_usage_error("unknown option %s (see --help)", argv[optind - 1]);
}

uint64_t
gk_opt_uint(const char *opt, const char *v, uint64_t min, uint64_t max)
{
	uint64_t n;
	if (gk_parse_uint(v, min, max, &n) < 0)
		gk_usage_error("bad --%s: %s (expected a whole number from %llu "
			       "to %llu)",
		    opt, v, (unsigned long long)min, (unsigned long long)max);
	return n;
}

uint64_t
gk_opt_duration_ms(const char *opt, const char *v, uint64_t min_ms)
{
	uint64_t ms;
	if (gk_parse_duration_ms(v, &ms) < 0 || ms < min_ms) {
		char least[48] = "";
		if (min_ms > 1)
			snprintf(least, sizeof least, " of at least %llums",
			    (unsigned long long)min_ms);
		else if (min_ms)
			snprintf(least, sizeof least, " above 0");
		gk_usage_error("bad --%s: %s (expected a duration%s: 250ms, 2s, "
			       "1m)",
		    opt, v, least);
	}
	return ms;
}

size_t
gk_opt_size(const char *opt, const char *v, size_t min)
{
	size_t n;
	if (gk_parse_size(v, &n) < 0 || n < min) {
		char least[48] = "";
		if (min > 1)
			snprintf(least, sizeof least, " of at least %zu bytes",
			    min);
		else if (min)
			snprintf(least, sizeof least, " above 0");
		gk_usage_error("bad --%s: %s (expected a size%s: 16k, 1m, bytes)",
		    opt, v, least);
	}
	return n;
}
