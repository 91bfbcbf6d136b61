/* test_http.c: HTTP/1.x request parsing (to wire lines) and rendering. */
#include <jansson.h>
#include <time.h>

#include "http.h"
#include "unit.h"

static const gk_http_limits limits = {.max_header = 8192, .max_body = 65536};

/*
 * Feed req to a new parser step bytes at a time (0: all at once), as a
 * server would: keep what was not consumed and feed it again with the next
 * read.  The transcript: one line per event, "CONTINUE", "ERROR 400 why"
 * or the encoded wire request.
 */
static void
transcript(const gk_http_limits *lim, const char *req, size_t len, size_t step,
           gk_buf *out)
{
	gk_http_parser *p = gk_http_parser_new(lim);
	gk_buf pend = {0};
	size_t fed = 0, n = 0;
	char id[16];
	if (!step)
		step = len;
	for (;;) {
		if (fed < len) {
			size_t k = len - fed < step ? len - fed : step;
			gk_buf_add(&pend, req + fed, k);
			fed += k;
		} else if (!pend.len)
			break;
		size_t used;
		enum gk_http_feed r =
		    gk_http_parser_feed(p, pend.data, pend.len, &used);
		gk_buf_consume(&pend, used);
		if (r == GK_HTTP_REQUEST) {
			snprintf(id, sizeof id, "r%zu", n++);
			gk_http_parser_encode(p, id, "10.0.0.7:5555", 0, out);
			gk_buf_addc(out, '\n');
		} else if (r == GK_HTTP_CONTINUE)
			gk_buf_adds(out, "CONTINUE\n");
		else if (r == GK_HTTP_ERROR) {
			const gk_http_info *i = gk_http_parser_info(p);
			gk_buf_addf(out, "ERROR %d %s\n", i->error_status,
			            i->error);
			break;
		} else if (fed >= len)
			break; /* need more, and there is no more */
	}
	gk_buf_free(&pend);
	gk_http_parser_free(p);
	gk_buf_cstr(out);
}

/* Parse one request whole; returns its wire line (jansson) or NULL. */
static json_t *
parse1(const char *req, int *err_status)
{
	gk_buf out = {0};
	transcript(&limits, req, strlen(req), 0, &out);
	*err_status = 0;
	json_t *j = NULL;
	if (!strncmp(out.data, "ERROR ", 6))
		*err_status = atoi(out.data + 6);
	else {
		json_error_t e;
		j = json_loadb(out.data, out.len,
		               JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &e);
	}
	gk_buf_free(&out);
	return j;
}

static const char *
jstr(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k));
}

static const char *
jhdr(json_t *j, const char *k)
{
	return json_string_value(
	    json_object_get(json_object_get(j, "headers"), k));
}

static int
error_of(const char *req)
{
	int st;
	json_t *j = parse1(req, &st);
	json_decref(j);
	return st;
}

/* Every line of a transcript that is not an event must be valid JSON. */
static bool
lines_valid(const char *t)
{
	while (*t) {
		const char *nl = strchr(t, '\n');
		size_t n = nl ? (size_t)(nl - t) : strlen(t);
		if (*t == '{') {
			json_error_t e;
			json_t *j = json_loadb(t, n, 0, &e);
			if (!j || !json_is_object(j)) {
				printf("#   bad line: %.*s\n", (int)n, t);
				return false;
			}
			json_decref(j);
		}
		t += n + (nl != NULL);
	}
	return true;
}

static const char get8[] =
    "GET /api/v1/orders?id=42&x=y HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\n"
    "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=abcdef0123456789; theme=dark\r\n"
    "Cache-Control: max-age=0\r\n"
    "\r\n";

TEST(simple_get)
{
	int st;
	json_t *j = parse1("GET /hello?name=w%20x HTTP/1.1\r\n"
	                   "Host: a.example\r\nX-Thing:  two words \t\r\n\r\n",
	                   &st);
	CHECK(j != NULL);
	CHECK_STR(jstr(j, "id"), "r0");
	CHECK_STR(jstr(j, "method"), "GET");
	CHECK_STR(jstr(j, "path"), "/hello");
	CHECK_STR(jstr(j, "query"), "name=w%20x");
	CHECK_STR(jhdr(j, "host"), "a.example");
	CHECK_STR(jhdr(j, "x-thing"), "two words");
	CHECK_STR(jstr(j, "remote"), "10.0.0.7:5555");
	CHECK(json_object_get(j, "body") == NULL);
	CHECK(json_object_get(j, "body_b64") == NULL);
	CHECK(json_object_get(j, "deadline") == NULL);
	json_decref(j);

	/* info and the deadline member */
	gk_http_parser *p = gk_http_parser_new(&limits);
	size_t used;
	const char *r = "HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
	CHECK(gk_http_parser_idle(p));
	CHECK(gk_http_parser_feed(p, r, 10, &used) == GK_HTTP_NEED_MORE);
	CHECK(used == 10);
	CHECK(!gk_http_parser_idle(p));
	CHECK(gk_http_parser_feed(p, r + 10, strlen(r) - 10, &used) ==
	      GK_HTTP_REQUEST);
	const gk_http_info *i = gk_http_parser_info(p);
	CHECK(i->head && i->keep_alive && i->http_minor == 0);
	CHECK_STR(i->method, "HEAD");
	CHECK(!i->timeout_header);
	gk_buf out = {0};
	gk_http_parser_encode(p, "a\"b", NULL, 1700000000123ull, &out);
	CHECK(gk_http_parser_idle(p));
	json_error_t e;
	j = json_loadb(out.data, out.len, 0, &e);
	CHECK(j != NULL);
	CHECK_STR(jstr(j, "id"), "a\"b");
	CHECK(json_integer_value(json_object_get(j, "deadline")) ==
	      1700000000123ll);
	CHECK(json_object_get(j, "remote") == NULL);
	json_decref(j);

	/* The listener reads x-gk-timeout-ms only when the parser saw it
	 * (any case), for this request and not the next. */
	r = "GET / HTTP/1.1\r\nHost: a\r\nX-GK-Timeout-Ms: 50\r\n\r\n"
	    "GET / HTTP/1.1\r\nHost: a\r\nX-GK-Timeout: 50\r\n\r\n";
	CHECK(gk_http_parser_feed(p, r, strlen(r), &used) == GK_HTTP_REQUEST);
	CHECK(gk_http_parser_info(p)->timeout_header);
	out.len = 0;
	gk_http_parser_encode(p, "1", NULL, 0, &out);
	size_t first = used;
	CHECK(gk_http_parser_feed(p, r + first, strlen(r) - first, &used) ==
	      GK_HTTP_REQUEST);
	CHECK(!gk_http_parser_info(p)->timeout_header);
	gk_buf_free(&out);
	gk_http_parser_free(p);
}

TEST(keep_alive_rules)
{
	struct {
		const char *req;
		bool ka;
	} c[] = {
	    {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true},
	    {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
	    {"GET / HTTP/1.0\r\n\r\n", false},
	    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
	};
	for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
		gk_http_parser *p = gk_http_parser_new(&limits);
		size_t used;
		CHECK(gk_http_parser_feed(p, c[k].req, strlen(c[k].req),
		                          &used) == GK_HTTP_REQUEST);
		CHECK(gk_http_parser_info(p)->keep_alive == c[k].ka);
		gk_http_parser_free(p);
	}
}

/* Inputs whose transcript must not depend on how they are split. */
static const char *const split_cases[] = {
    get8,
    "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    "GET /q?x HTTP/1.1\r\nHost: h\r\nA: 1\r\nA: 2\r\n\r\n",
    "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    "PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
    "Content-Length: 3\r\n\r\nabc",
    "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX:\r\n b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\n\rZ",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    "3\r\nabcXY0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n",
    "\r\nGET /lf HTTP/1.1\nHost: h\n\n",
};

TEST(split_every_byte)
{
	for (size_t k = 0; k < sizeof split_cases / sizeof split_cases[0];
	     k++) {
		const char *r = split_cases[k];
		gk_buf whole = {0}, bytes = {0}, three = {0};
		transcript(&limits, r, strlen(r), 0, &whole);
		transcript(&limits, r, strlen(r), 1, &bytes);
		transcript(&limits, r, strlen(r), 3, &three);
		CHECK_STR(bytes.data, whole.data);
		CHECK_STR(three.data, whole.data);
		CHECK(lines_valid(whole.data));
		gk_buf_free(&whole);
		gk_buf_free(&bytes);
		gk_buf_free(&three);
	}
	/* the results of some of them */
	gk_buf t = {0};
	transcript(&limits, split_cases[4], strlen(split_cases[4]), 1, &t);
	CHECK(strstr(t.data, "ERROR 400 obs-fold") == t.data);
	gk_buf_reset(&t);
	transcript(&limits, split_cases[5], strlen(split_cases[5]), 1, &t);
	CHECK(strstr(t.data, "ERROR 400 obs-fold") == t.data);
	gk_buf_reset(&t);
	transcript(&limits, split_cases[6], strlen(split_cases[6]), 1, &t);
	CHECK(strncmp(t.data, "ERROR 400", 9) == 0);
	gk_buf_reset(&t);
	transcript(&limits, split_cases[7], strlen(split_cases[7]), 1, &t);
	CHECK(strncmp(t.data, "ERROR 400", 9) == 0);
	gk_buf_reset(&t);
	transcript(&limits, split_cases[8], strlen(split_cases[8]), 1, &t);
	CHECK(strncmp(t.data, "ERROR 400", 9) == 0);
	gk_buf_reset(&t);
	transcript(&limits, split_cases[9], strlen(split_cases[9]), 1, &t);
	CHECK(strstr(t.data, "\"path\":\"/lf\"") != NULL);
	gk_buf_free(&t);
}

TEST(pipelined_one_at_a_time)
{
	const char *r =
	    "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
	    "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
	    "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
	gk_http_parser *p = gk_http_parser_new(&limits);
	size_t off = 0, len = strlen(r), used;
	const char *paths[] = {"/a", "/b", "/c"};
	for (int k = 0; k < 3; k++) {
		CHECK(gk_http_parser_feed(p, r + off, len - off, &used) ==
		      GK_HTTP_REQUEST);
		off += used;
		CHECK(k == 2 ? off == len : off < len);
		/* not encoded yet: feeding again repeats the answer */
		size_t u2;
		CHECK(gk_http_parser_feed(p, r + off, len - off, &u2) ==
		          GK_HTTP_REQUEST &&
		      u2 == 0);
		gk_buf out = {0};
		gk_http_parser_encode(p, "i", NULL, 0, &out);
		json_error_t e;
		json_t *j = json_loadb(out.data, out.len, 0, &e);
		CHECK_STR(jstr(j, "path"), paths[k]);
		if (k == 1)
			CHECK_STR(jstr(j, "body"), "hi");
		json_decref(j);
		gk_buf_free(&out);
	}
	CHECK(gk_http_parser_idle(p));
	gk_http_parser_free(p);
}

TEST(chunked_body)
{
	int st;
	json_t *j = parse1(split_cases[2], &st);
	CHECK(j != NULL);
	CHECK_STR(jstr(j, "body"), "hello world");
	CHECK(jhdr(j, "trailer") == NULL);
	CHECK(jhdr(j, "transfer-encoding") != NULL);
	json_decref(j);
	/* case-insensitive "chunked" */
	j = parse1("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked"
	           "\r\n\r\n2\r\nok\r\n0\r\n\r\n",
	           &st);
	CHECK(j && st == 0);
	CHECK_STR(jstr(j, "body"), "ok");
	json_decref(j);
}

TEST(expect_continue)
{
	gk_http_parser *p = gk_http_parser_new(&limits);
	const char *h =
	    "PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
	    "Content-Length: 4\r\n\r\n";
	size_t used;
	CHECK(gk_http_parser_feed(p, h, strlen(h), &used) == GK_HTTP_CONTINUE);
	CHECK(used <= strlen(h));
	h += used;
	CHECK(gk_http_parser_feed(p, h, strlen(h), &used) == GK_HTTP_NEED_MORE);
	CHECK(gk_http_parser_feed(p, "da", 2, &used) == GK_HTTP_NEED_MORE);
	CHECK(gk_http_parser_feed(p, "ta", 2, &used) == GK_HTTP_REQUEST);
	gk_buf out = {0};
	gk_http_parser_encode(p, "1", NULL, 0, &out);
	CHECK(strstr(gk_buf_cstr(&out), "\"body\":\"data\"") != NULL);
	gk_buf_free(&out);
	gk_http_parser_free(p);

	/* with the body in the same read: CONTINUE, then the request */
	gk_buf t = {0};
	transcript(&limits, split_cases[3], strlen(split_cases[3]), 0, &t);
	CHECK(strncmp(t.data, "CONTINUE\n{", 10) == 0);
	CHECK(strstr(t.data, "\"body\":\"abc\"") != NULL);
	gk_buf_reset(&t);
	/* no body: no 100 */
	const char *g =
	    "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n";
	transcript(&limits, g, strlen(g), 0, &t);
	CHECK(t.data[0] == '{');
	gk_buf_free(&t);
	CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nExpect: tea\r\n"
	               "Content-Length: 1\r\n\r\nx") == 417);
	/* HTTP/1.0: Expect is ignored */
	CHECK(error_of("POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
	               "Content-Length: 1\r\n\r\nx") == 0);
	/* An empty Expect is an empty list: no expectation, and no 100
	 * (RFC 9110 §5.6.1, §10.1.1) */
	CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nExpect:\r\n"
	               "Content-Length: 1\r\n\r\nx") == 0);
	const char *e = "POST / HTTP/1.1\r\nHost: h\r\nExpect:  \r\n"
	                "Content-Length: 1\r\n\r\nx";
	gk_buf_reset(&t);
	transcript(&limits, e, strlen(e), 0, &t);
	CHECK(t.data && t.data[0] == '{');
	gk_buf_free(&t);
}

TEST(errors)
{
	CHECK(error_of("GARBAGE\r\n\r\n") == 400);
	/* a method we do not know, or lowercase: 501 (RFC 9110 §9.1) */
	CHECK(error_of("FOO / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
	CHECK(error_of("get / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
	CHECK(error_of("GETS / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
	CHECK(error_of("GE / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
	/* The same answer however the bytes come (the fuzzer's finding:
	 * a request line cut after "OPTION" was 400, whole it was 501). */
	static const char *const cut[] = {
	    "OPTIONbodyS * HTTP/1.1\r\nHost: h\r\n\r\n",
	    "FOO / HTTP/1.1\r\nHost: h\r\n\r\n",
	    "get /x HTTP/1.0\r\n\r\n",
	    "GE / HTTP/1.1\r\n\r\n",
	    " / HTTP/1.1\r\n\r\n",
	    "FOO / HTTP/1\r\n\r\n",
	    "THIS IS NOT HTTP\r\n\r\n",
	    "\r\nPOSTX /a HTTP/1.1\r\nHost: h\r\n\r\n"};
	for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
		size_t len = strlen(cut[i]);
		gk_buf whole = {0};
		transcript(&limits, cut[i], len, 0, &whole);
		for (size_t step = 1; step < len; step++) {
			gk_buf part = {0};
			transcript(&limits, cut[i], len, step, &part);
			if (strcmp(whole.data, part.data) != 0) {
				printf(
				    "#   %zu-byte pieces of %s: %s, whole: %s",
				    step, cut[i], part.data, whole.data);
				CHECK(0);
			}
			gk_buf_free(&part);
		}
		gk_buf_free(&whole);
	}
	CHECK(error_of(" / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
	CHECK(error_of("NOT HTTP\r\n\r\n") == 400);
	CHECK(error_of("THIS IS NOT HTTP\r\n\r\n") == 400);
	CHECK(error_of("FOO / HTTP/1\r\n\r\n") == 400);
	CHECK(error_of("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") == 400);
	CHECK(error_of("GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n") ==
	      400);
	CHECK(error_of("GET / HTTP/1.1\r\n\r\n") == 400); /* no Host */
	CHECK(error_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
	CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
	               "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400);
	CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	               "chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n") == 400);
	CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
	               "Content-Length: 4\r\n\r\nabcd") == 400);
	CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n"
	               "\r\n") == 400);
	CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	               "gzip, chunked\r\n\r\n0\r\n\r\n") == 501);
	CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	               "gzip\r\n\r\n") == 501);
	CHECK(error_of(
	          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	          "chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") ==
	      501);
	CHECK(error_of("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n") == 501);
	CHECK(error_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n") == 505);
	CHECK(error_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n") == 400);

	/* 413 at the headers, before any body byte */
	gk_http_limits small = {.max_header = 256, .max_body = 10};
	gk_buf t = {0};
	const char *big =
	    "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
	    "Content-Length: 11\r\n\r\n";
	transcript(&small, big, strlen(big), 0, &t);
	CHECK(strncmp(t.data, "ERROR 413", 9) == 0);
	gk_buf_reset(&t);
	const char *ch =
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n";
	transcript(&small, ch, strlen(ch), 1, &t);
	CHECK(strncmp(t.data, "ERROR 413", 9) == 0);
	gk_buf_reset(&t);
	const char *ok = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
	                 "\r\n0123456789";
	transcript(&small, ok, strlen(ok), 1, &t);
	CHECK(t.data[0] == '{');
	gk_buf_reset(&t);

	/* 431: one byte past the limit, whole or byte by byte */
	char h[512];
	int n = snprintf(h, sizeof h, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
	memset(h + n, 'a', 256 - (size_t)n - 4);
	memcpy(h + 256 - 4, "\r\n\r\n", 5);
	CHECK(strlen(h) == 256);
	transcript(&small, h, 256, 0, &t);
	CHECK(t.data[0] == '{'); /* exactly at the limit */
	gk_buf_reset(&t);
	memmove(h + 30, h + 29, 228); /* one more 'a' */
	CHECK(strlen(h) == 257);
	transcript(&small, h, 257, 0, &t);
	CHECK(strncmp(t.data, "ERROR 431", 9) == 0);
	gk_buf_reset(&t);
	transcript(&small, h, 257, 1, &t);
	CHECK(strncmp(t.data, "ERROR 431", 9) == 0);
	gk_buf_free(&t);
}

/* Chunk lines and trailers frame the body: a byte another parser could
 * take for a line end (LF, CR) or that no grammar allows (CTL) is 400,
 * however the bytes are cut (RFC 9112 §7.1.1, §7.1.2, §5.1, §5.2). */
#define H "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
TEST(chunk_ext_and_trailers)
{
	static const char *const bad[] = {
	    /* LF inside an extension: a parser taking bare LF as a line
	     * end would read "3;a" then a chunk of `"\r` ... */
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "3;a=\"b\nc\"\r\nabc\r\n0\r\n\r\n",
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "3;x\nabc\r\n0\r\n\r\n",
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "3;a\x01\r\nabc\r\n0\r\n\r\n",
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "3;a\x7f\r\nabc\r\n0\r\n\r\n",
	    /* the last chunk's extension too */
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "0;a\nb\r\n\r\n",
	    /* trailers: whitespace before the colon, obs-fold */
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "1\r\na\r\n0\r\nX-T : 1\r\n\r\n",
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "1\r\na\r\n0\r\nX-T: 1\r\n 2\r\n\r\n",
	    /* BWS is only before ';' or '=' and after them: a trailing
	     * space (or tab) is no chunk-ext, and a parser that reads "3 "
	     * otherwise frames the body otherwise (§7.1, §7.1.1) */
	    H "3 \r\nabc\r\n0\r\n\r\n",
	    H "3\t\r\nabc\r\n0\r\n\r\n",
	    H "3;a \r\nabc\r\n0\r\n\r\n",
	    H "3;a=b\t\r\nabc\r\n0\r\n\r\n",
	    H "3;a=\"b\" \r\nabc\r\n0\r\n\r\n",
	    H "0 \r\n\r\n",
	    /* what follows a size or BWS is ';' and a token, then '=' and
	     * a token or quoted-string */
	    H "3 x\r\nabc\r\n0\r\n\r\n",
	    H "3 4\r\nabc\r\n0\r\n\r\n",
	    H "3;\r\nabc\r\n0\r\n\r\n",
	    H "3;;a\r\nabc\r\n0\r\n\r\n",
	    H "3;=b\r\nabc\r\n0\r\n\r\n",
	    H "3;a=\r\nabc\r\n0\r\n\r\n",
	    H "3;a=b c\r\nabc\r\n0\r\n\r\n",
	    H "3;a=b\"c\r\nabc\r\n0\r\n\r\n",
	    H "3;a=\"b\r\nabc\r\n0\r\n\r\n",
	    H "3;a=\"b\"c\r\nabc\r\n0\r\n\r\n",
	    H "3;a b\r\nabc\r\n0\r\n\r\n",
	    H "3;a@b\r\nabc\r\n0\r\n\r\n",
	    /* the size is 1*HEXDIG: no sign, prefix or leading space, and
	     * one that overflows is refused, not wrapped */
	    H " 3\r\nabc\r\n0\r\n\r\n",
	    H "+3\r\nabc\r\n0\r\n\r\n",
	    H "-3\r\nabc\r\n0\r\n\r\n",
	    H "0x3\r\nabc\r\n0\r\n\r\n",
	    H "\r\nabc\r\n0\r\n\r\n",
	    H "10000000000000003\r\nabc\r\n0\r\n\r\n",
	    /* http_parser takes a byte >= 0x80 for the digit 0: "1\xff" was
	     * a chunk of 16 bytes; and whether it is over --max-body must
	     * not change the answer (400) */
	    H "1\xff\r\n0123456789abcdef\r\n0\r\n\r\n",
	    H "3\xe1\xe1\xe1\xe1\r\nabc\r\n0\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		size_t len = strlen(bad[i]);
		for (size_t step = 0; step < 4; step++) {
			gk_buf t = {0};
			transcript(&limits, bad[i], len, step, &t);
			if (strncmp(t.data, "ERROR 400", 9) != 0) {
				printf("#   case %zu step %zu: %s", i, step,
				       t.data);
				CHECK(0);
			}
			gk_buf_free(&t);
		}
	}
	/* what the grammar allows still passes: BWS, quoted-string with
	 * ';' and an escaped quote, a trailer field */
	int st;
	json_t *j = parse1(
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "3 ; a = \"b;\\\"c\"\t;d\r\nabc\r\n0;e\r\nX-T: 1\r\n\r\n",
	    &st);
	CHECK(j && st == 0);
	CHECK_STR(jstr(j, "body"), "abc");
	json_decref(j);
	/* hex digits in either case, leading zeros, tokens and a quoted
	 * pair with obs-text, however the bytes are cut */
	static const char ok[] =
	    H "00A;x=\"\\\xe9\"\r\n0123456789\r\n0;a=b;c\r\n\r\n";
	for (size_t step = 0; step < 4; step++) {
		gk_buf t = {0};
		transcript(&limits, ok, sizeof ok - 1, step, &t);
		if (strncmp(t.data, "{", 1) != 0) {
			printf("#   ok step %zu: %s", step, t.data);
			CHECK(0);
		}
		gk_buf_free(&t);
	}
}

/* Chunk extensions are dropped but bounded: a chunk line by --max-header
 * (431), and their bytes in a request, with its data, by --max-body (413):
 * else a few bytes of data could carry extensions without end.  Trailer
 * fields, dropped too, by --max-header as header fields are. */
/* r fed whole and in 3-byte pieces: its transcript begins with want. */
static void
check_cuts(const gk_http_limits *lim, const gk_buf *r, const char *want,
           const char *what, size_t len)
{
	gk_buf t = {0};
	for (size_t step = 0; step < 4; step += 3) {
		gk_buf_reset(&t);
		transcript(lim, r->data, r->len, step, &t);
		if (strncmp(t.data, want, strlen(want)) != 0) {
			printf("#   %s of %zu, step %zu: %s", what, len, step,
			       t.data);
			CHECK(0);
		}
	}
	gk_buf_free(&t);
}

TEST(chunk_ext_bounded)
{
	gk_http_limits small = {.max_header = 256, .max_body = 1000};
	gk_buf r = {0};
	/* a line of 256 bytes with its CRLF passes, 257 does not */
	for (size_t len = 256; len <= 257; len++) {
		gk_buf_reset(&r);
		gk_buf_adds(&r, H "1;a=");
		while (r.len < sizeof H - 1 + len - 2)
			gk_buf_addc(&r, 'b');
		gk_buf_adds(&r, "\r\nx\r\n0\r\n\r\n");
		check_cuts(&small, &r, len == 256 ? "{" : "ERROR 431", "line",
		           len);
	}
	/* the trailer section, like the header section, by --max-header:
	 * 256 bytes with its final CRLF pass, 257 are 431 */
	for (size_t len = 256; len <= 257; len++) {
		gk_buf_reset(&r);
		gk_buf_adds(&r, H "1\r\nx\r\n0\r\nX-T: ");
		while (r.len < sizeof H - 1 + 9 + len - 4)
			gk_buf_addc(&r, 'b');
		gk_buf_adds(&r, "\r\n\r\n");
		check_cuts(&small, &r, len == 256 ? "{" : "ERROR 431",
		           "trailers", len);
	}
	/* 100-byte extensions on 1-byte chunks: past 1000 in all, 413 */
	gk_buf_reset(&r);
	gk_buf_adds(&r, H);
	for (int i = 0; i < 20; i++) {
		gk_buf_adds(&r, "1;a=");
		for (int k = 0; k < 97; k++)
			gk_buf_addc(&r, 'b');
		gk_buf_adds(&r, "\r\nx\r\n");
	}
	gk_buf_adds(&r, "0\r\n\r\n");
	check_cuts(&small, &r, "ERROR 413", "extensions", r.len);
	gk_buf_free(&r);
}
#undef H

/* A chunk that declares more than --max-body is refused at its size
 * line, as a Content-Length is, not once its bytes have come. */
TEST(chunk_over_max_body_at_once)
{
	gk_http_limits small = {.max_header = 256, .max_body = 10};
	const char *r =
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "4\r\nabcd\r\nffffffff\r\nab";
	gk_buf t = {0};
	transcript(&small, r, strlen(r), 0, &t);
	CHECK(strncmp(t.data, "ERROR 413", 9) == 0);
	gk_buf_free(&t);
}

/* RFC 9112 §3.2: a Host whose value is not uri-host [":" port] is 400;
 * an empty one is valid (RFC 9110 §7.2). */
TEST(host_value)
{
	static const char *const bad[] = {
	    "a b",         "a/b",  "u@a",    "a\\b",    "a:b",
	    "a:80:80",     "[::1", "[::1]x", "a\"b",    "a\tb",
	    "caf\xc3\xa9", "a?b",  "a#b",    "[::1]:8x"};
	static const char *const good[] = {"",
	                                   "a",
	                                   "a.example:8080",
	                                   "A-b_c~d.e",
	                                   "[::1]",
	                                   "[::1]:80",
	                                   "10.0.0.1:1",
	                                   "a%20b",
	                                   "a:",
	                                   "x!$&'()*+,;=y"};
	char req[256];
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n",
		         bad[i]);
		if (error_of(req) != 400) {
			printf("#   Host: %s passed\n", bad[i]);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n",
		         good[i]);
		if (error_of(req) != 0) {
			printf("#   Host: %s refused\n", good[i]);
			CHECK(0);
		}
	}
	/* HTTP/1.0 may omit it, but what it sends must be valid too */
	CHECK(error_of("GET / HTTP/1.0\r\nHost: a/b\r\n\r\n") == 400);
}

/* RFC 9112 §3.2.4: the asterisk-form is for OPTIONS only; §3: no
 * whitespace or other control byte inside the target. */
TEST(request_target_forms)
{
	CHECK(error_of("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n") == 0);
	CHECK(error_of("GET * HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
	CHECK(error_of("POST * HTTP/1.1\r\nHost: h\r\nContent-Length: 0"
	               "\r\n\r\n") == 400);
	CHECK(error_of("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
	CHECK(error_of("GET /a\fb HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
	CHECK(error_of("GET /a?b\tc HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
}

/* RFC 9112 §9.3: "close" wins over keep-alive, in HTTP/1.0 too. */
TEST(close_wins_in_http10)
{
	const char *r[] = {
	    "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
	    "GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive"
	    "\r\n\r\n",
	};
	for (size_t k = 0; k < 2; k++) {
		gk_http_parser *p = gk_http_parser_new(&limits);
		size_t used;
		CHECK(gk_http_parser_feed(p, r[k], strlen(r[k]), &used) ==
		      GK_HTTP_REQUEST);
		CHECK(!gk_http_parser_info(p)->keep_alive);
		gk_http_parser_free(p);
	}
}

/* RFC 9112 §3: a request line past the bound is 414, not 431. */
TEST(uri_too_long)
{
	gk_http_limits small = {.max_header = 256, .max_body = 10};
	char h[600];
	int n = snprintf(h, sizeof h, "GET /");
	memset(h + n, 'a', 400);
	strcpy(h + n + 400, " HTTP/1.1\r\nHost: h\r\n\r\n");
	for (size_t step = 0; step < 2; step++) {
		gk_buf t = {0};
		transcript(&small, h, strlen(h), step, &t);
		CHECK(strncmp(t.data, "ERROR 414", 9) == 0);
		gk_buf_free(&t);
	}
	/* a short line with long headers is still 431 */
	n = snprintf(h, sizeof h, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
	memset(h + n, 'a', 400);
	strcpy(h + n + 400, "\r\n\r\n");
	gk_buf t = {0};
	transcript(&small, h, strlen(h), 0, &t);
	CHECK(strncmp(t.data, "ERROR 431", 9) == 0);
	/* a line of exactly --max-header (its CRLF included) is not over
	 * it: what follows is, 431, however the bytes are cut */
	n = snprintf(h, sizeof h, "GET /");
	memset(h + n, 'a', 256 - 16);
	strcpy(h + 256 - 11, " HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK(strstr(h, "\n") == h + 255);
	for (size_t step = 0; step < 4; step += 3) {
		gk_buf_reset(&t);
		transcript(&small, h, strlen(h), step, &t);
		if (strncmp(t.data, "ERROR 431", 9) != 0) {
			printf("#   step %zu: %s", step, t.data);
			CHECK(0);
		}
	}
	gk_buf_free(&t);
}

TEST(headers_and_urls)
{
	int st;
	json_t *j =
	    parse1("GET http://example.com:8080/p/q?a=1#frag HTTP/1.1\r\n"
	           "Host: example.com\r\nX-A: 1\r\nX-B: b\r\n"
	           "x-a:3\r\nX-EMPTY:\r\nX-A: \"q\"\\\r\n\r\n",
	           &st);
	CHECK(j != NULL);
	CHECK_STR(jstr(j, "path"), "/p/q");
	CHECK_STR(jstr(j, "query"), "a=1");
	json_t *a = json_object_get(json_object_get(j, "headers"), "x-a");
	CHECK(json_is_array(a) && json_array_size(a) == 3);
	CHECK_STR(json_string_value(json_array_get(a, 0)), "1");
	CHECK_STR(json_string_value(json_array_get(a, 1)), "3");
	CHECK_STR(json_string_value(json_array_get(a, 2)), "\"q\"\\");
	CHECK_STR(jhdr(j, "x-empty"), "");
	CHECK_STR(jhdr(j, "x-b"), "b");
	json_decref(j);

	/* order of the keys: by first arrival */
	gk_buf t = {0};
	const char *r = "GET /?x HTTP/1.1\r\nZ: 1\r\nHost: h\r\nZ: 2\r\n\r\n";
	transcript(&limits, r, strlen(r), 0, &t);
	CHECK(
	    strstr(t.data, "\"headers\":{\"z\":[\"1\",\"2\"],\"host\":\"h\"}"));
	CHECK(strstr(t.data, "\"query\":\"x\""));
	gk_buf_free(&t);

	j = parse1(
	    "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
	    &st);
	CHECK_STR(jstr(j, "path"), "/");
	CHECK_STR(jstr(j, "query"), "");
	json_decref(j);
	/* absolute-form: the target's authority is the host */
	j = parse1("GET http://evil.example/p?x=1 HTTP/1.1\r\nHost: good\r\n"
	           "X: y\r\n\r\n",
	           &st);
	CHECK_STR(jstr(j, "path"), "/p");
	CHECK_STR(jstr(j, "query"), "x=1");
	CHECK_STR(jhdr(j, "host"), "evil.example");
	json_decref(j);
	j = parse1("GET HTTPS://[::1]:8443 HTTP/1.1\r\nHost: good\r\n\r\n",
	           &st);
	CHECK_STR(jstr(j, "path"), "/");
	CHECK_STR(jhdr(j, "host"), "[::1]:8443");
	json_decref(j);
	j = parse1("GET http://a.example/ HTTP/1.0\r\nX: y\r\n\r\n", &st);
	CHECK_STR(jhdr(j, "host"), "a.example");
	CHECK_STR(jhdr(j, "x"), "y");
	json_decref(j);
	CHECK(error_of("GET http://u:p@evil.example/ HTTP/1.1\r\nHost: h\r\n"
	               "\r\n") == 400);
	CHECK(error_of("GET http://u@evil.example/ HTTP/1.1\r\nHost: h\r\n"
	               "\r\n") == 400);
	CHECK(error_of("GET ftp://evil.example/ HTTP/1.1\r\nHost: h\r\n"
	               "\r\n") == 400);
	j = parse1("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &st);
	CHECK_STR(jstr(j, "path"), "*");
	json_decref(j);
	/* obs-text that is not UTF-8 cannot travel on the wire: 400; UTF-8
	 * does, as it is */
	CHECK(error_of("GET / HTTP/1.1\r\nHost: h\r\nX: caf\xe9\r\n\r\n") ==
	      400);
	j = parse1("GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n", &st);
	CHECK_STR(jhdr(j, "x"), "caf\xc3\xa9");
	json_decref(j);
	/* the request target is ASCII (RFC 9112 §3.2) */
	CHECK(error_of("GET /caf\xe9 HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
	CHECK(error_of("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
	CHECK(error_of("GET /?q=\xff HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
}

TEST(binary_body)
{
	int st;
	json_t *j;
	const char r[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
	                 "\r\n\xff\xfe\x00\x01";
	gk_buf t = {0};
	transcript(&limits, r, sizeof r - 1, 0, &t);
	json_error_t e;
	j = json_loadb(t.data, t.len, JSON_DISABLE_EOF_CHECK, &e);
	CHECK(j != NULL);
	CHECK_STR(jstr(j, "body_b64"), "//4AAQ==");
	CHECK(json_object_get(j, "body") == NULL);
	json_decref(j);
	gk_buf_free(&t);
	/* valid UTF-8 stays text, escaped */
	j = parse1("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n"
	           "\r\n\"\xc3\xa9\n\t\\x",
	           &st);
	CHECK_STR(jstr(j, "body"), "\"\xc3\xa9\n\t\\x");
	json_decref(j);
}

TEST(idle_footprint)
{
	gk_http_parser *p = gk_http_parser_new(&limits);
	size_t idle = gk_http_parser_footprint(p);
	size_t used;
	CHECK(gk_http_parser_feed(p, get8, strlen(get8), &used) ==
	      GK_HTTP_REQUEST);
	size_t busy = gk_http_parser_footprint(p);
	gk_buf out = {0};
	gk_http_parser_encode(p, "1", NULL, 0, &out);
	size_t after = gk_http_parser_footprint(p);
	printf("# idle footprint %zu bytes, %zu while holding a request, "
	       "%zu after encode\n",
	       idle, busy, after);
	CHECK(idle < 512);
	CHECK(after == idle);
	CHECK(busy > idle);
	gk_buf_free(&out);
	gk_http_parser_free(p);
}

static double
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

TEST(timing)
{
	/* Printed, never asserted: machines and sanitizers differ.  The best
	 * of several rounds, as other work on the machine only adds. */
	gk_http_parser *p = gk_http_parser_new(&limits);
	gk_buf out = {0};
	size_t used, len = strlen(get8);
	enum { ROUNDS = 7, N = 30000 };
	double best_total = 1e18, best_enc = 1e18, clk = 1e18;
	for (int round = 0; round < ROUNDS; round++) {
		double c0 = now_ns(), c = c0;
		for (int i = 0; i < 1000; i++)
			c = now_ns();
		if ((c - c0) / 1000 < clk)
			clk = (c - c0) / 1000;
		double enc = 0, t0 = now_ns();
		for (int i = 0; i < N; i++) {
			gk_http_parser_feed(p, get8, len, &used);
			out.len = 0;
			double a = now_ns();
			gk_http_parser_encode(p, "c12-34567",
			                      "192.168.1.20:51234",
			                      1700000000000ull, &out);
			enc += now_ns() - a;
		}
		double total = (now_ns() - t0) / N;
		if (total < best_total)
			best_total = total;
		if (enc / N < best_enc)
			best_enc = enc / N;
	}
	printf(
	    "# 8-header GET (%zu bytes): feed+encode %.0f ns, encode %.0f ns "
	    "(best of %d rounds; clock overhead %.0f ns subtracted), "
	    "line %zu bytes\n",
	    len, best_total - clk, best_enc - clk, ROUNDS, clk, out.len);
	CHECK(out.len > 0);
	gk_buf_free(&out);
	gk_http_parser_free(p);
}

static gk_msg *
msg(const char *line)
{
	gk_wire_error e;
	gk_msg *m = gk_msg_new(line, strlen(line), &e);
	if (!m)
		printf("#   bad test line at %zu: %s\n", e.offset, e.reason);
	return m;
}

/* Render line for req; returns the status of render and fills out. */
static int
render(const char *line, const gk_http_info *req, bool ka, gk_buf *out,
       size_t *bb, const char **why)
{
	gk_msg *m = msg(line);
	if (!m)
		return -2;
	out->len = 0;
	int r = gk_http_render(m, req, ka, out, bb, why);
	gk_buf_cstr(out);
	gk_msg_free(m);
	return r;
}

TEST(render_basic)
{
	gk_http_info get = {.http_minor = 1, .keep_alive = true};
	strcpy(get.method, "GET");
	gk_buf out = {0};
	size_t bb;
	const char *why = NULL;
	const char *line =
	    "{\"id\":\"1\",\"status\":200,\"headers\":{"
	    "\"content-type\":\"text/plain\",\"x-multi\":[\"a\","
	    "\"b\"],\"content-length\":\"99\",\"Connection\":\"x\"},"
	    "\"body\":\"hi\\n\"}";
	CHECK(render(line, &get, true, &out, &bb, &why) == 0);
	CHECK(strncmp(out.data, "HTTP/1.1 200 OK\r\n", 17) == 0);
	CHECK(strstr(out.data, "\r\ncontent-type: text/plain\r\n"));
	CHECK(strstr(out.data, "\r\nx-multi: a\r\nx-multi: b\r\n"));
	CHECK(strstr(out.data, "\r\nContent-Length: 3\r\n"));
	CHECK(strstr(out.data, "\r\nDate: ") != NULL);
	CHECK(!strstr(out.data, "99"));
	CHECK(!strstr(out.data, "onnection"));
	CHECK(bb == 3);
	size_t n = strlen(out.data);
	CHECK(n > 7 && strcmp(out.data + n - 7, "\r\n\r\nhi\n") == 0);

	/* HEAD: the length stays, the body goes */
	gk_http_info head = get;
	head.head = true;
	CHECK(render(line, &head, true, &out, &bb, &why) == 0);
	CHECK(strstr(out.data, "\r\nContent-Length: 3\r\n"));
	n = strlen(out.data);
	CHECK(strcmp(out.data + n - 4, "\r\n\r\n") == 0 && bb == 0);

	/* HEAD answered without a body or a length: no length at all (0
	 * would say the GET's body is empty); with one, that one */
	CHECK(render("{\"id\":\"1\",\"status\":200}", &head, true, &out, &bb,
	             &why) == 0);
	CHECK(!strstr(out.data, "Content-Length"));
	CHECK(render("{\"id\":\"1\",\"status\":200,\"headers\":"
	             "{\"content-length\":\"42\"}}",
	             &head, true, &out, &bb, &why) == 0);
	CHECK(strstr(out.data, "\r\nContent-Length: 42\r\n"));

	/* 204: neither */
	CHECK(render("{\"id\":\"1\",\"status\":204,\"body\":\"x\"}", &get, true,
	             &out, &bb, &why) == 0);
	CHECK(strncmp(out.data, "HTTP/1.1 204 No Content\r\n", 25) == 0);
	CHECK(!strstr(out.data, "Content-Length"));
	n = strlen(out.data);
	CHECK(strcmp(out.data + n - 4, "\r\n\r\n") == 0);

	/* 205: no body, and says so */
	CHECK(render("{\"id\":\"1\",\"status\":205,\"body\":\"x\"}", &get, true,
	             &out, &bb, &why) == 0);
	CHECK(strncmp(out.data, "HTTP/1.1 205 Reset Content\r\n", 28) == 0);
	CHECK(strstr(out.data, "\r\nContent-Length: 0\r\n"));
	n = strlen(out.data);
	CHECK(strcmp(out.data + n - 4, "\r\n\r\n") == 0 && bb == 0);

	/* HTTP/1.0 keep-alive, and close; the version we speak is 1.1 */
	gk_http_info old = get;
	old.http_minor = 0;
	CHECK(render("{\"id\":\"1\",\"status\":404}", &old, true, &out, &bb,
	             &why) == 0);
	CHECK(strncmp(out.data, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
	CHECK(strstr(out.data, "\r\nConnection: keep-alive\r\n"));
	CHECK(strstr(out.data, "\r\nContent-Length: 0\r\n"));
	CHECK(render("{\"id\":\"1\",\"status\":299}", &get, false, &out, &bb,
	             &why) == 0);
	CHECK(strncmp(out.data, "HTTP/1.1 299 Unknown\r\n", 22) == 0);
	CHECK(strstr(out.data, "\r\nConnection: close\r\n"));

	/* body_b64 decoded, escapes in values undone */
	CHECK(render(
	          "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":\"caf\\u00e9"
	          "\"},\"body_b64\":\"AP8=\"}",
	          &get, true, &out, &bb, &why) == 0);
	CHECK(strstr(out.data, "\r\nx: caf\xc3\xa9\r\n"));
	CHECK(bb == 2 && memcmp(out.data + out.len - 2, "\x00\xff", 2) == 0);
	gk_buf_free(&out);
}

/* RFC 9110 §7.8: an Upgrade header (a 426 must have one, any other
 * answer may advertise) is sent with "upgrade" in Connection, so that an
 * intermediary does not pass it on. */
TEST(render_upgrade)
{
	gk_http_info get = {.http_minor = 1, .keep_alive = true};
	strcpy(get.method, "GET");
	gk_buf out = {0};
	size_t bb;
	const char *why = NULL;
	const char *line = "{\"id\":\"1\",\"status\":426,\"headers\":{"
	                   "\"upgrade\":\"TLS/1.3\"}}";
	CHECK(render(line, &get, true, &out, &bb, &why) == 0);
	CHECK(strstr(out.data, "\r\nupgrade: TLS/1.3\r\n"));
	CHECK(strstr(out.data, "\r\nConnection: upgrade\r\n"));
	CHECK(render(line, &get, false, &out, &bb, &why) == 0);
	CHECK(strstr(out.data, "\r\nConnection: upgrade, close\r\n"));
	gk_http_info old = get;
	old.http_minor = 0;
	CHECK(render(line, &old, true, &out, &bb, &why) == 0);
	CHECK(strstr(out.data, "\r\nConnection: upgrade, keep-alive\r\n"));
	/* the name in any case; without one, no Connection in 1.1 */
	CHECK(render("{\"id\":\"1\",\"status\":200,\"headers\":{"
	             "\"Upgrade\":[\"h2c\",\"websocket\"]}}",
	             &get, true, &out, &bb, &why) == 0);
	CHECK(strstr(out.data, "\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n"));
	CHECK(strstr(out.data, "\r\nConnection: upgrade\r\n"));
	CHECK(render("{\"id\":\"1\",\"status\":200}", &get, true, &out, &bb,
	             &why) == 0);
	CHECK(!strstr(out.data, "onnection"));
	gk_buf_free(&out);
}

TEST(render_refuses)
{
	gk_http_info get = {.http_minor = 1, .keep_alive = true};
	gk_buf out = {0};
	size_t bb;
	const char *why;
	const char *bad[] = {
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":\"a\\r\\nb\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":\"a\\nb\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":\"a\\u0000\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":\"a\\u0001\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":\"a\\u001b[2J\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":\"a\\u007f\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":\"a\x7f\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":[\"ok\","
	    "\"\\u0008\"]}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\\r\\ny\":\"a\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"a b\":\"a\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"\":\"a\"}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":[\"a\",1]}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":{\"x\":7}}",
	    "{\"id\":\"1\",\"status\":200,\"headers\":[]}",
	    "{\"id\":\"1\",\"status\":600}",
	    "{\"id\":\"1\",\"status\":99}",
	    "{\"id\":\"1\",\"status\":100}",
	    "{\"id\":\"1\",\"status\":103}",
	    "{\"id\":\"1\",\"status\":199}",
	    "{\"id\":\"1\"}",
	    "{\"id\":\"1\",\"status\":200,\"body\":3}",
	    "{\"id\":\"1\",\"status\":200,\"body_b64\":\"!!!!\"}",
	    "{\"id\":\"1\",\"status\":200,\"body\":\"a\",\"body_b64\":\"YQ=="
	    "\"}",
	};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		gk_buf_reset(&out);
		gk_buf_adds(&out, "keep");
		gk_msg *m = msg(bad[k]);
		CHECK(m != NULL);
		if (!m)
			continue;
		why = NULL;
		int r = gk_http_render(m, &get, true, &out, &bb, &why);
		if (r != -1)
			printf("#   rendered: %s\n", bad[k]);
		CHECK(r == -1 && why != NULL);
		CHECK(out.len == 4); /* nothing half-written */
		gk_msg_free(m);
	}
	gk_buf_free(&out);
}

TEST(render_simple_and_date)
{
	gk_buf out = {0};
	gk_http_render_simple(413, NULL, false, false, "Retry-After: 1\r\n",
	                      &out);
	gk_buf_cstr(&out);
	CHECK(strncmp(out.data, "HTTP/1.1 413 Content Too Large\r\n", 32) == 0);
	CHECK(strstr(out.data, "\r\nContent-Length: 18\r\n"));
	CHECK(strstr(out.data, "\r\nConnection: close\r\n"));
	CHECK(
	    strstr(out.data, "\r\nRetry-After: 1\r\n\r\nContent Too Large\n"));
	gk_buf_reset(&out);
	gk_http_render_simple(200, "ok\n", true, true, NULL, &out);
	gk_buf_cstr(&out);
	CHECK(strstr(out.data, "\r\nContent-Length: 3\r\n"));
	CHECK(!strstr(out.data, "Connection"));
	CHECK(strcmp(out.data + out.len - 4, "\r\n\r\n") == 0);
	gk_buf_free(&out);

	const char *d = gk_http_date();
	CHECK(strlen(d) == 29);
	CHECK(strcmp(d + 25, " GMT") == 0 && d[3] == ',');
	CHECK(gk_http_date() == d);
	CHECK_STR(gk_http_reason(503), "Service Unavailable");
	CHECK_STR(gk_http_reason(799), "Unknown");
}

/* The message encoded with its index: the index is the one a parse of the
 * same line makes, for requests with every kind of member. */
TEST(encode_msg_index)
{
	static const char *reqs[] = {
	    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	    "GET /a%20b/c?x=1&y=%22 HTTP/1.1\r\nHost: a\r\nAccept: x\r\n"
	    "accept: y\r\nX-Q: \"q\\\\\"\r\n\r\n",
	    "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe\"lo",
	    "PUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: "
	    "3\r\n\r\n\xff\x00\x01",
	    "DELETE /%C3%A9t HTTP/1.0\r\nX: \xc3\xa9t\xc3\xa9\r\n\r\n",
	};
	gk_http_limits lim = {.max_header = 8192, .max_body = 1 << 20};
	for (size_t i = 0; i < sizeof reqs / sizeof *reqs; i++)
		for (int variant = 0; variant < 2; variant++) {
			gk_http_parser *p = gk_http_parser_new(&lim);
			size_t used;
			const char *rq = reqs[i];
			size_t len = i == 3 ? strlen(rq) + 2 : strlen(rq);
			CHECK(gk_http_parser_feed(p, rq, len, &used) ==
			      GK_HTTP_REQUEST);
			gk_msg *m = gk_http_parser_encode_msg(
			    p, "q\"1", variant ? NULL : "10.0.0.7:5555",
			    variant ? 0 : 1700000000123ull);
			CHECK(m != NULL);
			gk_wire_msg w;
			gk_wire_error e;
			CHECK(gk_wire_parse(&w, m->line.data, m->line.len,
			                    &e) == 0);
			CHECK(w.nfields == m->wire.nfields && !m->wire.escaped);
			CHECK(m->wire.line == m->line.data &&
			      m->wire.len == m->line.len);
			for (unsigned f = 0; f < w.nfields; f++) {
				CHECK(w.field[f].key.p ==
				          m->wire.field[f].key.p &&
				      w.field[f].key.len ==
				          m->wire.field[f].key.len);
				CHECK(w.field[f].value.p ==
				          m->wire.field[f].value.p &&
				      w.field[f].value.len ==
				          m->wire.field[f].value.len &&
				      w.field[f].value.type ==
				          m->wire.field[f].value.type);
			}
			CHECK(gk_msg_get(m, "deadline").type ==
			      (variant ? GK_JSON_NONE : GK_JSON_NUMBER));
			gk_msg_free(m);
			gk_http_parser_free(p);
		}
}

int
main(void)
{
	RUN(simple_get);
	RUN(keep_alive_rules);
	RUN(split_every_byte);
	RUN(pipelined_one_at_a_time);
	RUN(chunked_body);
	RUN(expect_continue);
	RUN(errors);
	RUN(headers_and_urls);
	RUN(chunk_ext_and_trailers);
	RUN(chunk_ext_bounded);
	RUN(chunk_over_max_body_at_once);
	RUN(host_value);
	RUN(request_target_forms);
	RUN(close_wins_in_http10);
	RUN(uri_too_long);
	RUN(binary_body);
	RUN(idle_footprint);
	RUN(timing);
	RUN(render_basic);
	RUN(render_upgrade);
	RUN(render_refuses);
	RUN(render_simple_and_date);
	RUN(encode_msg_index);
	return UNIT_END();
}
