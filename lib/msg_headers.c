/* msg_headers.c: editing the headers object of a wire message. */
#include <string.h>

#include "gokit.h"

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
	gk_json h = gk_msg_get(m, "headers");
	gk_buf b = {0};
	gk_buf_addc(&b, '{');
	bool first = true;
	if (h.type == GK_JSON_OBJECT) {
		gk_json_iter it;
		gk_json key, val;
		gk_json_iter_init(&it, h);
		while (gk_json_iter_next(&it, &key, &val)) {
			if (listed(key, remove))
				continue;
			bool replaced = false;
			for (const gk_header *a = add; a && a->name; a++)
				if (gk_json_eq(key, a->name))
					replaced = true;
			if (replaced)
				continue;
			if (!first)
				gk_buf_addc(&b, ',');
			first = false;
			gk_buf_add(&b, key.p, key.len);
			gk_buf_addc(&b, ':');
			gk_buf_add(&b, val.p, val.len);
		}
	}
	for (const gk_header *a = add; a && a->name; a++) {
		if (!first)
			gk_buf_addc(&b, ',');
		first = false;
		gk_json_quote(&b, a->name, strlen(a->name));
		gk_buf_addc(&b, ':');
		gk_json_quote(&b, a->value, strlen(a->value));
	}
	gk_buf_addc(&b, '}');
	gk_msg_set(m, "headers", b.data, b.len);
	gk_buf_free(&b);
}
