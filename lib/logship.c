/*
 * logship.c: event helpers shared by the log-shipping plugins (see
 * logship.h): microsecond timestamps, type filters, key=value text.
 */
#include <string.h>
#include <time.h>

#include "logship.h"

uint64_t
gk_event_ts_us_or_now(const gk_event *ev)
{
	uint64_t us = gk_event_ts_us(ev);
	return us ? us : gk_realtime_us();
}

static const char *const type_names[] = {"log", "metrics", "span", "access",
                                         "other"};

const char *
gk_event_type_name(enum gk_event_type t)
{
	return (unsigned)t < 5 ? type_names[t] : "other";
}

int
gk_evmask_parse(const char *s, unsigned *mask)
{
	unsigned m = 0;
	while (*s) {
		size_t n = strcspn(s, ",");
		bool found = false;
		if (n == 3 && !strncmp(s, "all", 3)) {
			m = GK_EVMASK_ALL;
			found = true;
		}
		for (unsigned i = 0; i < 5 && !found; i++) {
			if (strlen(type_names[i]) == n &&
			    !strncmp(s, type_names[i], n)) {
				m |= 1u << i;
				found = true;
			}
		}
		if (!found)
			return -1;
		s += n;
		if (*s == ',')
			s++;
	}
	if (!m)
		return -1;
	*mask = m;
	return 0;
}

static bool
needs_quotes(const char *p, size_t n)
{
	if (!n)
		return true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c <= ' ' || c == '"' || c == '\\' || c == '=' || c == 0x7f)
			return true;
	}
	return false;
}

void
gk_event_kv_text(const gk_event *ev, gk_buf *out)
{
	gk_buf v = {0};
	for (unsigned i = 0; i < ev->msg->nfields; i++) {
		const gk_wire_field *f = &ev->msg->field[i];
		if (gk_event_common_key(f->key) || gk_json_eq(f->key, "raw"))
			continue;
		gk_buf_addc(out, ' ');
		gk_json_string(f->key, out);
		gk_buf_addc(out, '=');
		if (f->value.type != GK_JSON_STRING) {
			gk_buf_add(out, f->value.p, f->value.len);
			continue;
		}
		gk_buf_reset(&v);
		gk_json_string(f->value, &v);
		if (needs_quotes(v.data, v.len))
			gk_json_quote(out, v.data ? v.data : "", v.len);
		else
			gk_buf_add(out, v.data, v.len);
	}
	gk_buf_free(&v);
}
