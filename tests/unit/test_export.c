/* test_export.c: the exporters' shared reading of events (lib/export.c). */
#include <math.h>
#include <stdint.h>

#include "export.h"
#include "influx_line.h"
#include "unit.h"

static gk_json
str(const char *quoted)
{
	return (gk_json){GK_JSON_STRING, quoted, strlen(quoted)};
}

/* Lone surrogate escapes become \ufffd; pairs, escaped backslashes and
 * escapes cut short at the end stay as they are. */
TEST(mend_surrogates)
{
	static const struct {
		const char *in, *out;
		size_t n;
	} cases[] = {
	    {"\"a\\ud800b\"", "\"a\\ufffdb\"", 1},
	    {"\"\\uDC00\\uD800\"", "\"\\ufffd\\ufffd\"", 2},
	    {"\"\\ud800\\ud800\\udc00\"", "\"\\ufffd\\ud800\\udc00\"", 1},
	    {"\"\\ud83d\\ude00\"", NULL, 0},
	    {"\"\\\\ud800\"", NULL, 0},
	    {"\"\\u00e9\\n\"", NULL, 0},
	    {"\"\\ud80", NULL, 0},
	    {"\"\\ud800\\ud", "\"\\ufffd\\ud", 1},
	    {"\\", NULL, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		gk_buf out = {0};
		gk_buf_adds(&out, "untouched");
		size_t n = gk__event_mend_surrogates(cases[i].in,
		                                     strlen(cases[i].in), &out);
		CHECK(n == cases[i].n);
		gk_buf_addc(&out, '\0');
		CHECK_STR(out.data, cases[i].out ? cases[i].out : "untouched");
		gk_buf_free(&out);
	}
}

/* Buckets in le order whatever the producer's, a repeat or NaN left out
 * and counted. */
TEST(buckets_ordered)
{
	const char *j = "[[1,5],[\"+Inf\",7],[0.1,2],[0.5,4],[0.5,9],"
	                "[\"NaN\",3],[-1,0]]";
	gk_snap_series s = {.buckets = {GK_JSON_ARRAY, j, strlen(j)}};
	gk_snap_bucket *v = NULL;
	size_t cap = 0, dropped = 0;
	size_t n = gk_snap_buckets(&s, &v, &cap, &dropped);
	static const double le[] = {-1, 0.1, 0.5, 1, INFINITY};
	static const double c[] = {0, 2, 4, 5, 7};
	CHECK(n == 5);
	CHECK(dropped == 2);
	for (size_t i = 0; i < n && i < 5; i++)
		CHECK(v[i].le == le[i] && v[i].count == c[i]);
	free(v);
}

TEST(timestamps)
{
	static const struct {
		const char *ts; /* as the wire holds it, quotes included */
		uint64_t ns;
	} cases[] = {
	    {"\"1970-01-01T00:00:00Z\"", 0},
	    {"\"2026-12-04T09:30:00.123456Z\"", 1796376600123456000ull},
	    {"\"2026-12-04 09:30:00.123456Z\"", 1796376600123456000ull},
	    {"\"2026-12-04T09:30:00Z\"", 1796376600000000000ull},
	    {"\"2026-12-04T09:30:00.5Z\"", 1796376600500000000ull},
	    {"\"2026-12-04T09:30:00.123456789Z\"", 1796376600123456789ull},
	    /* past nine digits: the rest is below a nanosecond */
	    {"\"2026-12-04T09:30:00.1234567891Z\"", 1796376600123456789ull},
	    {"\"2026-12-04T10:30:00.000001+01:00\"", 1796376600000001000ull},
	    {"\"2026-12-04T08:00:00-01:30\"", 1796376600000000000ull},
	    /* not a timestamp: 0 */
	    {"\"2026-12-04\"", 0},
	    {"\"2026/12/04T09:30:00Z\"", 0},
	    {"\"2026-13-04T09:30:00Z\"", 0},
	    {"\"2026-12-04T24:30:00Z\"", 0},
	    {"\"1969-12-31T23:59:59Z\"", 0},
	    {"\"2026-12-04Tx9:30:00Z\"", 0},
	    /* the last nanosecond a uint64_t holds, then past it: no time,
	     * not one wrapped to the 1970s */
	    {"\"2554-07-21T23:34:33.709551615Z\"", 18446744073709551615ull},
	    {"\"2554-07-22T01:34:33.709551615+02:00\"",
	     18446744073709551615ull},
	    {"\"2554-07-21T23:34:33.709551616Z\"", 0},
	    {"\"2554-07-21T22:34:34-01:00\"", 0},
	    {"\"2600-01-01T00:00:00Z\"", 0},
	    {"\"9999-12-31T23:59:59Z\"", 0},
	    /* before the epoch once the offset is applied */
	    {"\"1970-01-01T00:30:00+01:00\"", 0},
	    {"\"1969-12-31T23:30:00-01:00\"", 1800000000000ull},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t got = gk_event_ts_ns(str(cases[i].ts));
		if (got != cases[i].ns)
			printf("#   %s: %llu, want %llu\n", cases[i].ts,
			       (unsigned long long)got,
			       (unsigned long long)cases[i].ns);
		CHECK(got == cases[i].ns);
	}
	gk_json num = {GK_JSON_NUMBER, "1796376600", 10};
	CHECK(gk_event_ts_ns(num) == 0);

	gk_event ev = {0};
	ev.ts = str("\"2026-12-04T09:30:00.123456Z\"");
	CHECK(gk_event_ts_ms(&ev) == 1796376600123ull);
	CHECK(gk_event_ts_us(&ev) == 1796376600123456ull);
	ev.ts = (gk_json){GK_JSON_NONE, NULL, 0};
	CHECK(gk_event_ts_ms(&ev) == 0 && gk_event_ts_us(&ev) == 0);
}

static bool
influx_special(char c, bool measurement)
{
	return c == ',' || c == ' ' || (!measurement && c == '=');
}

/* Read an escaped name back as InfluxDB's parser does (1.x and 2.x): a
 * special character right after a backslash is escaped, the pair read as
 * the character; any other backslash is itself, two are two; an unescaped
 * special character would end the name, and a trailing backslash would
 * escape the separator after it, so both fail. */
static bool
influx_unescape(const char *s, size_t n, bool measurement, gk_buf *out)
{
	if (n && s[n - 1] == '\\')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && i + 1 < n &&
		    influx_special(s[i + 1], measurement)) {
			gk_buf_addc(out, s[++i]);
			continue;
		}
		if (influx_special(s[i], measurement))
			return false;
		gk_buf_addc(out, s[i]);
	}
	return true;
}

static void
check_influx_name(const char *in, bool measurement, const char *want)
{
	gk_buf b = {0};
	gk_influx_name(&b, in, strlen(in), measurement);
	bool ok = b.len == strlen(want) && !memcmp(b.data, want, b.len);
	if (!ok)
		printf("#   [%s]: [%.*s], want [%s]\n", in, (int)b.len,
		       b.data ? b.data : "", want);
	CHECK(ok);
	gk_buf_free(&b);
}

TEST(influx_escaping)
{
	check_influx_name("a b", false, "a\\ b");
	check_influx_name("a,b=c", false, "a\\,b\\=c");
	check_influx_name("a=b", true, "a=b");
	check_influx_name("a\\b", false, "a\\b");
	check_influx_name("a\\ b", false, "a\\\\ b");
	check_influx_name("ab\\", false, "ab");
	check_influx_name("ab\\\\", true, "ab");
	check_influx_name("a\\\\b", false, "a\\\\b");
	check_influx_name("a\\=", false, "a\\\\=");
	check_influx_name("a\\=", true, "a\\=");
	check_influx_name("a\nb", false, "a\\ b");
	check_influx_name("#m", true, "_#m");
	check_influx_name("#m", false, "#m");
	check_influx_name("m#", true, "m#");

	/* Every name of up to 6 characters of a, backslash, space, comma and
	 * equals reads back as itself, less its trailing backslashes. */
	static const char alpha[] = "a\\ ,=";
	char in[8];
	gk_buf enc = {0}, dec = {0};
	int bad = 0;
	for (int len = 1; len <= 6; len++) {
		int total = 1;
		for (int i = 0; i < len; i++)
			total *= 5;
		for (int x = 0; x < total; x++) {
			for (int i = 0, y = x; i < len; i++, y /= 5)
				in[i] = alpha[y % 5];
			for (int m = 0; m < 2; m++) {
				gk_buf_reset(&enc);
				gk_buf_reset(&dec);
				gk_influx_name(&enc, in, (size_t)len, m);
				size_t want =
				    gk_influx_name_len(in, (size_t)len);
				if (influx_unescape(enc.data, enc.len, m,
				                    &dec) &&
				    dec.len == want &&
				    !memcmp(dec.data, in, want))
					continue;
				if (bad++ < 5)
					printf("#   [%.*s] -> [%.*s]\n", len, in,
					       (int)enc.len, enc.data);
			}
		}
	}
	CHECK(bad == 0);
	gk_buf_free(&enc);
	gk_buf_free(&dec);
}

TEST(influx_empty_field_key)
{
	static const char line[] =
	    "{\"ts\":\"2026-12-04T09:30:00Z\",\"type\":\"log\","
	    "\"msg\":\"hi\",\"\":\"x\",\"n\":1}";
	gk_wire_msg m;
	gk_wire_error err;
	CHECK(gk_wire_parse(&m, line, strlen(line), &err) == 0);
	gk_event ev = {.line = line, .len = strlen(line), .msg = &m,
	               .type = GK_EV_LOG};
	ev.ts = gk_wire_get(&m, "ts");
	ev.text = gk_wire_get(&m, "msg");
	gk_influx_opts o = {.logs = "logs"};
	gk_influx_stats st = {0};
	gk_buf out = {0};
	CHECK(gk_influx_event(&ev, &o, &out, &st) == 1);
	const char *want =
	    "logs,level=info msg=\"hi\",n=1 1796376600000000000\n";
	bool ok = out.len == strlen(want) && !memcmp(out.data, want, out.len);
	if (!ok)
		printf("#   [%.*s]\n", (int)out.len, out.data);
	CHECK(ok);
	CHECK(st.empty_keys == 1);
	gk_buf_free(&out);
}

int
main(void)
{
	RUN(timestamps);
	RUN(buckets_ordered);
	RUN(mend_surrogates);
	RUN(influx_escaping);
	RUN(influx_empty_field_key);
	return UNIT_END();
}
