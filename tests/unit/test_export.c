/* test_export.c: the exporters' shared reading of events (lib/export.c). */
#include <stdint.h>

#include "export.h"
#include "unit.h"

static gk_json
str(const char *quoted)
{
	return (gk_json){GK_JSON_STRING, quoted, strlen(quoted)};
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

int
main(void)
{
	RUN(timestamps);
	return UNIT_END();
}
