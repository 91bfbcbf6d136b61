/* test_wire.c: the wire codec, with jansson as the oracle. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "gokit.h"
#include "runtime.h"
#include "unit.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static int
parse_s(gk_wire_msg *m, const char *s, gk_wire_error *e)
{
	return gk_wire_parse(m, s, strlen(s), e);
}

static int
valid_s(const char *s)
{
	gk_wire_error e;
	return gk_json_validate(s, strlen(s), &e);
}

/* The unescaped string value of member key, as a C string (static). */
static const char *
get_str(const gk_wire_msg *m, const char *key)
{
	static gk_buf b;
	gk_buf_reset(&b);
	if (gk_json_string(gk_wire_get(m, key), &b) < 0)
		return NULL;
	return gk_buf_cstr(&b);
}

static gk_json
span_n(const char *s, size_t n)
{
	gk_json v = {GK_JSON_NONE, s, n};
	switch (*s) {
	case '{': v.type = GK_JSON_OBJECT; break;
	case '[': v.type = GK_JSON_ARRAY; break;
	case '"': v.type = GK_JSON_STRING; break;
	case 't': v.type = GK_JSON_TRUE; break;
	case 'f': v.type = GK_JSON_FALSE; break;
	case 'n': v.type = GK_JSON_NULL; break;
	default: v.type = GK_JSON_NUMBER;
	}
	return v;
}

static gk_json
span(const char *s)
{
	return span_n(s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* Known inputs                                                        */
/* ------------------------------------------------------------------ */

TEST(parse_request)
{
	const char *line =
	    "{\"id\":\"c1-7\", \"method\":\"GET\",\"path\":\"/a\\/b\","
	    "\"headers\":{\"host\":\"x\",\"accept\":[\"a\",\"b\"]},"
	    "\"deadline\":1733300000000,\"cancel\":false,\"x\":null} \t\r";
	gk_wire_msg m;
	gk_wire_error e = {0, NULL};
	CHECK(parse_s(&m, line, &e) == 0);
	CHECK(m.nfields == 7);
	CHECK_STR(get_str(&m, "id"), "c1-7");
	CHECK_STR(get_str(&m, "path"), "/a/b");
	CHECK(gk_wire_get(&m, "headers").type == GK_JSON_OBJECT);
	CHECK(gk_wire_get(&m, "cancel").type == GK_JSON_FALSE);
	CHECK(gk_wire_get(&m, "x").type == GK_JSON_NULL);
	CHECK(gk_wire_get(&m, "nope").type == GK_JSON_NONE);
	int64_t d;
	CHECK(gk_json_int(gk_wire_get(&m, "deadline"), &d) &&
	    d == 1733300000000);
	gk_json k = m.field[1].key;
	CHECK(k.len == 8 && memcmp(k.p, "\"method\"", 8) == 0);
	gk_json v = m.field[1].value;
	CHECK(v.len == 5 && memcmp(v.p, "\"GET\"", 5) == 0);
	CHECK(gk_json_eq(v, "GET") && !gk_json_eq(v, "GE") &&
	    !gk_json_eq(v, "GETX"));
}

struct bad {
	const char *in;
	size_t off;
	const char *reason;
};

TEST(error_offsets)
{
	static const struct bad cases[] = {
	    {"{\"a\":tru}", 8, "invalid literal"},
	    {"{\"a\":nul", 8, "invalid literal"},
	    {"{\"a\" 1}", 5, "expected ':'"},
	    {"{\"a\":}", 5, "expected value"},
	    {"{\"a\":1,}", 7, "expected string key"},
	    {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"},
	    {"{\"a\":[1 2]}", 8, "expected ',' or ']'"},
	    {"{\"a\":\"xyz", 5, "unterminated string"},
	    {"{\"a\":\"x\\q\"}", 7, "invalid escape"},
	    {"{\"a\":\"x\\u12g4\"}", 7, "invalid escape"},
	    {"{\"a\":\"\\ud800\"}", 6, "invalid escape"},
	    {"{\"a\":\"\\udc00\"}", 6, "invalid escape"},
	    {"{\"a\":\"\\ud800\\u0041\"}", 6, "invalid escape"},
	    {"{\"a\":\"\\ud800x\"}", 6, "invalid escape"},
	    {"{\"a\":\"x\ty\"}", 7, "control character in string"},
	    {"{\"a\":\"x\ny\"}", 7, "control character in string"},
	    {"{\"a\":\"x\xc3(\"}", 7, "invalid UTF-8"},
	    {"{\"a\":\"\xed\xa0\x80\"}", 6, "invalid UTF-8"},
	    {"{\"a\":\"\xc0\x80\"}", 6, "invalid UTF-8"},
	    {"{\"a\":\"\xe0\x80\x80\"}", 6, "invalid UTF-8"},
	    {"{\"a\":\"\xf4\x90\x80\x80\"}", 6, "invalid UTF-8"},
	    {"{\"a\":\"\xf5\x80\x80\x80\"}", 6, "invalid UTF-8"},
	    {"{\"a\":\"\x80\"}", 6, "invalid UTF-8"},
	    {"{\"a\":\"\xe2\x82\"}", 6, "invalid UTF-8"},
	    {"{\"a\":01}", 6, "invalid number"},
	    {"{\"a\":-}", 6, "invalid number"},
	    {"{\"a\":1.}", 7, "invalid number"},
	    {"{\"a\":1e+}", 8, "invalid number"},
	    {"{\"a\":12.}", 8, "invalid number"},
	    {"{\"a\":12e}", 8, "invalid number"},
	    {"{\"a\":12x}", 7, "expected ',' or '}'"},
	    {"{\"a\":12", 7, "expected ',' or '}'"},
	    {"{\"a\":{\"b\":fals}}", 14, "invalid literal"},
	    {"{\"a\":.5}", 5, "expected value"},
	    {"{\"a\":+1}", 5, "expected value"},
	    {"{\"a\":1,\"a\":2}", 7, "duplicate key"},
	    {"{\"ab\":1,\"a\\u0062\":2}", 8, "duplicate key"},
	    {"{\"a\\/\":1,\"a/\":2}", 9, "duplicate key"},
	    {"{\"a\":1}x", 7, "trailing characters"},
	    {"{\"a\":1}\n", 7, "trailing characters"},
	    {"{\"a\":1}{}", 7, "trailing characters"},
	    {"{\n\"a\":1}", 1, "expected string key"},
	    {"[1]", 0, "top level must be an object"},
	    {"  \"a\"", 2, "top level must be an object"},
	    {"", 0, "top level must be an object"},
	    {"{", 1, "expected string key"},
	    {"{\"a\":1", 6, "expected ',' or '}'"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		gk_wire_msg m;
		gk_wire_error e = {999, NULL};
		int r = parse_s(&m, cases[i].in, &e);
		if (r != -1 || e.offset != cases[i].off || !e.reason ||
		    strcmp(e.reason, cases[i].reason) != 0) {
			printf("#   case %zu: r=%d offset=%zu reason=%s "
			       "(want %zu %s)\n",
			    i, r, e.offset, e.reason ? e.reason : "(null)",
			    cases[i].off, cases[i].reason);
			unit_case_failed = 1;
		}
		CHECK(m.nfields == 0);
	}
}

TEST(nul_and_embedded)
{
	/* A raw NUL is a control character; \u0000 is a character. */
	gk_wire_msg m;
	gk_wire_error e;
	static const char raw[] = "{\"a\":\"x\0y\"}";
	CHECK(gk_wire_parse(&m, raw, sizeof raw - 1, &e) == -1 &&
	    e.offset == 7);
	CHECK(parse_s(&m, "{\"a\\u0000\":\"x\\u0000y\"}", &e) == 0);
	gk_buf b = {0};
	CHECK(gk_json_string(gk_wire_get(&m, "a"), &b) == -1);
	CHECK(gk_json_string(m.field[0].value, &b) == 0 && b.len == 3 &&
	    memcmp(b.data, "x\0y", 3) == 0);
	CHECK(gk_json_eqn(m.field[0].key, "a\0", 2));
	gk_buf_free(&b);
}

TEST(unescape)
{
	static const struct {
		const char *raw, *want;
	} cases[] = {
	    {"\"\"", ""},
	    {"\"plain\"", "plain"},
	    {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t"},
	    {"\"\\u00e9\\u20AC\"", "\xc3\xa9\xe2\x82\xac"},
	    {"\"\\ud83d\\ude00!\"", "\xf0\x9f\x98\x80!"},
	    {"\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf"},
	    {"\"\xe2\x82\xac\\n\"", "\xe2\x82\xac\n"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		gk_json v = span(cases[i].raw);
		gk_buf b = {0};
		CHECK(valid_s(cases[i].raw) == 0);
		CHECK(gk_json_string(v, &b) == 0);
		CHECK_STR(gk_buf_cstr(&b), cases[i].want);
		CHECK(gk_json_eq(v, cases[i].want));
		gk_buf_free(&b);
	}
	/* The C string side is never unescaped. */
	CHECK(gk_json_eq(span("\"a\\\\b\""), "a\\b"));
	CHECK(!gk_json_eq(span("\"a\\\\b\""), "a\\\\b"));
	CHECK(!gk_json_eq(span("\"a\\nb\""), "a\\nb"));
	CHECK(gk_json_eq(span("\"a\\nb\""), "a\nb"));
	CHECK(!gk_json_eq(span("1"), "1"));
	/* Appends, never resets. */
	gk_buf b = {0};
	gk_buf_adds(&b, "x");
	gk_json_string(span("\"y\""), &b);
	CHECK_STR(gk_buf_cstr(&b), "xy");
	gk_buf_free(&b);
}

TEST(numbers)
{
	static const struct {
		const char *s;
		bool ok;
		int64_t v;
	} ints[] = {
	    {"0", true, 0},
	    {"-0", true, 0},
	    {"42", true, 42},
	    {"-42", true, -42},
	    {"9007199254740992", true, 9007199254740992},
	    {"-9007199254740992", true, -9007199254740992},
	    {"9007199254740993", false, 0},
	    {"12345678901234567890", false, 0},
	    /* eight digits at a time, and what is left after them */
	    {"12345678", true, 12345678},
	    {"123456789", true, 123456789},
	    {"1796418933110", true, 1796418933110},
	    {"1234567812345678", true, 1234567812345678},
	    {"9999999999999999", false, 0},
	    {"10000000.5e1", true, 100000005},
	    {"12345678e1", true, 123456780},
	    {"1e3", true, 1000},
	    {"1E+3", true, 1000},
	    {"10.0", true, 10},
	    {"1.5e1", true, 15},
	    {"100e-2", true, 1},
	    {"0.0010e3", true, 1},
	    {"0e99999999999999999999", true, 0},
	    {"0.000", true, 0},
	    {"9.007199254740992e15", true, 9007199254740992},
	    {"9.007199254740993e15", false, 0},
	    {"1.5", false, 0},
	    {"1e-1", false, 0},
	    {"1e16", false, 0},
	    {"1e400", false, 0},
	    {"1e99999999999999999999", false, 0},
	    {"10000000000000000000000e-22", true, 1},
	    {"10000000000000000000001e-22", false, 0},
	};
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
		int64_t v = -1;
		bool ok = gk_json_int(span(ints[i].s), &v);
		CHECK(valid_s(ints[i].s) == 0);
		if (ok != ints[i].ok || (ok && v != ints[i].v)) {
			printf("#   gk_json_int(%s) = %d %lld\n", ints[i].s, ok,
			    (long long)v);
			unit_case_failed = 1;
		}
	}
	double d;
	CHECK(gk_json_double(span("1.5"), &d) && d == 1.5);
	CHECK(gk_json_double(span("-2.5e-3"), &d) && d == -2.5e-3);
	CHECK(gk_json_double(span("123456789012345678901234567890"), &d) &&
	    d == 123456789012345678901234567890.0);
	CHECK(gk_json_double(span("2.2250738585072014e-308"), &d) &&
	    d == 2.2250738585072014e-308);
	CHECK(gk_json_double(span("-0.0"), &d) && d == 0 && signbit(d));
	CHECK(!gk_json_double(span("1e400"), &d));
	CHECK(!gk_json_double(span("\"1\""), &d));
	CHECK(!gk_json_int(span("true"), (int64_t[1]){0}));
}

TEST(limits)
{
	gk_wire_msg m;
	gk_wire_error e;
	gk_buf b = {0};

	/* Depth: 64 levels in all, the top-level object included. */
	for (int n = 63; n <= 64; n++) {
		gk_buf_reset(&b);
		gk_buf_adds(&b, "{\"a\":");
		for (int i = 0; i < n; i++)
			gk_buf_addc(&b, '[');
		for (int i = 0; i < n; i++)
			gk_buf_addc(&b, ']');
		gk_buf_addc(&b, '}');
		int r = gk_wire_parse(&m, b.data, b.len, &e);
		CHECK(n == 63 ? r == 0 : r == -1 && e.offset == 5 + 63 &&
		    strcmp(e.reason, "too deep") == 0);
		/* The same without the object, for validation alone. */
		CHECK(gk_json_validate(b.data + 5, b.len - 6, &e) == 0);
	}
	gk_buf_reset(&b);
	for (int i = 0; i < 65; i++)
		gk_buf_adds(&b, i & 1 ? "{\"a\":" : "[");
	CHECK(gk_json_validate(b.data, b.len, &e) == -1 &&
	    strcmp(e.reason, "too deep") == 0);

	/* Fields: 64 at most. */
	for (int n = 64; n <= 65; n++) {
		gk_buf_reset(&b);
		gk_buf_addc(&b, '{');
		size_t last = 0;
		for (int i = 0; i < n; i++) {
			if (i)
				gk_buf_addc(&b, ',');
			last = b.len;
			gk_buf_addf(&b, "\"k%d\":%d", i, i);
		}
		gk_buf_addc(&b, '}');
		int r = gk_wire_parse(&m, b.data, b.len, &e);
		CHECK(n == 64 ? r == 0 && m.nfields == 64 :
		    r == -1 && e.offset == last &&
		    strcmp(e.reason, "too many fields") == 0);
		CHECK(gk_json_validate(b.data, b.len, &e) == 0);
	}
	gk_buf_free(&b);

	/* Duplicates: top level only. */
	CHECK(parse_s(&m, "{\"a\":{\"b\":1,\"b\":2},\"b\":3}", &e) == 0);
	CHECK(valid_s("{\"a\":1,\"a\":2}") == 0);
	CHECK(parse_s(&m, "{\"a\":1,\"A\":2,\"a\\u0000\":3,\"\\u0061b\":4}",
	    &e) == 0);

	/* Whitespace: space, tab, CR; never a newline. */
	CHECK(parse_s(&m, " \t\r{ \"a\" : [ 1 , 2 ] } \t\r", &e) == 0);
	CHECK(valid_s("[1,\n2]") == -1);
	CHECK(valid_s("1\n") == -1);
	CHECK(valid_s("1\r") == 0);
	CHECK(valid_s(" ") == -1 && valid_s("") == -1);

	/* Over 2^53 is valid JSON, just not an integer for us. */
	CHECK(parse_s(&m, "{\"n\":9007199254740993}", &e) == 0);
	int64_t v;
	CHECK(!gk_json_int(gk_wire_get(&m, "n"), &v));
}

TEST(iterate)
{
	gk_json o = span("{ \"a\" : 1 , \"b\":[true, {\"c\":\"}\\\"]\"}, []],"
			 "\"d\\u0065\":{}}");
	gk_json_iter it;
	gk_json k, v;
	CHECK(valid_s(o.p) == 0);
	gk_json_iter_init(&it, o);
	CHECK(gk_json_iter_next(&it, &k, &v));
	CHECK(gk_json_eq(k, "a") && v.type == GK_JSON_NUMBER && v.len == 1);
	CHECK(gk_json_iter_next(&it, &k, &v));
	CHECK(gk_json_eq(k, "b") && v.type == GK_JSON_ARRAY);
	gk_json arr = v;
	CHECK(gk_json_iter_next(&it, &k, &v));
	CHECK(gk_json_eq(k, "de") && v.type == GK_JSON_OBJECT && v.len == 2);
	CHECK(!gk_json_iter_next(&it, &k, &v));

	static const enum gk_json_type want[] = {GK_JSON_TRUE, GK_JSON_OBJECT,
	    GK_JSON_ARRAY};
	size_t n = 0;
	k.type = GK_JSON_NUMBER;
	gk_json_iter_init(&it, arr);
	while (gk_json_iter_next(&it, &k, &v)) {
		CHECK(n < 3 && v.type == want[n]);
		if (n == 1)
			CHECK(gk_json_eq(gk_json_member(v, "c"), "}\"]"));
		n++;
	}
	CHECK(n == 3 && k.type == GK_JSON_NUMBER); /* key untouched */
	gk_json_iter_init(&it, arr);
	CHECK(gk_json_iter_next(&it, NULL, &v));

	CHECK(gk_json_member(o, "de").type == GK_JSON_OBJECT);
	CHECK(gk_json_member(o, "x").type == GK_JSON_NONE);
	CHECK(gk_json_member(span("[1]"), "a").type == GK_JSON_NONE);
	gk_json_iter_init(&it, span("[]"));
	CHECK(!gk_json_iter_next(&it, NULL, &v));
	gk_json_iter_init(&it, span("\"x\""));
	CHECK(!gk_json_iter_next(&it, NULL, &v));
}

/* ------------------------------------------------------------------ */
/* Splicing                                                            */
/* ------------------------------------------------------------------ */

static void
check_splice(const char *in, const char *key, const char *raw,
    const char *want)
{
	gk_wire_msg m, m2;
	gk_wire_error e;
	gk_buf b = {0};
	CHECK(parse_s(&m, in, &e) == 0);
	if (raw)
		gk_wire_splice(&m, key, raw, strlen(raw), &b);
	else
		gk_wire_remove(&m, key, &b);
	CHECK_STR(gk_buf_cstr(&b), want);
	CHECK(gk_wire_parse(&m2, b.data, b.len, &e) == 0);
	if (raw) {
		gk_json v = gk_wire_get(&m2, key);
		CHECK(v.len == strlen(raw) && memcmp(v.p, raw, v.len) == 0);
	} else
		CHECK(gk_wire_get(&m2, key).type == GK_JSON_NONE);
	gk_buf_free(&b);
}

TEST(splice)
{
	check_splice("{\"a\":1,\"b\":\"x\",\"c\":[1]}", "b", "{\"y\":2}",
	    "{\"a\":1,\"b\":{\"y\":2},\"c\":[1]}");
	check_splice("{ \"a\" : 1 , \"b\" : \"x\" }  ", "b", "7",
	    "{ \"a\" : 1 , \"b\" : 7 }  ");
	check_splice("{\"a\":1}", "b", "true", "{\"a\":1,\"b\":true}");
	check_splice("{}", "k", "1", "{\"k\":1}");
	check_splice("{ } \t", "k", "1", "{ \"k\":1} \t");
	check_splice("{\"a\":1 }", "q\"", "null", "{\"a\":1 ,\"q\\\"\":null}");
	check_splice("{\"\\u0061\":1}", "a", "2", "{\"\\u0061\":2}");

	check_splice("{\"a\":1,\"b\":2,\"c\":3}", "a", NULL,
	    "{\"b\":2,\"c\":3}");
	check_splice("{\"a\":1,\"b\":2,\"c\":3}", "b", NULL,
	    "{\"a\":1,\"c\":3}");
	check_splice("{\"a\":1,\"b\":2,\"c\":3}", "c", NULL,
	    "{\"a\":1,\"b\":2}");
	check_splice("{ \"a\" : 1 , \"b\" : 2 }", "a", NULL,
	    "{ \"b\" : 2 }");
	check_splice("{ \"a\" : 1 , \"b\" : 2 }", "b", NULL,
	    "{ \"a\" : 1 }");
	check_splice("{ \"a\" : 1 } ", "a", NULL, "{  } ");
	check_splice("{\"a\":1}", "zz", NULL, "{\"a\":1}");

	/* Replacing keeps every byte before and after the value. */
	const char *in = "{\"id\":\"r1\",\"status\":200,\"body\":\"ok\"}";
	gk_wire_msg m;
	gk_wire_error e;
	gk_buf b = {0};
	CHECK(parse_s(&m, in, &e) == 0);
	gk_json v = gk_wire_get(&m, "status");
	gk_wire_splice(&m, "status", "503", 3, &b);
	size_t pre = (size_t)(v.p - in), post = strlen(in) - pre - v.len;
	CHECK(b.len == pre + 3 + post);
	CHECK(memcmp(b.data, in, pre) == 0);
	CHECK(memcmp(b.data + pre, "503", 3) == 0);
	CHECK(memcmp(b.data + pre + 3, v.p + v.len, post) == 0);
	gk_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

/* The index after gk_msg_set must be the one a full pass makes. */
static void
check_index(const gk_msg *m)
{
	gk_wire_msg full;
	gk_wire_error e;
	CHECK(m->wire.line == m->line.data && m->wire.len == m->line.len);
	CHECK(gk_wire_parse(&full, m->line.data, m->line.len, &e) == 0);
	CHECK(full.nfields == m->wire.nfields);
	for (unsigned i = 0; i < full.nfields && i < m->wire.nfields; i++) {
		const gk_wire_field *a = &full.field[i], *b = &m->wire.field[i];
		CHECK(a->key.p == b->key.p && a->key.len == b->key.len &&
		    a->key.type == b->key.type);
		CHECK(a->value.p == b->value.p &&
		    a->value.len == b->value.len &&
		    a->value.type == b->value.type);
	}
}

/* gk_msg_body: each way a body comes, and each way it cannot be read. */
TEST(message_bodies)
{
	static const struct {
		const char *line;
		int r;
		const char *want; /* body, or the reason */
	} cases[] = {
	    {"{\"id\":\"1\"}", 0, ""},
	    {"{\"id\":\"1\",\"body\":\"a\\nb\"}", 0, "a\nb"},
	    {"{\"id\":\"1\",\"body_b64\":\"aGk=\"}", 0, "hi"},
	    {"{\"id\":\"1\",\"body_b64\":\"\"}", 0, ""},
	    /* "\/" is '/' */
	    {"{\"id\":\"1\",\"body_b64\":\"Pz8\\/\"}", 0, "??\x3f"},
	    {"{\"id\":\"1\",\"body_b64\":\"aGk\"}", -1, "invalid body_b64"},
	    {"{\"id\":\"1\",\"body_b64\":\"a=Gk\"}", -1, "invalid body_b64"},
	    {"{\"id\":\"1\",\"body_b64\":null}", -1, "invalid body_b64"},
	    {"{\"id\":\"1\",\"body\":7}", -1, "body is not a string"},
	    {"{\"id\":\"1\",\"body\":\"\",\"body_b64\":\"\"}", -1,
		"both body and body_b64"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		gk_wire_error e;
		gk_msg *m = gk_msg_new(cases[i].line, strlen(cases[i].line), &e);
		CHECK(m != NULL);
		if (!m)
			continue;
		gk_buf b = {0};
		gk_buf_adds(&b, "x"); /* appended to, kept on failure */
		const char *why = NULL;
		CHECK(gk_msg_body(m, &b, &why) == cases[i].r);
		if (cases[i].r == 0) {
			CHECK(b.len == 1 + strlen(cases[i].want));
			CHECK(memcmp(b.data + 1, cases[i].want, b.len - 1) == 0);
		} else {
			CHECK(b.len == 1);
			CHECK(why && strcmp(why, cases[i].want) == 0);
		}
		gk_buf_free(&b);
		gk_msg_free(m);
	}
}

TEST(messages)
{
	const char *line = "{\"id\":\"r1\",\"status\":200,\"headers\":{"
			   "\"content-type\":\"text/plain\",\"set-cookie\":"
			   "[\"a=1\",\"b=2\"],\"x-e\":\"caf\\u00e9\","
			   "\"x-empty\":[]},\"body\":\"hi\"}";
	gk_wire_error e;
	gk_msg *m = gk_msg_new(line, strlen(line), &e);
	CHECK(m != NULL);
	if (!m)
		return;
	CHECK(gk_msg_status(m) == 200);
	gk_buf b = {0};
	CHECK(gk_msg_header(m, "content-type", &b) == 0);
	CHECK_STR(gk_buf_cstr(&b), "text/plain");
	gk_buf_reset(&b);
	CHECK(gk_msg_header(m, "set-cookie", &b) == 0);
	CHECK_STR(gk_buf_cstr(&b), "a=1");
	gk_buf_reset(&b);
	CHECK(gk_msg_header(m, "x-e", &b) == 0);
	CHECK_STR(gk_buf_cstr(&b), "caf\xc3\xa9");
	CHECK(gk_msg_header(m, "x-empty", &b) == -1);
	CHECK(gk_msg_header(m, "nope", &b) == -1);
	CHECK(gk_msg_get(m, "body").type == GK_JSON_STRING);

	gk_msg_set(m, "status", " 503 ", 5);
	check_index(m);
	CHECK(gk_msg_status(m) == 503);
	gk_msg_set(m, "id", "\"r1-longer\"", 11);
	check_index(m);
	gk_msg_set_cstr(m, "body", "line\nnext");
	check_index(m);
	gk_msg_set_cstr(m, "trace", "t-1");
	check_index(m);
	gk_msg_set(m, "error", "{\"stage\":\"gk-x\",\"reason\":\"open\"}", 32);
	check_index(m);
	gk_msg_set(m, "headers", "{}", 2);
	check_index(m);
	gk_msg_set(m, "id", "1", 1);
	check_index(m);
	CHECK_STR(gk_buf_cstr(&m->line),
	    "{\"id\":1,\"status\": 503 ,\"headers\":{},"
	    "\"body\":\"line\\nnext\",\"trace\":\"t-1\","
	    "\"error\":{\"stage\":\"gk-x\",\"reason\":\"open\"}}");
	CHECK(gk_msg_header(m, "content-type", &b) == -1);
	gk_msg_free(m);

	m = gk_msg_new("{ }", 3, &e);
	CHECK(m && gk_msg_status(m) == 0);
	gk_msg_set(m, "status", "99", 2);
	check_index(m);
	CHECK(gk_msg_status(m) == 0);
	gk_msg_set(m, "status", "1e3", 3);
	CHECK(gk_msg_status(m) == 0);
	gk_msg_set(m, "status", "2e2", 3);
	CHECK(gk_msg_status(m) == 200);
	gk_msg_set(m, "status", "\"200\"", 5);
	CHECK(gk_msg_status(m) == 0);
	gk_msg_free(m);

	CHECK(gk_msg_new("[]", 2, &e) == NULL);
	CHECK(gk_msg_new("", 0, &e) == NULL);
	gk_msg_free(NULL);
	gk_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Differential test against jansson                                   */
/* ------------------------------------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void)
{
	/* xorshift64*: deterministic, so any failure reproduces. */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}

static unsigned
rn(unsigned n)
{
	return (unsigned)(rnd() >> 33) % n;
}

/* When set, the generators make valid JSON only. */
static bool gen_strict;

static void
gen_ws(gk_buf *b)
{
	static const char ws[] = " \t\r \n";
	if (rn(4) == 0) {
		unsigned n = 1 + rn(2);
		while (n--)
			gk_buf_addc(b, ws[rn(rn(20) || gen_strict ? 4 : 5)]);
	}
}

static void
gen_utf8(gk_buf *b, unsigned long c)
{
	unsigned char o[4];
	size_t n;
	if (c < 0x80) {
		o[0] = (unsigned char)c;
		n = 1;
	} else if (c < 0x800) {
		o[0] = (unsigned char)(0xc0 | c >> 6);
		o[1] = (unsigned char)(0x80 | (c & 0x3f));
		n = 2;
	} else if (c < 0x10000) {
		o[0] = (unsigned char)(0xe0 | c >> 12);
		o[1] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
		o[2] = (unsigned char)(0x80 | (c & 0x3f));
		n = 3;
	} else {
		o[0] = (unsigned char)(0xf0 | c >> 18);
		o[1] = (unsigned char)(0x80 | (c >> 12 & 0x3f));
		o[2] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
		o[3] = (unsigned char)(0x80 | (c & 0x3f));
		n = 4;
	}
	gk_buf_add(b, o, n);
}

static unsigned long
gen_cp(void)
{
	switch (rn(6)) {
	case 0: return 0x80 + rn(0x780);
	case 1: return 0x800 + rn(0xd000);
	case 2: return 0xe000 + rn(0x2000);
	case 3: return 0x10000 + rn(0x100000);
	case 4: return rn(2) ? 0xd800 + rn(0x800) : 0x10ffff + rn(3);
	default: return rn(0x80);
	}
}

static void
gen_string(gk_buf *b)
{
	static const char esc[] = "\"\\/bfnrtu";
	gk_buf_addc(b, '"');
	unsigned n = rn(rn(8) ? 8 : 40);
	while (n--) {
		unsigned k = rn(gen_strict ? 17 : 20);
		if (k < 10) {
			char c = (char)(' ' + rn(95));
			if (gen_strict && (c == '"' || c == '\\'))
				c = 'x';
			gk_buf_addc(b, c);
		}
		else if (k < 13) {
			char c = esc[rn(sizeof esc - 1)];
			if (c == '"' || c == '\\')
				gk_buf_addc(b, '\\');
			if (c != 'u') {
				if (c != '"' && c != '\\')
					gk_buf_addc(b, '\\');
				gk_buf_addc(b, c);
			} else {
				unsigned long cp = gen_cp();
				if (gen_strict && cp >= 0xd800 && (cp < 0xe000 ||
				    cp > 0x10ffff))
					cp = 0x41;
				if (cp >= 0x10000 && cp <= 0x10ffff) {
					unsigned long v = cp - 0x10000;
					gk_buf_addf(b, "\\u%04lx\\u%04lX",
					    0xd800 + (v >> 10),
					    0xdc00 + (v & 0x3ff));
				} else
					gk_buf_addf(b, rn(2) ? "\\u%04lx" :
					    "\\u%04lX", cp & 0xffff);
			}
		} else if (k < 17) {
			unsigned long cp = gen_cp();
			if (cp >= 0xd800 && cp <= 0xdfff && (rn(4) || gen_strict))
				cp = 0xfffd;
			if (cp > 0x10ffff && gen_strict)
				cp = 0x10ffff;
			if (gen_strict && (cp < 0x20 || cp == '"' || cp == '\\'))
				cp = 'y';
			gen_utf8(b, cp);
		} else if (k < 18)
			gk_buf_addc(b, (char)rn(0x20));
		else
			gk_buf_addc(b, (char)(0x80 + rn(0x80)));
	}
	if (rn(50) || gen_strict)
		gk_buf_addc(b, '"');
}

static void
gen_digits(gk_buf *b, unsigned max)
{
	unsigned n = 1 + rn(max);
	while (n--)
		gk_buf_addc(b, (char)('0' + rn(10)));
}

static void
gen_number(gk_buf *b)
{
	static const char *const special[] = {"9007199254740992",
	    "9007199254740993", "-9007199254740992", "9223372036854775807",
	    "9223372036854775808", "-9223372036854775808",
	    "-9223372036854775809", "1e308", "1.7976931348623157e308",
	    "1.7976931348623159e308", "1e309", "2.2250738585072011e-308",
	    "4.9e-324", "2e-324", "1e-400", "-0", "-0.0", "0e0", "1E+2",
	    "1e-2", "123.456e-7", "0.1", "1.0", "1e3", "10.0", "01",
	    "-", "1.", ".1", "1e", "1e+", "+1", "0x1", "1.5e", "--1",
	    "2.", "NaN", "Infinity"};
	if (rn(6) == 0) {
		/* The valid ones come first. */
		gk_buf_adds(b, special[rn(gen_strict ? 25 : sizeof special /
		    sizeof special[0])]);
		return;
	}
	if (rn(3) == 0)
		gk_buf_addc(b, '-');
	if (rn(4) == 0)
		gk_buf_addc(b, '0');
	else {
		gk_buf_addc(b, (char)('1' + rn(9)));
		if (rn(2))
			gen_digits(b, rn(16) ? 6 : 24);
	}
	if (rn(3) == 0) {
		gk_buf_addc(b, '.');
		gen_digits(b, rn(8) ? 6 : 24);
	}
	if (rn(4) == 0) {
		gk_buf_addc(b, "eE"[rn(2)]);
		if (rn(2))
			gk_buf_addc(b, "+-"[rn(2)]);
		gen_digits(b, 3);
	}
}

static void
gen_value(gk_buf *b, int depth)
{
	unsigned k = rn(depth > 6 ? 6 : 10);
	gen_ws(b);
	switch (k) {
	case 0: case 1: gen_string(b); break;
	case 2: case 3: gen_number(b); break;
	case 4: gk_buf_adds(b, "true"); break;
	case 5: gk_buf_adds(b, rn(2) ? "false" : "null"); break;
	case 6: case 7: {
		gk_buf_addc(b, '[');
		unsigned n = rn(5);
		for (unsigned i = 0; i < n; i++) {
			if (i)
				gk_buf_addc(b, ',');
			gen_value(b, depth + 1);
		}
		gen_ws(b);
		gk_buf_addc(b, ']');
		break;
	}
	default: {
		gk_buf_addc(b, '{');
		unsigned n = rn(5);
		for (unsigned i = 0; i < n; i++) {
			if (i)
				gk_buf_addc(b, ',');
			gen_ws(b);
			if (rn(6))
				gk_buf_addf(b, "\"%c\"", 'a' + rn(6));
			else
				gen_string(b);
			gen_ws(b);
			gk_buf_addc(b, ':');
			gen_value(b, depth + 1);
		}
		gen_ws(b);
		gk_buf_addc(b, '}');
	}
	}
	gen_ws(b);
}

static void
mutate(gk_buf *b)
{
	static const char interesting[] = "\"\\{}[],:0-e.+ \n\t\r\x01"
					  "\x80\xc3\xed\xf4\xffutnax9";
	unsigned n = 1 + rn(3);
	while (n--) {
		size_t at = b->len ? rn((unsigned)b->len) : 0;
		char c = interesting[rn(sizeof interesting)]; /* incl. NUL */
		switch (rn(5)) {
		case 0:
			if (b->len)
				b->data[at] = c;
			break;
		case 1:
			if (b->len) {
				memmove(b->data + at, b->data + at + 1,
				    b->len - at - 1);
				b->len--;
			}
			break;
		case 2:
			gk_buf_reserve(b, 1);
			memmove(b->data + at + 1, b->data + at, b->len - at);
			b->data[at] = c;
			b->len++;
			break;
		case 3:
			b->len = at;
			break;
		default: {
			/* Copy a short range elsewhere. */
			size_t from = b->len ? rn((unsigned)b->len) : 0;
			size_t len = rn(8);
			if (from + len > b->len)
				len = b->len - from;
			char tmp[8];
			memcpy(tmp, b->data + from, len);
			gk_buf_reserve(b, len);
			memmove(b->data + at + len, b->data + at, b->len - at);
			memcpy(b->data + at, tmp, len);
			b->len += len;
		}
		}
	}
}

static unsigned long diff_overflow, diff_failures, diff_skipped, diff_accepted, diff_nul;

static bool
same_value(json_t *j, gk_json v, int depth)
{
	gk_buf s = {0};
	bool ok = true;
	switch (v.type) {
	case GK_JSON_OBJECT: {
		if (!json_is_object(j))
			return false;
		gk_json_iter it;
		gk_json k, x;
		size_t n = 0;
		gk_json_iter_init(&it, v);
		while (gk_json_iter_next(&it, &k, &x))
			n++;
		bool dups = n != json_object_size(j);
		gk_json_iter_init(&it, v);
		while (ok && gk_json_iter_next(&it, &k, &x)) {
			gk_buf_reset(&s);
			ok = gk_json_string(k, &s) == 0;
			json_t *jx = ok ? json_object_getn(j, s.data ? s.data :
			    "", s.len) : NULL;
			ok = jx != NULL;
			if (ok && !dups)
				ok = same_value(jx, x, depth + 1);
			/* Lookup by name finds the same member. */
			if (ok && !dups && !memchr(gk_buf_cstr(&s), 0, s.len)) {
				gk_json y = gk_json_member(v, s.data);
				ok = y.p == x.p && y.len == x.len;
			}
		}
		break;
	}
	case GK_JSON_ARRAY: {
		if (!json_is_array(j))
			return false;
		gk_json_iter it;
		gk_json x;
		size_t i = 0;
		gk_json_iter_init(&it, v);
		while (ok && gk_json_iter_next(&it, NULL, &x)) {
			json_t *jx = json_array_get(j, i++);
			ok = jx && same_value(jx, x, depth + 1);
		}
		ok = ok && i == json_array_size(j);
		break;
	}
	case GK_JSON_STRING:
		ok = json_is_string(j) && gk_json_string(v, &s) == 0 &&
		    s.len == json_string_length(j) &&
		    memcmp(s.data ? s.data : "", json_string_value(j), s.len) ==
			0 &&
		    gk_json_eqn(v, json_string_value(j), json_string_length(j));
		break;
	case GK_JSON_NUMBER: {
		double d;
		int64_t iv;
		if (!json_is_number(j) || !gk_json_double(v, &d) ||
		    d != json_number_value(j))
			return false;
		bool isint = gk_json_int(v, &iv);
		if (json_is_integer(j)) {
			json_int_t ji = json_integer_value(j);
			bool fits = ji >= -(1ll << 53) && ji <= (1ll << 53);
			ok = isint == fits && (!isint || iv == ji);
		} else
			ok = !isint || (double)iv == d;
		break;
	}
	case GK_JSON_TRUE: ok = json_is_true(j); break;
	case GK_JSON_FALSE: ok = json_is_false(j); break;
	case GK_JSON_NULL: ok = json_is_null(j); break;
	default: ok = false;
	}
	gk_buf_free(&s);
	return ok;
}

/* One input through both parsers; false on a disagreement. */
static bool
check_one(const char *p, size_t n)
{
	json_error_t je;
	gk_wire_error ge = {0, NULL};
	json_t *j = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
	int r = gk_json_validate(p, n, &ge);
	bool ok = true;

	if (!j) {
		/*
		 * Documented differences: jansson refuses numbers past its
		 * long long or double, and NUL in keys; both are valid JSON,
		 * and jansson stops there, so the rest is unknown.
		 */
		enum json_error_code c = json_error_code(&je);
		if (c == json_error_numeric_overflow ||
		    c == json_error_null_byte_in_key) {
			diff_skipped++;
			diff_overflow += c == json_error_numeric_overflow;
			return true;
		}
		ok = r == -1 && ge.reason && ge.offset <= n;
	} else if (memchr(p, 0, n)) {
		/* jansson skips a raw NUL byte in some places; it is never
		 * valid JSON. */
		ok = r == -1;
		diff_nul++;
	} else if (memchr(p, '\n', n)) {
		/* A newline is whitespace to jansson, never on the wire. */
		ok = r == -1;
	} else if (r == -1) {
		ok = strcmp(ge.reason, "too deep") == 0;
		diff_skipped++;
	} else {
		const char *s = p, *e = p + n;
		while (*s == ' ' || *s == '\t' || *s == '\r')
			s++;
		while (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')
			e--;
		gk_json v = span_n(s, (size_t)(e - s));
		diff_accepted++;
		ok = same_value(j, v, 0);

		/* The wire parse: an object, a bounded number of members,
		 * no duplicate names; jansson keeps one of duplicates. */
		gk_wire_msg m;
		int wr = gk_wire_parse(&m, p, n, &ge);
		if (v.type != GK_JSON_OBJECT)
			ok = ok && wr == -1 &&
			    strcmp(ge.reason, "top level must be an object") == 0;
		else {
			gk_json_iter it;
			gk_json k, x;
			size_t members = 0;
			gk_json_iter_init(&it, v);
			while (gk_json_iter_next(&it, &k, &x))
				members++;
			if (members > GK_WIRE_MAX_FIELDS)
				ok = ok && wr == -1;
			else if (members != json_object_size(j))
				ok = ok && wr == -1 &&
				    strcmp(ge.reason, "duplicate key") == 0;
			else
				ok = ok && wr == 0 && m.nfields == members;
		}
	}
	if (!ok) {
		diff_failures++;
		if (diff_failures <= 10) {
			printf("#   disagreement: jansson %s (%s), gokit %d "
			       "(%s at %zu) on: ",
			    j ? "accepts" : "rejects", j ? "" : je.text, r,
			    ge.reason ? ge.reason : "", ge.offset);
			for (size_t i = 0; i < n; i++)
				printf((unsigned char)p[i] < 0x20 ||
				    (unsigned char)p[i] >= 0x7f ?
				    "\\x%02x" : "%c",
				    (unsigned char)p[i]);
			printf("\n");
		}
	}
	json_decref(j);
	return ok;
}

/* A message whose buffer has room to grow: its sets are made in place. */
static gk_msg *
roomy(const char *line)
{
	gk_buf b = {0};
	gk_buf_reserve(&b, 4096);
	gk_buf_adds(&b, line);
	gk_wire_error e;
	return gk_msg_adopt(&b, &e);
}

TEST(set_in_place)
{
	gk_msg *m = roomy("{\"id\":\"1\",\"headers\":{\"a\":\"b\"},\"n\":5 }");
	const char *buf = m->line.data;
	gk_msg_set(m, "headers", "{\"a\":\"b\",\"c\":\"d\"}", 17);
	check_index(m);
	gk_msg_set(m, "n", " 7 ", 3);
	check_index(m);
	gk_msg_set(m, "trace", "{\"x\":1}", 7);
	check_index(m);
	CHECK(m->line.data == buf); /* all three in place */
	CHECK_STR(gk_buf_cstr(&m->line),
	    "{\"id\":\"1\",\"headers\":{\"a\":\"b\",\"c\":\"d\"},\"n\": 7  "
	    ",\"trace\":{\"x\":1}}");
	gk_msg_set(m, "headers", "{}", 2);
	check_index(m);
	CHECK(gk_msg_get(m, "trace").len == 7);
	CHECK(m->line.data == buf);

	/* raw read from the line itself: made in a new buffer */
	gk_json id = gk_msg_get(m, "id");
	gk_msg_set(m, "copy", id.p, id.len);
	check_index(m);
	CHECK(m->line.data != buf);
	CHECK_STR(gk_buf_cstr(&m->line),
	    "{\"id\":\"1\",\"headers\":{},\"n\": 7  ,\"trace\":{\"x\":1},"
	    "\"copy\":\"1\"}");
	/* a key that quoting changes: the other way too, found by name */
	gk_msg_set(m, "a\"b", "2", 1);
	check_index(m);
	CHECK(gk_msg_get(m, "a\"b").len == 1 && *gk_msg_get(m, "a\"b").p == '2');
	gk_msg_free(m);

	/* no room: the set still happens, in a new buffer */
	m = gk_msg_new("{\"id\":1}", 8, NULL);
	char big[3000];
	memset(big, 'x', sizeof big);
	big[0] = big[sizeof big - 1] = '"';
	gk_msg_set(m, "id", big, sizeof big);
	check_index(m);
	CHECK(m->line.len == sizeof big + 7);
	gk_msg_free(m);

	/* the first member of an empty object takes no comma */
	m = roomy("{ }");
	gk_msg_set(m, "k", "1", 1);
	check_index(m);
	CHECK_STR(gk_buf_cstr(&m->line), "{ \"k\":1}");
	gk_msg_free(m);
}

TEST(differential_jansson)
{
	gk_buf b = {0};
	const unsigned rounds = 500000;
	clock_t t0 = clock();
	for (unsigned i = 0; i < rounds; i++) {
		gk_buf_reset(&b);
		gen_value(&b, rn(4) ? 0 : 1);
		if (rn(3) == 0)
			mutate(&b);
		check_one(b.data ? b.data : "", b.len);
	}
	printf("# differential: %u inputs, %lu accepted, %lu skipped "
	       "(%lu numeric overflow), %lu with NUL, %lu disagreements, "
	       "%.2f s\n",
	    rounds, diff_accepted, diff_skipped, diff_overflow, diff_nul,
	    diff_failures,
	    (double)(clock() - t0) / CLOCKS_PER_SEC);
	CHECK(diff_failures == 0);
	CHECK(diff_accepted > rounds / 4);
	CHECK(diff_skipped < rounds / 50);
	gk_buf_free(&b);
}

/* Splice and remove on generated messages always give a valid line. */
TEST(splice_generated)
{
	gk_buf b = {0}, out = {0};
	unsigned tried = 0;
	gen_strict = true;
	for (unsigned i = 0; i < 20000; i++) {
		gk_wire_msg m, m2;
		gk_wire_error e;
		gk_buf_reset(&b);
		gk_buf_addc(&b, '{');
		unsigned n = rn(6);
		for (unsigned f = 0; f < n; f++) {
			gk_buf_addf(&b, "%s\"k%u\":", f ? "," : "", f);
			gen_value(&b, 1);
		}
		gk_buf_addc(&b, '}');
		if (gk_wire_parse(&m, b.data, b.len, &e) < 0) {
			continue;
		}
		tried++;
		char key[8];
		snprintf(key, sizeof key, "k%u", rn(n + 2));
		gk_buf_reset(&out);
		gk_wire_splice(&m, key, "[1,\"x\"]", 7, &out);
		CHECK(gk_wire_parse(&m2, out.data, out.len, &e) == 0);
		CHECK(m2.nfields == m.nfields + (gk_wire_get(&m, key).type ==
		    GK_JSON_NONE));
		gk_buf_reset(&out);
		gk_wire_remove(&m, key, &out);
		CHECK(gk_wire_parse(&m2, out.data, out.len, &e) == 0);
		CHECK(m2.nfields == m.nfields - (gk_wire_get(&m, key).type !=
		    GK_JSON_NONE));

		gk_msg *msg = gk_msg_new(b.data, b.len, &e);
		CHECK(msg != NULL);
		gk_msg_set(msg, key, "12", 2);
		check_index(msg);
		gk_msg_set_cstr(msg, "k1", "v");
		check_index(msg);
		gk_msg_free(msg);
	}
	gen_strict = false;
	CHECK(tried > 19000);
	gk_buf_free(&b);
	gk_buf_free(&out);
}

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

TEST(bench_parse)
{
	static const char line[] =
	    "{\"id\":\"c4-000123\",\"method\":\"POST\",\"path\":"
	    "\"/api/v1/users/42/orders\",\"query\":\"verbose=1&limit=10\","
	    "\"headers\":{\"host\":\"shop.example.com\",\"user-agent\":"
	    "\"curl/8.5.0\",\"accept\":\"*/*\",\"content-type\":"
	    "\"application/json\",\"x-forwarded-for\":[\"10.0.0.7\","
	    "\"10.0.0.1\"]},\"body\":\"{\\\"sku\\\":\\\"A-1\\\",\\\"qty\\\":2}\","
	    "\"remote\":\"10.0.0.7:54321\",\"deadline\":1733300000000}";
	gk_wire_msg m;
	gk_wire_error e;
	const unsigned n = 1000000;
	volatile unsigned sink = 0;
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < n; i++) {
		gk_wire_parse(&m, line, sizeof line - 1, &e);
		sink += m.nfields;
	}
	uint64_t t1 = now_ns();
	printf("# parse: %.0f ns/line (%zu bytes)\n", (double)(t1 - t0) / n,
	    sizeof line - 1);
	CHECK(sink == n * 8);
	t0 = now_ns();
	for (unsigned i = 0; i < n; i++)
		sink += (unsigned)gk_wire_get(&m, "deadline").len;
	t1 = now_ns();
	printf("# get: %.1f ns/lookup\n", (double)(t1 - t0) / n);
}

/* Top-level keys: lookups and duplicates, plain and escaped (the plain
 * ones take a fast path that must agree with the unescaping one). */
/* gk_json_quote on strings of every class of byte at every length and
 * offset around its sixteen-byte steps: the result is one JSON string,
 * and for valid UTF-8 it reads back (jansson) as the input exactly. */
TEST(quote_round_trip)
{
	static const char *const pieces[] = {"a", "Z", "~", "\x7f", "\"",
	    "\\", "\n", "\x01", "\x1f", "\xc3\xa9", "\xe2\x82\xac",
	    "\xf0\x9f\x98\x80", "\xff", "\xc3", "\xed\xa0\x80", " "};
	gk_buf in = {0}, out = {0};
	for (unsigned round = 0; round < 20000; round++) {
		gk_buf_reset(&in);
		unsigned len = rn(70);
		/* Mostly plain, so that the first special byte lands
		 * anywhere in or after a step. */
		for (unsigned i = 0; i < len; i++) {
			const char *pc = pieces[rn(5) ? rn(3) : rn(16)];
			gk_buf_adds(&in, pc);
		}
		gk_buf_reset(&out);
		gk_buf_adds(&out, "x"); /* not at the buffer's start */
		gk_json_quote(&out, in.data ? in.data : "", in.len);
		gk_wire_error e;
		if (gk_json_validate(out.data + 1, out.len - 1, &e) < 0 ||
		    out.data[1] != '"') {
			printf("#   round %u: not a JSON string: %.*s\n", round,
			    (int)out.len, out.data);
			CHECK(0);
			break;
		}
		if (!gk_utf8_valid(in.data ? in.data : "", in.len))
			continue;
		json_error_t je;
		json_t *j = json_loadb(out.data + 1, out.len - 1,
		    JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
		if (!j || json_string_length(j) != in.len ||
		    memcmp(json_string_value(j), in.data, in.len) != 0) {
			printf("#   round %u: %.*s does not read back\n", round,
			    (int)out.len, out.data);
			CHECK(0);
			json_decref(j);
			break;
		}
		json_decref(j);
	}
	gk_buf_free(&in);
	gk_buf_free(&out);
}

TEST(keys)
{
	gk_wire_msg m;
	gk_wire_error e;
	/* Same length and first byte, different keys: not duplicates. */
	CHECK(parse_s(&m, "{\"ab\":1,\"ac\":2,\"ad\":3,\"\":4}", &e) == 0);
	CHECK(gk_wire_get(&m, "ac").len == 1 && gk_wire_get(&m, "ac").p[0] == '2');
	CHECK(gk_wire_get(&m, "").len == 1 && gk_wire_get(&m, "").p[0] == '4');
	CHECK(gk_wire_get(&m, "a").type == GK_JSON_NONE);
	CHECK(gk_wire_get(&m, "abc").type == GK_JSON_NONE);
	/* A repeat after other keys, plain or through an escape either way. */
	CHECK(parse_s(&m, "{\"ab\":1,\"x\":0,\"ab\":2}", &e) < 0 &&
	    strcmp(e.reason, "duplicate key") == 0 && e.offset == 14);
	CHECK(parse_s(&m, "{\"ab\":1,\"\\u0061b\":2}", &e) < 0 &&
	    strcmp(e.reason, "duplicate key") == 0);
	CHECK(parse_s(&m, "{\"\\u0061b\":1,\"ab\":2}", &e) < 0 &&
	    strcmp(e.reason, "duplicate key") == 0);
	/* An escaped key is found by its text, and a plain key of the same
	 * raw length is not confused with it. */
	CHECK(parse_s(&m, "{\"i\\u0064\":\"7\",\"i\\\\d\":\"8\"}", &e) == 0);
	CHECK(strcmp(get_str(&m, "id"), "7") == 0);
	CHECK(strcmp(get_str(&m, "i\\d"), "8") == 0);
	/* 64 keys with many (length, first byte) collisions. */
	gk_buf b = {0};
	gk_buf_addc(&b, '{');
	for (int i = 0; i < GK_WIRE_MAX_FIELDS; i++)
		gk_buf_addf(&b, "%s\"k%02d\":%d", i ? "," : "", i, i);
	gk_buf_addc(&b, '}');
	CHECK(gk_wire_parse(&m, b.data, b.len, &e) == 0 &&
	    m.nfields == GK_WIRE_MAX_FIELDS);
	int64_t v = -1;
	CHECK(gk_json_int(gk_wire_get(&m, "k63"), &v) && v == 63);
	b.len -= 1;
	gk_buf_adds(&b, ",\"k07\":1}");
	CHECK(gk_wire_parse(&m, b.data, b.len, &e) < 0);
	gk_buf_free(&b);
	/* A member added by gk_msg_set under an escaped key is found. */
	gk_msg *msg = gk_msg_new("{\"a\":1}", 7, &e);
	CHECK(msg != NULL);
	gk_msg_set(msg, "q\"k", "2", 1);
	CHECK(msg->wire.escaped == 2);
	CHECK(gk_msg_get(msg, "q\"k").len == 1 && gk_msg_get(msg, "a").len == 1);
	gk_msg_free(msg);
	/* Plain integers (the fast path) and their bounds. */
	CHECK(gk_json_int(span("0"), &v) && v == 0);
	CHECK(gk_json_int(span("9007199254740992"), &v) && v == 9007199254740992);
	CHECK(!gk_json_int(span("9007199254740993"), &v));
	CHECK(gk_json_int(span("1733300000000"), &v) && v == 1733300000000);
	CHECK(!gk_json_int(span("99999999999999999"), &v));
}

/* gk__msg_copy (what a fused stage forwards): the same line and an index
 * that points into the copy's own line, which changes on its own. */
TEST(message_copy)
{
	gk_wire_error e;
	static const char line[] = "{\"id\":\"7\",\"method\":\"GET\","
	    "\"q\\\"k\":1,\"headers\":{\"a\":\"b\"},\"deadline\":1733300000000}";
	gk_msg *m = gk_msg_new(line, sizeof line - 1, &e);
	CHECK(m != NULL);
	if (!m)
		return;
	gk_msg *c = gk__msg_copy(m);
	check_index(c);
	CHECK(c->line.len == m->line.len &&
	    !memcmp(c->line.data, m->line.data, m->line.len));
	CHECK(c->wire.escaped == m->wire.escaped && c->wire.escaped != 0);
	CHECK(gk_msg_get(c, "q\"k").len == 1);
	gk_msg_set_cstr(c, "trace", "t");
	gk_msg_set(c, "id", "\"8\"", 3);
	check_index(c);
	check_index(m);
	CHECK_STR(gk_buf_cstr(&m->line), line);
	gk_buf id = {0};
	CHECK(gk_json_string(gk_msg_get(c, "id"), &id) == 0);
	CHECK_STR(gk_buf_cstr(&id), "8");
	gk_buf_free(&id);
	gk_msg_free(m);
	gk_msg *d = gk__msg_copy(c);
	gk_msg_free(c);
	check_index(d);
	CHECK(gk_msg_get(d, "trace").type == GK_JSON_STRING);
	gk_msg_free(d);
}

int
main(void)
{
	RUN(parse_request);
	RUN(error_offsets);
	RUN(nul_and_embedded);
	RUN(unescape);
	RUN(numbers);
	RUN(limits);
	RUN(iterate);
	RUN(splice);
	RUN(messages);
	RUN(message_bodies);
	RUN(message_copy);
	RUN(set_in_place);
	RUN(differential_jansson);
	RUN(splice_generated);
	RUN(keys);
	RUN(quote_round_trip);
	RUN(bench_parse);
	return UNIT_END();
}
