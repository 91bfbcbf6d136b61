/*
 * logship.c: event helpers shared by the log-shipping plugins (see
 * logship.h): microsecond timestamps, type filters, key=value text.
 */
#include <string.h>
#include <time.h>

#include "logship.h"

static int
digits(const char *p, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

uint64_t
gk_event_ts_us(const gk_event *ev)
{
	/* "2026-12-04T09:30:00.123456Z" (quotes included in len) */
	if (ev->ts.type != GK_JSON_STRING || ev->ts.len < 22)
		return 0;
	const char *p = ev->ts.p + 1;
	const char *end = ev->ts.p + ev->ts.len - 1;
	if (p[4] != '-' || p[7] != '-' || (p[10] != 'T' && p[10] != ' ') ||
	    p[13] != ':' || p[16] != ':')
		return 0;
	int y = digits(p, 4), mo = digits(p + 5, 2), d = digits(p + 8, 2);
	int h = digits(p + 11, 2), mi = digits(p + 14, 2),
	    s = digits(p + 17, 2);
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 ||
	    h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60)
		return 0;
	struct tm tm = {.tm_year = y - 1900,
	                .tm_mon = mo - 1,
	                .tm_mday = d,
	                .tm_hour = h,
	                .tm_min = mi,
	                .tm_sec = s};
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return 0;
	uint64_t us = (uint64_t)t * 1000000;
	const char *q = p + 19;
	if (q < end && *q == '.') {
		uint64_t scale = 100000;
		for (q++; q < end && *q >= '0' && *q <= '9'; q++) {
			us += (uint64_t)(*q - '0') * scale;
			scale /= 10;
		}
	}
	/* An offset other than Z: +hh:mm or -hh:mm. */
	if (q < end && (*q == '+' || *q == '-') && end - q >= 6) {
		int oh = digits(q + 1, 2), om = digits(q + 4, 2);
		if (oh >= 0 && om >= 0) {
			uint64_t off =
			    ((uint64_t)oh * 3600 + (uint64_t)om * 60) * 1000000;
			if (*q == '+')
				us = us > off ? us - off : 0;
			else
				us += off;
		}
	}
	return us;
}

uint64_t
gk_event_ts_us_or_now(const gk_event *ev)
{
	uint64_t us = gk_event_ts_us(ev);
	return us ? us : gk_realtime_us();
}

static const char *const type_names[] = {"log", "metrics", "span", "access",
                                         "other"};

const char *
gk_event_type_name(enum gk_event_type t)
{
	return (unsigned)t < 5 ? type_names[t] : "other";
}

int
gk_evmask_parse(const char *s, unsigned *mask)
{
	unsigned m = 0;
	while (*s) {
		size_t n = strcspn(s, ",");
		bool found = false;
		if (n == 3 && !strncmp(s, "all", 3)) {
			m = GK_EVMASK_ALL;
			found = true;
		}
		for (unsigned i = 0; i < 5 && !found; i++) {
			if (strlen(type_names[i]) == n &&
			    !strncmp(s, type_names[i], n)) {
				m |= 1u << i;
				found = true;
			}
		}
		if (!found)
			return -1;
		s += n;
		if (*s == ',')
			s++;
	}
	if (!m)
		return -1;
	*mask = m;
	return 0;
}

static bool
needs_quotes(const char *p, size_t n)
{
	if (!n)
		return true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c <= ' ' || c == '"' || c == '\\' || c == '=' || c == 0x7f)
			return true;
	}
	return false;
}

void
gk_event_kv_text(const gk_event *ev, gk_buf *out)
{
	gk_buf v = {0};
	for (unsigned i = 0; i < ev->msg->nfields; i++) {
		const gk_wire_field *f = &ev->msg->field[i];
		if (gk_event_common_key(f->key) || gk_json_eq(f->key, "raw"))
			continue;
		gk_buf_addc(out, ' ');
		gk_json_string(f->key, out);
		gk_buf_addc(out, '=');
		if (f->value.type != GK_JSON_STRING) {
			gk_buf_add(out, f->value.p, f->value.len);
			continue;
		}
		gk_buf_reset(&v);
		gk_json_string(f->value, &v);
		if (needs_quotes(v.data, v.len))
			gk_json_quote(out, v.data ? v.data : "", v.len);
		else
			gk_buf_add(out, v.data, v.len);
	}
	gk_buf_free(&v);
}
