/*
 * fuzz_wire.c: libFuzzer target for the wire codec.
 *
 * jansson is the oracle for what is valid JSON; splice, remove and
 * gk_msg_set must always turn a valid message into a valid message.
 * Any disagreement aborts.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gokit.h"

#define MUST(c)                                                              \
	do {                                                                 \
		if (!(c)) {                                                  \
			fprintf(stderr, "fuzz_wire: %s:%d: %s\n", __FILE__,   \
			    __LINE__, #c);                                     \
			abort();                                             \
		}                                                            \
	} while (0)

/* Our reading of validated text equals jansson's tree. */
static void
same(json_t *j, gk_json v)
{
	gk_buf s = {0};
	gk_json_iter it;
	gk_json k, x;
	switch (v.type) {
	case GK_JSON_OBJECT: {
		size_t n = 0;
		MUST(json_is_object(j));
		gk_json_iter_init(&it, v);
		while (gk_json_iter_next(&it, &k, &x))
			n++;
		bool dups = n != json_object_size(j);
		gk_json_iter_init(&it, v);
		while (gk_json_iter_next(&it, &k, &x)) {
			gk_buf_reset(&s);
			MUST(gk_json_string(k, &s) == 0);
			json_t *jx = json_object_getn(j, gk_buf_cstr(&s), s.len);
			MUST(jx);
			MUST(gk_json_eqn(k, s.data, s.len));
			if (!dups)
				same(jx, x);
		}
		break;
	}
	case GK_JSON_ARRAY: {
		size_t i = 0;
		MUST(json_is_array(j));
		gk_json_iter_init(&it, v);
		while (gk_json_iter_next(&it, NULL, &x)) {
			json_t *jx = json_array_get(j, i++);
			MUST(jx);
			same(jx, x);
		}
		MUST(i == json_array_size(j));
		break;
	}
	case GK_JSON_STRING:
		MUST(json_is_string(j));
		MUST(gk_json_string(v, &s) == 0);
		MUST(s.len == json_string_length(j));
		MUST(memcmp(gk_buf_cstr(&s), json_string_value(j), s.len) == 0);
		MUST(gk_json_eqn(v, json_string_value(j), json_string_length(j)));
		break;
	case GK_JSON_NUMBER: {
		double d;
		int64_t iv;
		MUST(json_is_number(j));
		MUST(gk_json_double(v, &d));
		MUST(d == json_number_value(j));
		bool isint = gk_json_int(v, &iv);
		if (json_is_integer(j)) {
			json_int_t ji = json_integer_value(j);
			bool fits = ji >= -(1ll << 53) && ji <= (1ll << 53);
			MUST(isint == fits);
			MUST(!isint || iv == ji);
		} else
			MUST(!isint || (double)iv == d);
		break;
	}
	case GK_JSON_TRUE: MUST(json_is_true(j)); break;
	case GK_JSON_FALSE: MUST(json_is_false(j)); break;
	case GK_JSON_NULL: MUST(json_is_null(j)); break;
	default: MUST(0);
	}
	gk_buf_free(&s);
}

static void
must_parse(const gk_buf *b, gk_wire_msg *m)
{
	gk_wire_error e;
	if (gk_wire_parse(m, b->data ? b->data : "", b->len, &e) < 0) {
		fprintf(stderr, "fuzz_wire: splice made %s at %zu: %.*s\n",
		    e.reason, e.offset, (int)b->len, b->data);
		abort();
	}
}

/* The index gk_msg_set keeps is the one a full pass makes. */
static void
same_index(const gk_msg *msg)
{
	gk_wire_msg full;
	must_parse(&msg->line, &full);
	MUST(full.nfields == msg->wire.nfields);
	MUST(msg->wire.line == msg->line.data && msg->wire.len == msg->line.len);
	for (unsigned i = 0; i < full.nfields; i++) {
		const gk_wire_field *a = &full.field[i], *b = &msg->wire.field[i];
		MUST(a->key.p == b->key.p && a->key.len == b->key.len);
		MUST(a->value.p == b->value.p && a->value.len == b->value.len);
		MUST(a->value.type == b->value.type);
	}
}

static void
check_wire(const char *p, size_t n)
{
	gk_wire_msg m, m2;
	gk_wire_error e;
	gk_buf out = {0}, key = {0};
	if (gk_wire_parse(&m, p, n, &e) < 0)
		return;
	MUST(gk_json_validate(p, n, &e) == 0);
	for (unsigned i = 0; i < m.nfields; i++) {
		gk_buf_reset(&key);
		MUST(gk_json_string(m.field[i].key, &key) == 0);
		/* Names holding NUL cannot be asked for by C string. */
		if (memchr(gk_buf_cstr(&key), 0, key.len))
			continue;
		gk_json v = gk_wire_get(&m, key.data);
		MUST(v.p == m.field[i].value.p && v.len == m.field[i].value.len);

		gk_buf_reset(&out);
		gk_wire_splice(&m, key.data, "[null]", 6, &out);
		must_parse(&out, &m2);
		MUST(m2.nfields == m.nfields);
		MUST(out.len == n - v.len + 6);

		gk_buf_reset(&out);
		gk_wire_remove(&m, key.data, &out);
		must_parse(&out, &m2);
		MUST(m2.nfields == m.nfields - 1);
		MUST(gk_wire_get(&m2, key.data).type == GK_JSON_NONE);
	}
	if (m.nfields < GK_WIRE_MAX_FIELDS &&
	    gk_wire_get(&m, "zz-new").type == GK_JSON_NONE) {
		gk_buf_reset(&out);
		gk_wire_splice(&m, "zz-new", "\"v\"", 3, &out);
		must_parse(&out, &m2);
		MUST(m2.nfields == m.nfields + 1);
		MUST(gk_json_eq(gk_wire_get(&m2, "zz-new"), "v"));
	}

	gk_msg *msg = gk_msg_new(p, n, &e);
	MUST(msg);
	gk_msg_set(msg, "status", "204", 3);
	same_index(msg);
	/* Unless the line was full: then it is left as it was. */
	MUST(gk_msg_status(msg) == 204 ||
	    (m.nfields == GK_WIRE_MAX_FIELDS &&
		gk_wire_get(&m, "status").type == GK_JSON_NONE));
	gk_msg_set_cstr(msg, "zz-new", "x\"y");
	same_index(msg);
	if (m.nfields)
		gk_msg_set(msg, m.field[0].key.len == 2 ? "" : "id", "{}", 2);
	same_index(msg);
	gk_buf_reset(&out);
	gk_msg_header(msg, "host", &out);
	gk_msg_free(msg);

	/* The same on a line with room to spare, where sets are made in
	 * place; then one whose value is read from the line itself. */
	gk_buf room = {0};
	gk_buf_reserve(&room, n + 4096);
	gk_buf_add(&room, p, n);
	msg = gk_msg_adopt(&room, &e);
	MUST(msg);
	gk_msg_set(msg, "status", "204", 3);
	same_index(msg);
	gk_msg_set_cstr(msg, "zz-new", "x\"y");
	same_index(msg);
	if (msg->wire.nfields) {
		gk_json v = msg->wire.field[0].value;
		gk_msg_set(msg, "zz-new", v.p, v.len);
		same_index(msg);
		gk_msg_set(msg, m.field[0].key.len == 2 ? "" : "id", " 1 ", 3);
		same_index(msg);
	}
	gk_msg_free(msg);
	gk_buf_free(&out);
	gk_buf_free(&key);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	json_error_t je;
	gk_wire_error ge = {0, NULL};
	json_t *j = json_loadb(p, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
	int r = gk_json_validate(p, size, &ge);

	if (r < 0)
		MUST(ge.reason && ge.offset <= size);
	if (!j) {
		/* jansson refuses some valid JSON: numbers past long long or
		 * double, NUL in keys.  It stops there, so skip these. */
		enum json_error_code c = json_error_code(&je);
		if (c != json_error_numeric_overflow &&
		    c != json_error_null_byte_in_key)
			MUST(r < 0);
	} else if (memchr(p, 0, size) || memchr(p, '\n', size)) {
		/* jansson skips some raw NULs and takes '\n' as whitespace;
		 * neither is ever in a wire line. */
		MUST(r < 0);
	} else if (r < 0) {
		MUST(strcmp(ge.reason, "too deep") == 0);
	} else {
		const char *s = p, *e = p + size;
		while (*s == ' ' || *s == '\t' || *s == '\r')
			s++;
		while (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')
			e--;
		gk_json v = {gk_json_type_of(*s), s, (size_t)(e - s)};
		same(j, v);
	}
	json_decref(j);
	check_wire(p, size);
	return 0;
}
