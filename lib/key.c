/*
 * key.c: request keys and the per-key table.  jq keys are compiled once
 * with libjq; the request is handed to jq as parsed JSON only for jq keys,
 * so the other kinds stay on the splice-only fast path.
 *
 * libjq (and the libonig and libm it pulls in, about half a megabyte of
 * resident memory) is loaded with dlopen(3) the first time a jq key is
 * given, not at every start of every stage that can take -k.
 */
#include <dlfcn.h>
#include <jq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "key.h"

enum key_kind { KEY_REMOTE, KEY_PATH, KEY_HEADER, KEY_JQ };

struct gk_key_spec {
	enum key_kind kind;
	char *header;
	jq_state *jq;
};

/* The libjq functions key.c calls, found once by jq_load(). */
static struct {
	bool loaded;
	__typeof__(&jq_init) init;
	__typeof__(&jq_set_error_cb) set_error_cb;
	__typeof__(&jq_compile) compile;
	__typeof__(&jq_start) start;
	__typeof__(&jq_next) next;
	__typeof__(&jq_teardown) teardown;
	__typeof__(&jv_parse_sized) parse_sized;
	__typeof__(&jv_get_kind) get_kind;
	__typeof__(&jv_copy) copy;
	__typeof__(&jv_free) free;
	__typeof__(&jv_string_value) string_value;
	__typeof__(&jv_string_length_bytes) string_length_bytes;
	__typeof__(&jv_dump_string) dump_string;
	__typeof__(&jv_invalid_get_msg) invalid_get_msg;
} J;

#define GK_LIBJQ "libjq.so.1"

/* Exits 71 when libjq is missing: not a usage error. */
static void
jq_load(void)
{
	if (J.loaded)
		return;
	void *h = dlopen(GK_LIBJQ, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		gk_fatal(GK_EXIT_OSERR, "unable to load %s: %s", GK_LIBJQ,
		    dlerror());
#define SYM(field, name)                                                  \
	if (!(*(void **)&J.field = dlsym(h, #name)))                      \
		gk_fatal(GK_EXIT_OSERR, "unable to find %s in %s", #name, \
		    GK_LIBJQ);
	SYM(init, jq_init)
	SYM(set_error_cb, jq_set_error_cb)
	SYM(compile, jq_compile)
	SYM(start, jq_start)
	SYM(next, jq_next)
	SYM(teardown, jq_teardown)
	SYM(parse_sized, jv_parse_sized)
	SYM(get_kind, jv_get_kind)
	SYM(copy, jv_copy)
	SYM(free, jv_free)
	SYM(string_value, jv_string_value)
	SYM(string_length_bytes, jv_string_length_bytes)
	SYM(dump_string, jv_dump_string)
	SYM(invalid_get_msg, jv_invalid_get_msg)
#undef SYM
	J.loaded = true; /* h stays open for the life of the process */
}

static bool
jv_ok(jv v)
{
	return J.get_kind(v) != JV_KIND_INVALID;
}

static void
jq_error(void *arg, jv msg)
{
	(void)arg;
	J.free(msg);
}

gk_key_spec *
gk_key_spec_new(const char *s, const char **why)
{
	gk_key_spec *k = gk_xcalloc(1, sizeof *k);
	if (!strcmp(s, "remote"))
		k->kind = KEY_REMOTE;
	else if (!strcmp(s, "path"))
		k->kind = KEY_PATH;
	else if (!strncmp(s, "header:", 7) && s[7]) {
		k->kind = KEY_HEADER;
		k->header = gk_xstrdup(s + 7);
		for (char *p = k->header; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p + 32);
	} else if (!strncmp(s, "jq:", 3) && s[3]) {
		k->kind = KEY_JQ;
		jq_load();
		k->jq = J.init();
		if (!k->jq) {
			*why = "unable to start jq";
			free(k);
			return NULL;
		}
		J.set_error_cb(k->jq, jq_error, NULL);
		if (!J.compile(k->jq, s + 3)) {
			*why = "jq program does not compile";
			J.teardown(&k->jq);
			free(k);
			return NULL;
		}
	} else {
		*why = "expected remote, path, header:NAME or jq:EXPR";
		free(k);
		return NULL;
	}
	return k;
}

void
gk_key_spec_free(gk_key_spec *k)
{
	if (!k)
		return;
	if (k->jq)
		J.teardown(&k->jq);
	free(k->header);
	free(k);
}

/*
 * A jq key that fails (an error, not an empty result: the request then
 * shares the empty key) is logged at most once every 10 s, with how many
 * failed in between, so that a program failing on every request shows
 * without a line a request.
 */
static void
jq_failed(jv error)
{
	static uint64_t last_us, failures;
	failures++;
	uint64_t now = gk_monotonic_us();
	if (last_us && now - last_us < 10000000)
		return;
	last_us = now;
	char n[40];
	snprintf(n, sizeof n, "failures=%llu", (unsigned long long)failures);
	gk_buf e = {0};
	gk_buf_adds(&e, "error=");
	if (J.get_kind(error) == JV_KIND_STRING)
		gk_buf_adds(&e, J.string_value(error));
	else {
		jv s = J.dump_string(J.copy(error), 0);
		gk_buf_adds(&e, J.string_value(s));
		J.free(s);
	}
	gk_log(GK_WARN, "key expression failed: requests share the empty key",
	    gk_buf_cstr(&e), n);
	gk_buf_free(&e);
	failures = 0;
}

static int
key_jq(const gk_key_spec *k, const gk_msg *msg, gk_buf *out)
{
	jv in = J.parse_sized(msg->line.data, (int)msg->line.len);
	if (!jv_ok(in)) {
		J.free(in);
		return -1;
	}
	J.start(k->jq, in, 0);
	jv v = J.next(k->jq);
	int rc = -1;
	if (J.get_kind(v) == JV_KIND_STRING) {
		gk_buf_add(out, J.string_value(v),
		    (size_t)J.string_length_bytes(J.copy(v)));
		rc = 0;
	} else if (jv_ok(v) && J.get_kind(v) != JV_KIND_NULL) {
		jv s = J.dump_string(J.copy(v), 0);
		gk_buf_adds(out, J.string_value(s));
		J.free(s);
		rc = 0;
	} else if (!jv_ok(v)) {
		/* No output at all is no key; an error says why. */
		jv e = J.invalid_get_msg(v);
		if (J.get_kind(e) != JV_KIND_NULL)
			jq_failed(e);
		J.free(e);
		return -1;
	}
	/* Only the first output counts.  The rest are never computed: the
	 * next jq_start resets the program (a generator costs nothing more,
	 * and jq_next is never called after it said there is no more). */
	J.free(v);
	return rc;
}

int
gk_key_of(const gk_key_spec *k, const gk_msg *msg, gk_buf *out)
{
	switch (k->kind) {
	case KEY_REMOTE: {
		size_t start = out->len;
		if (gk_json_string(gk_msg_get(msg, "remote"), out) < 0)
			return -1;
		/* Drop the port: "10.0.0.7:5555" and "[::1]:5555". */
		char *s = out->data + start;
		char *colon = memrchr(s, ':', out->len - start);
		if (colon && (s[0] == '[' || memchr(s, ':', (size_t)(colon - s)) == NULL))
			out->len = (size_t)(colon - out->data);
		if (out->len > start && s[0] == '[' && out->data[out->len - 1] == ']') {
			memmove(s, s + 1, out->len - start - 2);
			out->len -= 2;
		}
		return 0;
	}
	case KEY_PATH:
		return gk_json_string(gk_msg_get(msg, "path"), out) < 0 ? -1 : 0;
	case KEY_HEADER:
		return gk_msg_header(msg, k->header, out) < 0 ? -1 : 0;
	case KEY_JQ:
		return key_jq(k, msg, out);
	}
	return -1;
}

/* ---- the table: chained hash plus a doubly linked recency list ---- */

struct entry {
	struct entry *hnext, *newer, *older;
	uint64_t hash;
	char *key;
	size_t keylen;
	_Alignas(max_align_t) unsigned char value[];
};

struct gk_keytable {
	struct entry **bucket;
	size_t nbucket, count, max, value_size;
	struct entry *newest, *oldest;
	uint64_t evictions;
	void (*evict)(void *value, void *arg);
	void *arg;
};

gk_keytable *
gk_keytable_new(size_t max_keys, size_t value_size,
    void (*evict)(void *value, void *arg), void *arg)
{
	gk_keytable *t = gk_xcalloc(1, sizeof *t);
	t->max = max_keys ? max_keys : 1;
	t->value_size = value_size;
	t->evict = evict;
	t->arg = arg;
	t->nbucket = 64;
	while (t->nbucket < t->max && t->nbucket < (1u << 20))
		t->nbucket *= 2;
	t->bucket = gk_xcalloc(t->nbucket, sizeof *t->bucket);
	return t;
}

static void
unlink_recency(gk_keytable *t, struct entry *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		t->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		t->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void
push_newest(gk_keytable *t, struct entry *e)
{
	e->older = t->newest;
	e->newer = NULL;
	if (t->newest)
		t->newest->newer = e;
	t->newest = e;
	if (!t->oldest)
		t->oldest = e;
}

static void
drop(gk_keytable *t, struct entry *e)
{
	struct entry **p = &t->bucket[e->hash & (t->nbucket - 1)];
	while (*p != e)
		p = &(*p)->hnext;
	*p = e->hnext;
	unlink_recency(t, e);
	t->count--;
	free(e->key);
	free(e);
}

void
gk_keytable_free(gk_keytable *t)
{
	if (!t)
		return;
	while (t->oldest)
		drop(t, t->oldest);
	free(t->bucket);
	free(t);
}

static struct entry *
find(gk_keytable *t, const char *key, size_t len, uint64_t h)
{
	for (struct entry *e = t->bucket[h & (t->nbucket - 1)]; e; e = e->hnext)
		if (e->hash == h && e->keylen == len && !memcmp(e->key, key, len))
			return e;
	return NULL;
}

void *
gk_keytable_peek(gk_keytable *t, const char *key, size_t len)
{
	struct entry *e = find(t, key, len, gk__hash_bytes(key, len));
	return e ? e->value : NULL;
}

void *
gk_keytable_get(gk_keytable *t, const char *key, size_t len, bool *created)
{
	uint64_t h = gk__hash_bytes(key, len);
	struct entry *e = find(t, key, len, h);
	if (created)
		*created = !e;
	if (e) {
		if (t->newest != e) {
			unlink_recency(t, e);
			push_newest(t, e);
		}
		return e->value;
	}
	if (t->count >= t->max) {
		struct entry *old = t->oldest;
		if (t->evict)
			t->evict(old->value, t->arg);
		drop(t, old);
		t->evictions++;
	}
	e = gk_xcalloc(1, sizeof *e + t->value_size);
	e->hash = h;
	e->key = gk_xmalloc(len + 1);
	memcpy(e->key, key, len);
	e->key[len] = 0;
	e->keylen = len;
	size_t k = h & (t->nbucket - 1);
	e->hnext = t->bucket[k];
	t->bucket[k] = e;
	push_newest(t, e);
	t->count++;
	return e->value;
}

const char *
gk_keytable_key(const void *value)
{
	const struct entry *e = (const void *)((const char *)value -
	    offsetof(struct entry, value));
	return e->key;
}

size_t
gk_keytable_count(const gk_keytable *t)
{
	return t->count;
}

uint64_t
gk_keytable_evictions(const gk_keytable *t)
{
	return t->evictions;
}

void
gk_keytable_each(gk_keytable *t, void (*fn)(const char *, void *, void *),
    void *arg)
{
	for (struct entry *e = t->newest; e; e = e->older)
		fn(e->key, e->value, arg);
}
