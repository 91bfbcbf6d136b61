/*
 * fuzz_tracecontext.c: libFuzzer target for the trace context parsers that
 * gk-tracer runs on every request's headers: traceparent, b3, the B3 multi
 * headers and tracestate, all untrusted input.
 *
 * Invariants, any violation aborts:
 * - a traceparent that parses, formatted again (version 00), parses to the
 *   same ids, sampled and random-trace-id flags;
 * - a b3 that parses has non-zero ids and formats as a traceparent that
 *   parses;
 * - a tracestate that is accepted comes out no longer than it went in, of
 *   at most 32 members, and cleaning that output again changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gokit.h"
#include "tracecontext.h"

#define MUST(c)                                                                \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "fuzz_tracecontext: %s:%d: %s\n",      \
			        __FILE__, __LINE__, #c);                       \
			abort();                                               \
		}                                                              \
	} while (0)

static void
check_format(const gk_trace_ctx *c, bool keep_random)
{
	char tp[56];
	gk_traceparent_format_flags(c->trace_id, c->span_id,
	    (uint8_t)(c->sampled | (keep_random && c->random) << 1), tp);
	gk_trace_ctx again;
	MUST(gk_traceparent_parse(tp, 55, &again) == 0);
	MUST(memcmp(again.trace_id, c->trace_id, 16) == 0);
	MUST(memcmp(again.span_id, c->span_id, 8) == 0);
	MUST(again.sampled == c->sampled);
	MUST(again.random == (keep_random && c->random));
}

static void
check_tracestate(const char *s, size_t n)
{
	char *out = malloc(n + 1), *out2 = malloc(n + 1);
	size_t len, len2;
	if (gk_tracestate_clean(s, n, out, &len) == 0) {
		MUST(len <= n);
		size_t members = len ? 1 : 0;
		for (size_t i = 0; i < len; i++)
			members += out[i] == ',';
		MUST(members <= 32);
		MUST(gk_tracestate_clean(out, len, out2, &len2) == 0);
		MUST(len2 == len && memcmp(out, out2, len) == 0);
	}
	free(out);
	free(out2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of its own size, so that a read past the end is caught. */
	char *s = malloc(size ? size : 1);
	memcpy(s, data, size);

	gk_trace_ctx c;
	if (gk_traceparent_parse(s, size, &c) == 0)
		check_format(&c, true);

	int only;
	if (gk_b3_parse(s, size, &c, &only) == 0) {
		MUST(!gk_id_zero(c.trace_id, 16) && !gk_id_zero(c.span_id, 8));
		check_format(&c, false);
	}

	/* The B3 multi headers: the input cut at NUL bytes, in the order
	 * trace, span, parent, sampled, flags; a missing part is absent. */
	const char *part[5] = {0};
	size_t plen[5] = {0};
	const char *p = s, *end = s + size;
	for (int i = 0; i < 5 && p <= end; i++) {
		const char *nul = memchr(p, 0, (size_t)(end - p));
		part[i] = p;
		plen[i] = (size_t)((nul ? nul : end) - p);
		if (!nul)
			break;
		p = nul + 1;
	}
	if (gk_b3_multi_parsen(part[0], plen[0], part[1], plen[1], part[2],
	    plen[2], part[3], plen[3], part[4], plen[4], &c, &only) == 0) {
		MUST(!gk_id_zero(c.trace_id, 16) && !gk_id_zero(c.span_id, 8));
		check_format(&c, false);
	}

	check_tracestate(s, size);
	free(s);
	return 0;
}
