/* test_rhttp.c: the line splitting of a streamed HTTP body (etcd's watch
 * stream) in lib/resolver_http.c. */
#include <time.h>

#include "resolver_http.h"
#include "unit.h"

struct seen {
	gk_buf all; /* every line, each followed by '|' */
	size_t lines, longest;
	size_t stop_after; /* 0: never */
};

static bool
on_line(gk_rhttp *h, const char *line, size_t len, void *arg)
{
	(void)h;
	struct seen *s = arg;
	s->lines++;
	if (len > s->longest)
		s->longest = len;
	if (len < 100) {
		gk_buf_add(&s->all, line, len);
		gk_buf_addc(&s->all, '|');
	}
	return !s->stop_after || s->lines < s->stop_after;
}

static void
stream_init(gk_rhttp *h, struct seen *s)
{
	memset(s, 0, sizeof *s);
	gk__rhttp_init(h, NULL);
	h->on_line = on_line;
	h->arg = s;
}

/* Lines cut anywhere by the chunks arrive whole, in order; blank lines
 * are skipped; the partial last line waits for its newline. */
TEST(lines_across_chunks)
{
	static const char text[] = "{\"a\":1}\n\n{\"b\":22}\n{\"c\":333}\n{\"d\"";
	for (size_t cut = 1; cut <= sizeof text - 1; cut++) {
		gk_rhttp h;
		struct seen s;
		stream_init(&h, &s);
		for (size_t off = 0; off < sizeof text - 1; off += cut) {
			size_t n = sizeof text - 1 - off < cut ?
			    sizeof text - 1 - off : cut;
			CHECK(gk__rhttp_stream(&h, text + off, n) == 0);
		}
		CHECK_STR(gk_buf_cstr(&s.all), "{\"a\":1}|{\"b\":22}|{\"c\":333}|");
		CHECK(h.body.len == 4 && !memcmp(h.body.data, "{\"d\"", 4));
		CHECK(gk__rhttp_stream(&h, ":4}\n", 4) == 0);
		CHECK_STR(gk_buf_cstr(&s.all),
		    "{\"a\":1}|{\"b\":22}|{\"c\":333}|{\"d\":4}|");
		CHECK(h.body.len == 0);
		gk_buf_free(&s.all);
		gk__rhttp_free(&h);
	}
}

/* on_line's false ends the stream at once. */
TEST(on_line_ends_the_stream)
{
	gk_rhttp h;
	struct seen s;
	stream_init(&h, &s);
	s.stop_after = 2;
	CHECK(gk__rhttp_stream(&h, "1\n2\n3\n", 6) < 0);
	CHECK(h.aborted);
	CHECK(s.lines == 2);
	gk_buf_free(&s.all);
	gk__rhttp_free(&h);
}

static double
cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * A long line in small chunks (a big watch response, as etcd sends a
 * large batch of events) is scanned once: each chunk's bytes are looked
 * at once, not the whole line again on every chunk.  Rescanning made this
 * 8 MiB line in 1 KiB chunks about 3.4e10 byte comparisons, 11 s of CPU
 * at -O2; scanned once it takes 5 ms (0.35 s under ASan and UBSan, whose
 * realloc always copies).  The bound is 2 s of this process's CPU time,
 * so that a busy machine does not count.
 */
TEST(long_line_scanned_once)
{
	enum { LINE = 8 << 20, CHUNK = 1024 };
	char chunk[CHUNK];
	memset(chunk, 'x', sizeof chunk);
	gk_rhttp h;
	struct seen s;
	stream_init(&h, &s);
	double t0 = cpu_seconds();
	for (size_t off = 0; off < LINE; off += CHUNK)
		CHECK(gk__rhttp_stream(&h, chunk, CHUNK) == 0);
	CHECK(gk__rhttp_stream(&h, "\n", 1) == 0);
	double spent = cpu_seconds() - t0;
	printf("# %d bytes in %d-byte chunks: %.3f s of CPU\n", LINE, CHUNK,
	    spent);
	CHECK(s.lines == 1 && s.longest == LINE);
	CHECK(h.body.len == 0);
	CHECK(spent < 2.0);
	gk_buf_free(&s.all);
	gk__rhttp_free(&h);
}

int
main(void)
{
	RUN(lines_across_chunks);
	RUN(on_line_ends_the_stream);
	RUN(long_line_scanned_once);
	return UNIT_END();
}
