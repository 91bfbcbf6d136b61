/* msg_headers.c: editing the headers object of a wire message. */
#include <stdlib.h>
#include <string.h>

#include "gokit.h"

/*
 * The new headers object is built in one buffer kept per thread: every
 * response through gk-tracer edits its headers, and gk_msg_set copies the
 * text.  A buffer grown past this by one huge object is given back.
 */
#define EDIT_BUF_KEEP 16384

static _Thread_local gk_buf edit_buf;

static bool
listed(gk_json key, const char *const *names)
{
	for (const char *const *n = names; n && *n; n++)
		if (gk_json_eq(key, *n))
			return true;
	return false;
}

void
gk_msg_edit_headers(gk_msg *m, const char *const *remove, const gk_header *add)
{
	enum { MAX_ADD = 16 };
	size_t nlen[MAX_ADD];
	unsigned nadd = 0;
	for (const gk_header *a = add; a && a->name; a++, nadd++)
		if (nadd < MAX_ADD)
			nlen[nadd] = strlen(a->name);

	gk_json h = gk_msg_get(m, "headers");
	gk_buf *b = &edit_buf;
	b->len = 0;
	gk_buf_reserve(b, (h.type == GK_JSON_OBJECT ? h.len : 2) + 64);
	b->data[b->len++] = '{';
	bool first = true;
	if (h.type == GK_JSON_OBJECT) {
		gk_json_iter it;
		gk_json key, val;
		gk_json_iter_init(&it, h);
		while (gk_json_iter_next(&it, &key, &val)) {
			if (listed(key, remove))
				continue;
			bool replaced = false;
			unsigned i = 0;
			for (const gk_header *a = add; a && a->name; a++, i++)
				if (i < MAX_ADD ? gk_json_eqn(key, a->name, nlen[i])
				    : gk_json_eq(key, a->name)) {
					replaced = true;
					break;
				}
			if (replaced)
				continue;
			gk_buf_reserve(b, key.len + val.len + 2);
			if (!first)
				b->data[b->len++] = ',';
			first = false;
			memcpy(b->data + b->len, key.p, key.len);
			b->len += key.len;
			b->data[b->len++] = ':';
			memcpy(b->data + b->len, val.p, val.len);
			b->len += val.len;
		}
	}
	unsigned i = 0;
	for (const gk_header *a = add; a && a->name; a++, i++) {
		if (!first)
			gk_buf_addc(b, ',');
		first = false;
		gk_json_quote(b, a->name, i < MAX_ADD ? nlen[i] : strlen(a->name));
		gk_buf_addc(b, ':');
		gk_json_quote(b, a->value, strlen(a->value));
	}
	gk_buf_addc(b, '}');
	gk_msg_set(m, "headers", b->data, b->len);
	if (b->cap > EDIT_BUF_KEEP)
		gk_buf_free(b);
}
