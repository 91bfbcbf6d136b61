/* test_key.c: request keys and the LRU key table. */
#include <dlfcn.h>

#include "key.h"
#include "unit.h"

static gk_msg *
msg(const char *line)
{
	return gk_msg_new(line, strlen(line), NULL);
}

static const char *
key_of(const char *spec, const char *line)
{
	static gk_buf out;
	const char *why = NULL;
	gk_key_spec *k = gk_key_spec_new(spec, &why);
	gk_msg *m = msg(line);
	out.len = 0;
	gk_key_of(k, m, &out);
	gk_msg_free(m);
	gk_key_spec_free(k);
	return gk_buf_cstr(&out);
}

TEST(remote_key_drops_the_port)
{
	CHECK_STR(key_of("remote", "{\"id\":\"1\",\"remote\":\"10.0.0.7:5555\"}"),
	    "10.0.0.7");
	CHECK_STR(key_of("remote", "{\"id\":\"1\",\"remote\":\"[::1]:80\"}"),
	    "::1");
}

TEST(header_and_path_keys)
{
	const char *r = "{\"id\":\"1\",\"path\":\"/a\",\"headers\":"
			"{\"x-api-key\":[\"k1\",\"k2\"]}}";
	CHECK_STR(key_of("header:X-Api-Key", r), "k1");
	CHECK_STR(key_of("path", r), "/a");
	CHECK_STR(key_of("header:missing", r), "");
}

TEST(jq_key_is_compiled_once_and_used)
{
	CHECK_STR(key_of("jq:.headers[\"x-tenant\"]",
		      "{\"id\":\"1\",\"headers\":{\"x-tenant\":\"acme\"}}"),
	    "acme");
	CHECK_STR(key_of("jq:.n", "{\"id\":\"1\",\"n\":7}"), "7");
	const char *why = NULL;
	CHECK(gk_key_spec_new("jq:.[", &why) == NULL && why);
	CHECK(gk_key_spec_new("bogus", &why) == NULL);
}

/* Run first: libjq is loaded by the first jq key, not before. */
TEST(libjq_is_loaded_only_for_a_jq_key)
{
	void *pre = dlopen("libjq.so.1", RTLD_LAZY | RTLD_NOLOAD);
	if (pre) {
		/* Linked without --as-needed (gcc leaves it out with
		 * -fsanitize): every library is loaded at start anyway. */
		printf("# libjq is a link-time dependency of this build\n");
		dlclose(pre);
		return;
	}
	CHECK_STR(key_of("header:x", "{\"id\":\"1\",\"headers\":{\"x\":\"v\"}}"),
	    "v");
	CHECK(dlopen("libjq.so.1", RTLD_LAZY | RTLD_NOLOAD) == NULL);
	CHECK_STR(key_of("jq:.id", "{\"id\":\"1\"}"), "1");
	void *h = dlopen("libjq.so.1", RTLD_LAZY | RTLD_NOLOAD);
	CHECK(h != NULL);
	if (h)
		dlclose(h);
}

TEST(jq_key_outputs)
{
	const char *why = NULL;
	gk_key_spec *k;
	gk_buf out = {0};
	gk_msg *m = msg("{\"id\":\"1\",\"o\":{\"a\":[1,2]},\"z\":null}");
	/* Not a string: the JSON text. */
	k = gk_key_spec_new("jq:.o", &why);
	CHECK(gk_key_of(k, m, &out) == 0);
	CHECK_STR(gk_buf_cstr(&out), "{\"a\":[1,2]}");
	gk_key_spec_free(k);
	/* Several outputs: the first. */
	out.len = 0;
	k = gk_key_spec_new("jq:.o.a[]", &why);
	CHECK(gk_key_of(k, m, &out) == 0);
	CHECK_STR(gk_buf_cstr(&out), "1");
	/* The same compiled program serves the next request. */
	out.len = 0;
	CHECK(gk_key_of(k, m, &out) == 0);
	CHECK_STR(gk_buf_cstr(&out), "1");
	gk_key_spec_free(k);
	/* A generator is not run past its first output. */
	out.len = 0;
	k = gk_key_spec_new("jq:range(1e12)", &why);
	for (int i = 0; i < 3; i++) {
		out.len = 0;
		CHECK(gk_key_of(k, m, &out) == 0);
		CHECK_STR(gk_buf_cstr(&out), "0");
	}
	gk_key_spec_free(k);
	/* null, an error, no output: no key (the empty one). */
	const char *none[] = {"jq:.z", "jq:.missing", "jq:error(\"x\")",
	    "jq:empty", "jq:.headers[\"x\"] | ascii_downcase"};
	for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
		out.len = 0;
		k = gk_key_spec_new(none[i], &why);
		CHECK(k != NULL);
		CHECK(gk_key_of(k, m, &out) == -1);
		CHECK(out.len == 0);
		gk_key_spec_free(k);
	}
	gk_msg_free(m);
	gk_buf_free(&out);
}

static int evicted;
static void
count_evict(void *v, void *arg)
{
	(void)v;
	(void)arg;
	evicted++;
}

TEST(table_evicts_least_recently_used)
{
	gk_keytable *t = gk_keytable_new(3, sizeof(int), count_evict, NULL);
	bool created;
	*(int *)gk_keytable_get(t, "a", 1, &created) = 1;
	CHECK(created);
	*(int *)gk_keytable_get(t, "b", 1, &created) = 2;
	*(int *)gk_keytable_get(t, "c", 1, &created) = 3;
	CHECK(*(int *)gk_keytable_get(t, "a", 1, &created) == 1 && !created);
	gk_keytable_get(t, "d", 1, &created); /* evicts b, the oldest */
	CHECK(gk_keytable_count(t) == 3);
	CHECK(gk_keytable_evictions(t) == 1 && evicted == 1);
	CHECK(gk_keytable_peek(t, "b", 1) == NULL);
	CHECK(gk_keytable_peek(t, "a", 1) != NULL);
	CHECK_STR(gk_keytable_key(gk_keytable_peek(t, "c", 1)), "c");
	gk_keytable_free(t);
}

TEST(table_holds_many_keys_within_its_bound)
{
	gk_keytable *t = gk_keytable_new(1000, 8, NULL, NULL);
	char k[16];
	for (int i = 0; i < 5000; i++) {
		int n = snprintf(k, sizeof k, "k%d", i);
		gk_keytable_get(t, k, (size_t)n, NULL);
	}
	CHECK(gk_keytable_count(t) == 1000);
	CHECK(gk_keytable_evictions(t) == 4000);
	CHECK(gk_keytable_peek(t, "k4999", 5) && !gk_keytable_peek(t, "k0", 2));
	gk_keytable_free(t);
}

int
main(void)
{
	RUN(libjq_is_loaded_only_for_a_jq_key);
	RUN(remote_key_drops_the_port);
	RUN(jq_key_outputs);
	RUN(header_and_path_keys);
	RUN(jq_key_is_compiled_once_and_used);
	RUN(table_evicts_least_recently_used);
	RUN(table_holds_many_keys_within_its_bound);
	return UNIT_END();
}
