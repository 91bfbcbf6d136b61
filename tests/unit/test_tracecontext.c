/* test_tracecontext.c: W3C traceparent and B3 parsing, formatting, ids. */
#include "tracecontext.h"
#include "unit.h"

static const char *TID = "4bf92f3577b34da6a3ce929d0e0e4736";
static const char *SID = "00f067aa0ba902b7";

static int
tp(const char *s, gk_trace_ctx *c)
{
	return gk_traceparent_parse(s, strlen(s), c);
}

static int
b3(const char *s, gk_trace_ctx *c, int *only)
{
	return gk_b3_parse(s, strlen(s), c, only);
}

static const char *
hex(const uint8_t *p, size_t n)
{
	static char out[2][33];
	static int k;
	k ^= 1;
	gk_hex(p, n, out[k]);
	return out[k];
}

TEST(traceparent_parse_then_format_round_trips)
{
	const char *in[] = {
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
	    "00-00000000000000000000000000000001-0000000000000001-01",
	    "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-00",
	};
	for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
		gk_trace_ctx c;
		CHECK(tp(in[i], &c) == 0);
		CHECK(c.sampled_known);
		char out[56];
		gk_traceparent_format(c.trace_id, c.span_id, c.sampled, out);
		CHECK_STR(out, in[i]);
	}
}

TEST(traceparent_fields)
{
	gk_trace_ctx c;
	CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c) ==
	    0);
	CHECK_STR(hex(c.trace_id, 16), TID);
	CHECK_STR(hex(c.span_id, 8), SID);
	CHECK(c.sampled);
	CHECK(!c.debug);
	CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c) ==
	    0);
	CHECK(!c.sampled);
	/* Only bit 0 of the flags is the sampled flag; others are ignored. */
	CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", &c) ==
	    0);
	CHECK(c.sampled);
	CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe", &c) ==
	    0);
	CHECK(!c.sampled);
	/* Bit 1 is Level 2's random-trace-id flag. */
	CHECK(c.random);
	CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", &c) ==
	    0);
	CHECK(c.sampled && c.random);
	CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c) ==
	    0);
	CHECK(c.sampled && !c.random);
}

TEST(traceparent_format_writes_known_flags_only)
{
	uint8_t tid[16] = {0x4b, 0xf9, [15] = 0x36}, sid[8] = {[7] = 1};
	char out[56];
	gk_traceparent_format_flags(tid, sid, 0x03, out);
	CHECK_STR(out, "00-4bf90000000000000000000000000036-0000000000000001-03");
	gk_traceparent_format_flags(tid, sid, 0xfe, out);
	CHECK_STR(out, "00-4bf90000000000000000000000000036-0000000000000001-02");
	gk_traceparent_format(tid, sid, true, out);
	CHECK_STR(out, "00-4bf90000000000000000000000000036-0000000000000001-01");
}

TEST(traceparent_future_versions_are_read_as_00)
{
	gk_trace_ctx c;
	CHECK(tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c) ==
	    0);
	CHECK_STR(hex(c.trace_id, 16), TID);
	CHECK(c.sampled);
	CHECK(tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-"
		 "the-future-will-be-like",
		  &c) == 0);
	CHECK_STR(hex(c.span_id, 8), SID);
	/* After the 00 fields, a future version needs a dash. */
	CHECK(tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what",
		  &c) < 0);
	CHECK(tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", &c) <
	    0);
}

/* The invalid cases of the W3C trace-context test suite (test/test.py). */
TEST(traceparent_w3c_invalid_cases)
{
	const char *bad[] = {
	    "",
	    "00",
	    /* version ff is forbidden */
	    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    /* version: wrong length, not hex, uppercase */
	    "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    ".0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    "0.-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    "xx-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    "CC-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    /* trace id: all zero, uppercase, not hex, wrong length */
	    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
	    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e473.-00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
	    /* span id: all zero, uppercase, not hex, wrong length */
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b.-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",
	    /* flags: wrong length, not hex, uppercase */
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-.1",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
	    /* version 00 is exactly 55 characters */
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
	    /* delimiters */
	    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
	    " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		gk_trace_ctx c;
		if (tp(bad[i], &c) == 0) {
			printf("#   accepted: \"%s\"\n", bad[i]);
			unit_case_failed = 1;
		}
	}
}

TEST(b3_single_full)
{
	gk_trace_ctx c;
	int only;
	CHECK(b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-"
		 "05e3ac9a4f6e3b90",
		  &c, &only) == 0);
	CHECK(only == -1);
	CHECK_STR(hex(c.trace_id, 16), "80f198ee56343ba864fe8b2a57d3eff7");
	CHECK_STR(hex(c.span_id, 8), "e457b5a2e4d86bd1");
	CHECK(c.sampled && c.sampled_known && !c.debug);

	CHECK(b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0", &c,
		  &only) == 0);
	CHECK(!c.sampled && c.sampled_known);

	/* Sampling left open: the receiver decides. */
	CHECK(b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1", &c, &only) ==
	    0);
	CHECK(!c.sampled_known);

	CHECK(b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d", &c,
		  &only) == 0);
	CHECK(c.debug && c.sampled && c.sampled_known);
}

TEST(b3_single_64_bit_trace_id_is_left_padded)
{
	gk_trace_ctx c;
	int only;
	CHECK(b3("a3ce929d0e0e4736-00f067aa0ba902b7-1", &c, &only) == 0);
	CHECK_STR(hex(c.trace_id, 16), "0000000000000000a3ce929d0e0e4736");
	CHECK_STR(hex(c.span_id, 8), SID);
}

TEST(b3_single_sampling_state_alone)
{
	gk_trace_ctx c;
	int only;
	CHECK(b3("0", &c, &only) < 0);
	CHECK(only == 0);
	CHECK(b3("1", &c, &only) < 0);
	CHECK(only == 1);
	CHECK(b3("d", &c, &only) < 0);
	CHECK(only == 1);
	CHECK(b3("x", &c, &only) < 0);
	CHECK(only == -1);
}

TEST(b3_single_invalid)
{
	const char *bad[] = {
	    "",
	    "garbage",
	    "not-a-b3-header-at-all",
	    "80f198ee56343ba864fe8b2a57d3eff7",
	    "80f198ee56343ba864fe8b2a57d3eff7-",
	    /* ids: all zero, uppercase, wrong length */
	    "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
	    "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
	    "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1",
	    "80f198ee56343ba864fe8b2a57d3eff7-E457B5A2E4D86BD1-1",
	    "80f198ee56343ba864fe8b2a57d3ef-e457b5a2e4d86bd1-1",
	    "80f198ee56343ba8-e457b5a2e4d86bd-1",
	    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd11-1",
	    /* sampling state */
	    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
	    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-",
	    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-11",
	    /* parent span id */
	    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-",
	    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a",
	    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3bzz",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		gk_trace_ctx c;
		int only;
		if (b3(bad[i], &c, &only) == 0) {
			printf("#   accepted: \"%s\"\n", bad[i]);
			unit_case_failed = 1;
		}
	}
}

TEST(b3_multi)
{
	gk_trace_ctx c;
	CHECK(gk_b3_multi_parse("80f198ee56343ba864fe8b2a57d3eff7",
		  "e457b5a2e4d86bd1", "1", NULL, &c) == 0);
	CHECK_STR(hex(c.trace_id, 16), "80f198ee56343ba864fe8b2a57d3eff7");
	CHECK_STR(hex(c.span_id, 8), "e457b5a2e4d86bd1");
	CHECK(c.sampled && c.sampled_known);

	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", "a2fb4a1d1a96d312", "0",
		  NULL, &c) == 0);
	CHECK_STR(hex(c.trace_id, 16), "0000000000000000463ac35c9f6413ad");
	CHECK(!c.sampled && c.sampled_known);

	/* Old tracers write true and false. */
	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", "a2fb4a1d1a96d312", "true",
		  NULL, &c) == 0);
	CHECK(c.sampled);
	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", "a2fb4a1d1a96d312", "false",
		  NULL, &c) == 0);
	CHECK(!c.sampled && c.sampled_known);

	/* No sampled header: left to the receiver. */
	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", "a2fb4a1d1a96d312", NULL,
		  NULL, &c) == 0);
	CHECK(!c.sampled_known);

	/* Flags: 1 is debug, which implies sampled. */
	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", "a2fb4a1d1a96d312", "0",
		  "1", &c) == 0);
	CHECK(c.debug && c.sampled && c.sampled_known);

	/* A decision without ids: -1, with the decision given back. */
	int only;
	CHECK(gk_b3_multi_parsen(NULL, 0, NULL, 0, NULL, 0, "0", 1, NULL, 0, &c,
		  &only) < 0);
	CHECK(only == 0);
	CHECK(gk_b3_multi_parsen(NULL, 0, NULL, 0, NULL, 0, "true", 4, NULL, 0, &c,
		  &only) < 0);
	CHECK(only == 1 && !c.debug);
	CHECK(gk_b3_multi_parsen(NULL, 0, NULL, 0, NULL, 0, NULL, 0, "1", 1, &c,
		  &only) < 0);
	CHECK(only == 1 && c.debug);
	CHECK(gk_b3_multi_parsen(NULL, 0, NULL, 0, NULL, 0, "maybe", 5, NULL, 0, &c,
		  &only) < 0);
	CHECK(only == -1);
	/* One id without the other is no decision, whatever follows. */
	CHECK(gk_b3_multi_parsen(NULL, 0, "a2fb4a1d1a96d312", 16, NULL, 0, "1",
		  1, NULL, 0, &c, &only) < 0);
	CHECK(only == -1);
}

TEST(b3_multi_invalid)
{
	gk_trace_ctx c;
	CHECK(gk_b3_multi_parse(NULL, "a2fb4a1d1a96d312", "1", NULL, &c) < 0);
	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", NULL, "1", NULL, &c) < 0);
	CHECK(gk_b3_multi_parse("463ac35c9f6413a", "a2fb4a1d1a96d312", NULL,
		  NULL, &c) < 0);
	CHECK(gk_b3_multi_parse("463AC35C9F6413AD", "a2fb4a1d1a96d312", NULL,
		  NULL, &c) < 0);
	CHECK(gk_b3_multi_parse("0000000000000000", "a2fb4a1d1a96d312", NULL,
		  NULL, &c) < 0);
	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", "0000000000000000", NULL,
		  NULL, &c) < 0);
	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", "a2fb4a1d1a96d31", NULL,
		  NULL, &c) < 0);
	CHECK(gk_b3_multi_parse("463ac35c9f6413ad", "a2fb4a1d1a96d312", "maybe",
		  NULL, &c) < 0);
}

/* The list as it goes on, or NULL when invalid. */
static const char *
ts(const char *in)
{
	static char out[4096];
	size_t n;
	if (gk_tracestate_clean(in, strlen(in), out, &n) < 0)
		return NULL;
	out[n] = 0;
	return out;
}

static char *
rep(char *at, int c, int n)
{
	memset(at, c, (size_t)n);
	return at + n;
}

TEST(tracestate_valid_lists_go_on_without_ows_or_empty_members)
{
	CHECK_STR(ts("congo=t61rcWkgMzE"), "congo=t61rcWkgMzE");
	CHECK_STR(ts("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
	    "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
	/* W3C test_tracestate_ows_handling */
	CHECK_STR(ts("foo=1 \t , \t bar=2, \t baz=3"), "foo=1,bar=2,baz=3");
	CHECK_STR(ts("foo=1\t \t,\t \tbar=2,\t \tbaz=3"), "foo=1,bar=2,baz=3");
	CHECK_STR(ts(" foo=1"), "foo=1");
	CHECK_STR(ts("\tfoo=1"), "foo=1");
	CHECK_STR(ts("foo=1 "), "foo=1");
	CHECK_STR(ts("foo=1\t"), "foo=1");
	CHECK_STR(ts("\t foo=1 \t"), "foo=1");
	/* Empty members are allowed, and not passed on. */
	CHECK_STR(ts(""), "");
	CHECK_STR(ts(",, ,\t"), "");
	CHECK_STR(ts(",foo=1,,bar=2,"), "foo=1,bar=2");
	/* A value keeps its leading spaces and inner ones. */
	CHECK_STR(ts("foo= 1"), "foo= 1");
	CHECK_STR(ts("foo=a b"), "foo=a b");
	/* Keys: digits, multi-tenant. */
	CHECK_STR(ts("a0_-*/=1"), "a0_-*/=1");
	CHECK_STR(ts("0tenant@vendor=1,t@v=2"), "0tenant@vendor=1,t@v=2");
	/* W3C test_tracestate_all_allowed_characters */
	const char *all = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/="
			  " !\"#$%&'()*+-./0123456789:;<>?@ABCDEFGHIJKLMNOPQRSTU"
			  "VWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
	CHECK_STR(ts(all), all);
}

TEST(tracestate_limits)
{
	char b[2048], *p;
	/* 256-character key: valid; 257: invalid. */
	p = rep(b, 'z', 256);
	strcpy(p, "=1");
	CHECK(ts(b) != NULL);
	p = rep(b, 'z', 257);
	strcpy(p, "=1");
	CHECK(ts(b) == NULL);
	/* tenant 241 @ system 14: valid; 242 or 15: invalid. */
	p = rep(b, 't', 241);
	*p++ = '@';
	p = rep(p, 'v', 14);
	strcpy(p, "=1");
	CHECK(ts(b) != NULL);
	p = rep(b, 't', 242);
	strcpy(p, "@v=1");
	CHECK(ts(b) == NULL);
	p = rep(b + 2, 'v', 15);
	memcpy(b, "t@", 2);
	strcpy(p, "=1");
	CHECK(ts(b) == NULL);
	p = rep(b + 2, 'v', 14);
	strcpy(p, "=1");
	CHECK(ts(b) != NULL);
	/* A value of 256 characters: valid; 257: invalid. */
	memcpy(b, "foo=", 4);
	p = rep(b + 4, 'v', 256);
	*p = 0;
	CHECK(ts(b) != NULL);
	p = rep(b + 4, 'v', 257);
	*p = 0;
	CHECK(ts(b) == NULL);
	/* 32 members: valid; 33: invalid; empty ones do not count. */
	p = b;
	for (int i = 1; i <= 32; i++)
		p += sprintf(p, "%sk%d=1,", i == 1 ? "," : "", i);
	CHECK(ts(b) != NULL);
	strcpy(p, "k33=1");
	CHECK(ts(b) == NULL);
}

/* The invalid lists of the W3C test suite (test_tracestate_*) and more. */
TEST(tracestate_invalid_lists)
{
	const char *bad[] = {
	    /* duplicated keys */
	    "foo=1,foo=1",
	    "foo=1,foo=2",
	    "foo=1, bar=2 ,foo=3",
	    "t@v=1,t@v=2",
	    /* key: illegal characters */
	    "foo =1",
	    "FOO=1",
	    "foo.bar=1",
	    "1foo=1", /* a simple key begins with a letter */
	    "_foo=1",
	    "=1",
	    "foo",
	    "foo,bar=1",
	    /* key: vendor format */
	    "foo@=1,bar=2",
	    "@foo=1,bar=2",
	    "foo@@bar=1,bar=2",
	    "foo@bar@baz=1,bar=2",
	    "foo@1bar=1",
	    "Foo@bar=1",
	    /* value */
	    "foo=bar=baz",
	    "foo=,bar=3",
	    "foo= ",
	    "foo=a\tb",
	    "foo=a\x7f",
	    "foo=\xc3\xa9",
	    "foo=a\nb",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		if (ts(bad[i]) != NULL) {
			printf("#   accepted: \"%s\"\n", bad[i]);
			unit_case_failed = 1;
		}
	}
	/* A NUL inside is not the end of the list. */
	char out[16];
	size_t n;
	CHECK(gk_tracestate_clean("a=1\0b=2", 7, out, &n) < 0);
}

TEST(b3_multi_parent_span_id)
{
	gk_trace_ctx c;
	int only;
	const char *t = "463ac35c9f6413ad", *sp = "a2fb4a1d1a96d312";
	CHECK(gk_b3_multi_parsen(t, 16, sp, 16, "0020000000000001", 16, "1", 1,
		  NULL, 0, &c, &only) == 0);
	CHECK(c.sampled);
	const char *bad[] = {"", "zz", "0020000000000001a", "002000000000000",
	    "0020000000000001A"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		CHECK(gk_b3_multi_parsen(t, 16, sp, 16, bad[i], strlen(bad[i]),
			  "1", 1, NULL, 0, &c, &only) < 0);
}

TEST(hex_and_zero)
{
	uint8_t z[8] = {0}, one[8] = {0, 0, 0, 0, 0, 0, 0, 1};
	CHECK(gk_id_zero(z, 8));
	CHECK(!gk_id_zero(one, 8));
	CHECK_STR(hex(one, 8), "0000000000000001");
	uint8_t ab[2] = {0xab, 0x0f};
	CHECK_STR(hex(ab, 2), "ab0f");
	/* Every byte value, at every length to 20 and every offset in an
	 * eight-byte step (the SSE2 path takes eight bytes at a time),
	 * against printf. */
	uint8_t all[256 + 20];
	for (size_t i = 0; i < sizeof all; i++)
		all[i] = (uint8_t)(i * 7 + 3);
	for (size_t i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	for (size_t off = 0; off < 256; off++)
		for (size_t n = 0; n <= 20; n++) {
			char got[41], want[41] = "";
			gk_hex(all + off, n, got);
			for (size_t j = 0; j < n; j++)
				snprintf(want + 2 * j, 3, "%02x", all[off + j]);
			CHECK_STR(got, want);
		}
}

static int
cmp16(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

TEST(random_ids_are_non_zero_and_distinct)
{
	enum { N = 20000 };
	static uint8_t ids[N][16];
	for (int i = 0; i < N; i++) {
		gk_random_id(ids[i], 16);
		CHECK(!gk_id_zero(ids[i], 16));
	}
	qsort(ids, N, 16, cmp16);
	int dup = 0;
	for (int i = 1; i < N; i++)
		dup += !memcmp(ids[i - 1], ids[i], 16);
	CHECK(dup == 0);

	uint8_t a[8], b[8];
	gk_random_id(a, 8);
	gk_random_id(b, 8);
	CHECK(!gk_id_zero(a, 8) && !gk_id_zero(b, 8));
	CHECK(memcmp(a, b, 8) != 0);

	/* Formatted, a random context is a valid traceparent. */
	char out[56];
	gk_traceparent_format(ids[0], a, true, out);
	gk_trace_ctx c;
	CHECK(tp(out, &c) == 0);
}

TEST(random_unit_is_in_range_and_spread)
{
	enum { N = 100000 };
	int below = 0;
	for (int i = 0; i < N; i++) {
		double u = gk_random_unit();
		CHECK(u >= 0 && u < 1);
		below += u < 0.1;
	}
	/* 10% +- 1% (about 10 standard deviations). */
	CHECK(below > N / 100 * 9 && below < N / 100 * 11);
}

int
main(void)
{
	RUN(traceparent_parse_then_format_round_trips);
	RUN(traceparent_fields);
	RUN(traceparent_format_writes_known_flags_only);
	RUN(traceparent_future_versions_are_read_as_00);
	RUN(traceparent_w3c_invalid_cases);
	RUN(b3_single_full);
	RUN(b3_single_64_bit_trace_id_is_left_padded);
	RUN(b3_single_sampling_state_alone);
	RUN(b3_single_invalid);
	RUN(b3_multi);
	RUN(b3_multi_invalid);
	RUN(b3_multi_parent_span_id);
	RUN(tracestate_valid_lists_go_on_without_ows_or_empty_members);
	RUN(tracestate_limits);
	RUN(tracestate_invalid_lists);
	RUN(hex_and_zero);
	RUN(random_ids_are_non_zero_and_distinct);
	RUN(random_unit_is_in_range_and_spread);
	return UNIT_END();
}
