/*
 * fuzz_upstream.c: libFuzzer target for gk-client's native HTTP/1.1
 * engine (upstream_http.c) and the wire line gk-client makes of what it
 * parsed (client.c's upstream_line), without sockets.
 *
 * Input: a flags byte, two bytes seeding the cuts, then the upstream's
 * bytes.  Flags: 1 the request was a HEAD; 2, 4 pick --max-response; 8
 * the upstream never closes (no EOF); 16 a huge header value, 32 many
 * distinct headers, inserted after the status line, their sizes from the
 * seed (past http_parser's 80 KiB bound at times).
 *
 * The bytes go to the parser once whole, then cut into reads of 1 to 64
 * bytes; both must end the same way with the same line.  Every line must
 * be one gk_wire_parse accepts, with the status, every end-to-end header
 * and the body the engine reported.  Any disagreement aborts.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "upstream_http.h"

#define MUST(c)                                                                \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "fuzz_upstream: %s:%d: %s\n",          \
			        __FILE__, __LINE__, #c);                       \
			abort();                                               \
		}                                                              \
	} while (0)

static uint32_t
next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* One run: the probe's callbacks, wrapped to see what they are given. */
struct run {
	gk_uh_ops inner;
	void *arg;
	gk__client_probe *probe;
	gk_buf body;  /* what the body callback took */
	gk_buf names; /* the header names reported, lowercase, NUL after each */
	bool connection;
	bool done;
	enum gk_uh_result r;
	int status;
};

static void
w_reset(void *a)
{
	struct run *r = a;
	r->names.len = 0;
	r->connection = false;
	r->inner.reset(r->arg);
}

static int
w_header(void *a, const char *n, size_t nl, const char *v, size_t vl)
{
	struct run *r = a;
	MUST(!r->done);
	MUST(memchr(n, 0, nl) == NULL);
	for (size_t i = 0; i < nl; i++)
		gk_buf_addc(&r->names, (char)tolower((unsigned char)n[i]));
	gk_buf_addc(&r->names, 0);
	if (nl == 10 && !strncasecmp(n, "connection", 10))
		r->connection = true;
	return r->inner.header(r->arg, n, nl, v, vl);
}

static int
w_body(void *a, const char *p, size_t n)
{
	struct run *r = a;
	MUST(!r->done);
	int k = r->inner.body(r->arg, p, n);
	if (k >= 0)
		gk_buf_add(&r->body, p, n);
	return k;
}

static void
w_done(void *a, enum gk_uh_result res, int status, bool sent)
{
	struct run *r = a;
	MUST(!r->done);
	MUST(sent);
	r->done = true;
	r->r = res;
	r->status = status;
}

static bool
hop_by_hop(const char *n)
{
	static const char *const hop[] = {"connection", "keep-alive",
	    "proxy-connection", "transfer-encoding", "te", "trailer",
	    "upgrade", "proxy-authorization", "proxy-authenticate",
	    "content-length", "expect", NULL};
	for (int i = 0; hop[i]; i++)
		if (!strcmp(hop[i], n))
			return true;
	return false;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The line of an answered try, checked; appended to tr. */
static void
check_line(struct run *r, gk_buf *tr)
{
	gk_buf line = {0};
	gk_json id = {GK_JSON_STRING, "\"r1\"", 4};
	if (gk__client_probe_line(r->probe, id, r->status, &line) < 0) {
		gk_buf_adds(tr, "TOO LONG\n");
		gk_buf_free(&line);
		return;
	}
	gk_wire_msg m;
	gk_wire_error err;
	if (gk_wire_parse(&m, line.data, line.len, &err) != 0) {
		fprintf(stderr, "fuzz_upstream: bad line at %zu (%s): %.*s\n",
		        err.offset, err.reason, (int)line.len, line.data);
		abort();
	}
	MUST(gk_json_eq(gk_wire_get(&m, "id"), "r1"));
	int64_t st;
	MUST(gk_json_int(gk_wire_get(&m, "status"), &st) && st == r->status);
	gk_json h = gk_wire_get(&m, "headers");
	MUST(h.type == GK_JSON_OBJECT);
	/* Every header that is end to end is there (Connection may name
	 * more to drop, which this does not know: then none is checked).
	 * The keys sorted, for a check in n log n: thousands may come. */
	if (!r->connection) {
		gk_buf keys = {0};
		gk_json_iter it;
		gk_json k, v;
		size_t nk = 0;
		gk_json_iter_init(&it, h);
		while (gk_json_iter_next(&it, &k, &v)) {
			MUST(gk_json_string(k, &keys) == 0);
			gk_buf_addc(&keys, 0);
			nk++;
		}
		const char **key = calloc(nk + 1, sizeof *key);
		for (size_t i = 0, o = 0; i < nk; i++) {
			key[i] = keys.data + o;
			o += strlen(key[i]) + 1;
		}
		qsort(key, nk, sizeof *key, by_name);
		for (size_t o = 0; o < r->names.len;) {
			const char *n = r->names.data + o;
			o += strlen(n) + 1;
			if (!hop_by_hop(n) &&
			    !bsearch(&n, key, nk, sizeof *key, by_name)) {
				fprintf(stderr, "fuzz_upstream: header %s lost: "
				        "%.*s\n", n, (int)line.len, line.data);
				abort();
			}
		}
		free(key);
		gk_buf_free(&keys);
	}
	/* The body is the one taken, byte for byte. */
	gk_msg *msg = gk_msg_new(line.data, line.len, &err);
	MUST(msg != NULL);
	gk_buf body = {0};
	const char *why = NULL;
	MUST(gk_msg_body(msg, &body, &why) == 0);
	MUST(body.len == r->body.len &&
	     (!body.len || !memcmp(body.data, r->body.data, body.len)));
	gk_buf_free(&body);
	gk_msg_free(msg);
	gk_buf_add(tr, line.data, line.len);
	gk_buf_addc(tr, '\n');
	gk_buf_free(&line);
}

static gk_loop *loop;
static gk_uh *uh;

/* Feed data cut as seed says (0: whole); the transcript of the end. */
static void
run(const char *data, size_t len, unsigned flags, uint32_t seed, gk_buf *tr)
{
	static const size_t maxr[] = {8u << 20, 64, 4096, 1};
	struct run r = {0};
	bool head = flags & 1;
	r.probe = gk__client_probe_new(head ? "HEAD" : "GET",
	    maxr[flags >> 1 & 3], &r.inner, &r.arg);
	static const gk_uh_ops ops = {w_reset, w_header, w_body, w_done};
	gk_uh_xfer x;
	gk__uh_begin(uh, &x, head, &ops, &r);
	/* as gk-client sets it: a length past it ends the try at once */
	x.max_body = maxr[flags >> 1 & 3];
	size_t fed = 0;
	bool more = true;
	while (more && fed < len) {
		size_t k = seed ? next(&seed) % 64 + 1 : len;
		if (k > len - fed)
			k = len - fed;
		more = gk__uh_feed(&x, data + fed, k);
		fed += k;
		MUST(more == !r.done);
	}
	if (more && !(flags & 8)) {
		more = gk__uh_feed(&x, NULL, 0);
		MUST(!more && r.done);
	}
	if (r.done)
		MUST(!gk__uh_feed(&x, "x", 1));
	if (r.done) {
		gk_buf_addf(tr, "%d %d\n", (int)r.r, r.status);
		if (r.r == GK_UH_OK) {
			MUST(r.status == 101 ||
			     (r.status >= 200 && r.status <= 999));
			check_line(&r, tr);
		} else {
			MUST(r.status == 0);
			MUST((r.r == GK_UH_ABORTED) ==
			     (gk__client_probe_too_big(r.probe) || x.too_long));
		}
	} else
		gk_buf_adds(tr, "RUNNING\n");
	gk_uh_xfer_free(&x);
	gk__client_probe_free(r.probe);
	gk_buf_free(&r.body);
	gk_buf_free(&r.names);
}

int
LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
	if (size < 3)
		return 0;
	if (!loop) {
		loop = gk_loop_new();
		uh = gk_uh_new(loop, 0, NULL, NULL, NULL);
	}
	unsigned flags = in[0];
	uint32_t seed = (uint32_t)in[1] << 8 | in[2];
	const char *data = (const char *)in + 3;
	size -= 3;

	/* Huge headers, made here: inputs that big mutate slowly. */
	gk_buf big = {0};
	if (flags & (16 | 32)) {
		const char *eol = memchr(data, '\n', size);
		size_t at = eol ? (size_t)(eol - data) + 1 : size;
		gk_buf_add(&big, data, at);
		if (flags & 16) {
			gk_buf_adds(&big, "X-Big: ");
			size_t n = (size_t)(in[1] % 96) * 1024 + in[2];
			for (size_t i = 0; i < n; i++)
				gk_buf_addc(&big, 'b');
			gk_buf_adds(&big, "\r\n");
		}
		if (flags & 32) {
			unsigned n = (unsigned)in[2] * 32;
			for (unsigned i = 0; i < n; i++)
				gk_buf_addf(&big, "H%u: %u\r\n", i, i);
		}
		gk_buf_add(&big, data + at, size - at);
		data = big.data;
		size = big.len;
	}

	gk_buf a = {0}, b = {0};
	run(data, size, flags, 0, &a);
	run(data, size, flags, seed | 1, &b);
	gk_buf_cstr(&a);
	gk_buf_cstr(&b);
	if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) {
		fprintf(stderr, "fuzz_upstream: cut changes the result:\n"
		        "%s---\n%s", a.data, b.data);
		abort();
	}
	gk_buf_free(&a);
	gk_buf_free(&b);
	gk_buf_free(&big);
	return 0;
}
