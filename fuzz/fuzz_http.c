/*
 * fuzz_http.c: libFuzzer target for the HTTP request parser and renderer.
 *
 * The input's first two bytes choose how the rest is cut into reads (the
 * parser must not care); the rest is fed to gk_http_parser as a server
 * would.  Every request it reports must encode to a line gk_wire_parse
 * accepts, and must come out the same whichever way the bytes were cut.
 * Each line is then turned into a response (its headers and body) and
 * rendered, which must not crash and must not emit CR or LF inside a
 * header line.  Any disagreement aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define MUST(c)                                                                \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__,    \
			        __LINE__, #c);                                 \
			abort();                                               \
		}                                                              \
	} while (0)

static const gk_http_limits limits = {.max_header = 2048, .max_body = 4096};

/* Splits from a small PRNG so that any cut can happen. */
static uint32_t
next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void
check_render(const gk_wire_msg *req, const gk_http_info *info)
{
	gk_json h = gk_wire_get(req, "headers");
	gk_json b = gk_wire_get(req, "body");
	gk_json b64 = gk_wire_get(req, "body_b64");
	gk_buf line = {0};
	gk_buf_adds(&line, "{\"id\":\"x\",\"status\":200");
	if (h.type != GK_JSON_NONE) {
		gk_buf_adds(&line, ",\"headers\":");
		gk_buf_add(&line, h.p, h.len);
	}
	if (b.type != GK_JSON_NONE) {
		gk_buf_adds(&line, ",\"body\":");
		gk_buf_add(&line, b.p, b.len);
	}
	if (b64.type != GK_JSON_NONE) {
		gk_buf_adds(&line, ",\"body_b64\":");
		gk_buf_add(&line, b64.p, b64.len);
	}
	gk_buf_addc(&line, '}');
	gk_wire_error err;
	gk_msg *m = gk_msg_new(line.data, line.len, &err);
	MUST(m != NULL);
	gk_buf out = {0};
	size_t bb;
	const char *why = NULL;
	if (gk_http_render(m, info, info->keep_alive, &out, &bb, &why) == 0) {
		/* The head: lines that end in CRLF, no other CR or LF. */
		gk_buf_cstr(&out);
		char *end = strstr(out.data, "\r\n\r\n");
		MUST(end != NULL);
		for (char *q = out.data; q < end; q++) {
			MUST(*q != '\n' && *q != '\0');
			if (*q == '\r')
				MUST(*++q == '\n');
		}
		MUST((size_t)(out.data + out.len - (end + 4)) == bb);
	} else
		MUST(why != NULL && out.len == 0);
	gk_buf_free(&out);
	gk_msg_free(m);
	gk_buf_free(&line);
}

/* Feed data cut as seed says; the transcript of what came out. */
static void
run(const uint8_t *data, size_t len, uint32_t seed, bool check, gk_buf *tr)
{
	gk_http_parser *p = gk_http_parser_new(&limits);
	gk_buf pend = {0}, line = {0};
	size_t fed = 0;
	int nreq = 0;
	for (;;) {
		if (fed < len) {
			size_t k = seed ? next(&seed) % 64 + 1 : len;
			if (k > len - fed)
				k = len - fed;
			gk_buf_add(&pend, data + fed, k);
			fed += k;
		} else if (!pend.len)
			break;
		size_t used = (size_t)-1;
		enum gk_http_feed r = gk_http_parser_feed(
		    p, pend.data ? pend.data : "", pend.len, &used);
		MUST(used <= pend.len);
		if (r == GK_HTTP_NEED_MORE)
			MUST(used == pend.len);
		gk_buf_consume(&pend, used);
		if (r == GK_HTTP_REQUEST) {
			const gk_http_info *info = gk_http_parser_info(p);
			gk_http_info copy = *info;
			/* Encoded with its index, which must be what a
			 * parse of the line makes. */
			gk_msg *em = gk_http_parser_encode_msg(p, "r1",
			    "127.0.0.1:9", 1234567890123ull);
			MUST(em != NULL);
			MUST(gk_http_parser_idle(p));
			line.len = 0;
			gk_buf_add(&line, em->line.data, em->line.len);
			gk_wire_msg *m = malloc(sizeof *m);
			gk_wire_error err;
			if (gk_wire_parse(m, em->line.data, em->line.len, &err) != 0) {
				fprintf(stderr,
				        "fuzz_http: bad line at %zu "
				        "(%s): %.*s\n",
				        err.offset, err.reason, (int)line.len,
				        line.data);
				abort();
			}
			MUST(gk__wire_same_index(m, &em->wire) &&
			     !em->wire.escaped);
			gk_msg_free(em);
			MUST(gk_wire_get(m, "method").type == GK_JSON_STRING);
			MUST(gk_wire_get(m, "path").type == GK_JSON_STRING);
			MUST(gk_wire_get(m, "headers").type == GK_JSON_OBJECT);
			if (check)
				check_render(m, &copy);
			free(m);
			gk_buf_add(tr, line.data, line.len);
			gk_buf_addc(tr, '\n');
			if (++nreq > 64 || !copy.keep_alive)
				break;
		} else if (r == GK_HTTP_CONTINUE)
			gk_buf_adds(tr, "CONTINUE\n");
		else if (r == GK_HTTP_ERROR) {
			const gk_http_info *info = gk_http_parser_info(p);
			MUST(info->error_status >= 400 &&
			     info->error_status <= 505 && info->error);
			gk_buf_addf(tr, "ERROR %d\n", info->error_status);
			break;
		} else if (fed >= len)
			break;
	}
	MUST(gk_http_parser_footprint(p) > 0);
	gk_buf_free(&pend);
	gk_buf_free(&line);
	gk_http_parser_free(p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint32_t seed = (uint32_t)data[0] << 8 | data[1];
	data += 2;
	size -= 2;
	gk_buf a = {0}, b = {0};
	run(data, size, 0, true, &a);
	run(data, size, seed | 1, false, &b);
	gk_buf_cstr(&a);
	gk_buf_cstr(&b);
	if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) {
		fprintf(stderr, "fuzz_http: cut changes the result:\n%s---\n%s",
		        a.data, b.data);
		abort();
	}
	gk_buf_free(&a);
	gk_buf_free(&b);
	return 0;
}
