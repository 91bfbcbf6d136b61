/*
 * syslog_fmt.c: events as syslog messages (see logship.h): RFC 5424 with
 * the event's own members as STRUCTURED-DATA, and RFC 3164 as glibc's
 * syslog(3) writes it to /dev/log.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "logship.h"

#define DEFAULT_MAX 8192

static const char *const facilities[24] = {
    "kern",   "user",     "mail",    "daemon",       "auth",     "syslog",
    "lpr",    "news",     "uucp",    "cron",         "authpriv", "ftp",
    "ntp",    "security", "console", "solaris-cron", "local0",   "local1",
    "local2", "local3",   "local4",  "local5",       "local6",   "local7"};

int
gk_syslog_facility(const char *name)
{
	for (int i = 0; i < 24; i++)
		if (!strcmp(name, facilities[i]))
			return i;
	return -1;
}

const char *
gk_syslog_facility_name(int code)
{
	return code >= 0 && code < 24 ? facilities[code] : "user";
}

int
gk_syslog_severity(const gk_event *ev)
{
	/* debug, info, warn, error, fatal -> LOG_DEBUG, LOG_INFO,
	 * LOG_WARNING, LOG_ERR, LOG_CRIT */
	static const int sev[] = {7, 6, 4, 3, 2};
	return sev[gk_event_level(ev)];
}

/* Printable US-ASCII (33-126) of v, at most max characters, or "-". */
static void
add_token(gk_buf *out, const char *p, size_t n, size_t max)
{
	size_t w = 0;
	for (size_t i = 0; i < n && w < max; i++) {
		unsigned char c = (unsigned char)p[i];
		gk_buf_addc(out, c >= 33 && c <= 126 ? (char)c : '_');
		w++;
	}
	if (!w)
		gk_buf_addc(out, '-');
}

static void
add_json_token(gk_buf *out, gk_json v, size_t max, gk_buf *tmp)
{
	gk_buf_reset(tmp);
	gk_event_text(v, tmp);
	add_token(out, tmp->data, tmp->len, max);
}

/* An SD-NAME: printable US-ASCII but '=', ' ', ']', '"'; 1-32 chars. */
static void
add_sd_name(gk_buf *out, const char *p, size_t n)
{
	size_t w = 0;
	for (size_t i = 0; i < n && w < 32; i++, w++) {
		unsigned char c = (unsigned char)p[i];
		bool ok =
		    c >= 33 && c <= 126 && c != '=' && c != ']' && c != '"';
		gk_buf_addc(out, ok ? (char)c : '_');
	}
	if (!w)
		gk_buf_addc(out, '_');
}

/* A PARAM-VALUE: UTF-8 with '"', '\' and ']' escaped by a backslash. */
static void
add_param_value(gk_buf *out, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c == '"' || c == '\\' || c == ']')
			gk_buf_addc(out, '\\');
		gk_buf_addc(out, c);
	}
}

/* The longest prefix of p[0..n) within max bytes that ends on a UTF-8
 * character boundary. */
static size_t
utf8_cut(const char *p, size_t n, size_t max)
{
	if (n <= max)
		return n;
	size_t k = max;
	while (k > 0 && ((unsigned char)p[k] & 0xc0) == 0x80)
		k--;
	return k;
}

static void
add_sd(gk_buf *out, const gk_event *ev, const char *sd_id, gk_buf *tmp)
{
	bool open = false;
	for (unsigned i = 0; i < ev->msg->nfields; i++) {
		const gk_wire_field *f = &ev->msg->field[i];
		bool svc = gk_json_eq(f->key, "svc");
		if (!svc && gk_event_common_key(f->key))
			continue;
		if (!open) {
			gk_buf_addc(out, '[');
			add_sd_name(out, sd_id, strlen(sd_id));
			open = true;
		}
		gk_buf_addc(out, ' ');
		gk_buf_reset(tmp);
		gk_json_string(f->key, tmp);
		add_sd_name(out, tmp->data, tmp->len);
		gk_buf_add(out, "=\"", 2);
		gk_buf_reset(tmp);
		gk_event_text(f->value, tmp);
		add_param_value(out, tmp->data, tmp->len);
		gk_buf_addc(out, '"');
	}
	if (open)
		gk_buf_addc(out, ']');
	else
		gk_buf_addc(out, '-');
}

bool
gk_syslog_5424(const gk_event *ev, const gk_syslog_opts *o, gk_buf *out)
{
	size_t max = o->max_bytes ? o->max_bytes : DEFAULT_MAX;
	size_t start = out->len;
	gk_buf tmp = {0};
	int pri = o->facility * 8 + gk_syslog_severity(ev);
	uint64_t us = gk_event_ts_us_or_now(ev);
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	gk_buf_addf(out, "<%d>1 %04d-%02d-%02dT%02d:%02d:%02d.%06uZ ", pri,
	            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	            tm.tm_min, tm.tm_sec, (unsigned)(us % 1000000));
	add_token(out, o->host ? o->host : "-", o->host ? strlen(o->host) : 1,
	          255);
	gk_buf_addc(out, ' ');
	if (o->ident)
		add_token(out, o->ident, strlen(o->ident), 48);
	else
		add_json_token(out, ev->proc, 48, &tmp);
	gk_buf_addc(out, ' ');
	add_json_token(out, ev->pid, 128, &tmp);
	gk_buf_addc(out, ' ');
	const char *type = gk_event_type_name(ev->type);
	gk_buf_adds(out, type);
	gk_buf_addc(out, ' ');
	size_t sd_at = out->len;
	add_sd(out, ev, o->sd_id ? o->sd_id : "gokit@32473", &tmp);
	bool cut = false;
	if (out->len - start > max) {
		/* Without the structured data, then. */
		out->len = sd_at;
		gk_buf_addc(out, '-');
		cut = true;
	}
	if (ev->text.type != GK_JSON_NONE) {
		gk_buf_reset(&tmp);
		gk_event_text(ev->text, &tmp);
		size_t used = out->len - start + 1; /* with the SP before MSG */
		if (used > max) {
			/* The header and structured data fill the bound: no
			 * room for the SP, so no MSG. */
			cut = cut || tmp.len > 0;
		} else {
			size_t n = utf8_cut(tmp.data, tmp.len, max - used);
			if (n < tmp.len)
				cut = true;
			gk_buf_addc(out, ' ');
			gk_buf_add(out, tmp.data, n);
		}
	}
	gk_buf_free(&tmp);
	return cut;
}

bool
gk_syslog_3164(const gk_event *ev, const gk_syslog_opts *o, gk_buf *out)
{
	static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr",
	                                  "May", "Jun", "Jul", "Aug",
	                                  "Sep", "Oct", "Nov", "Dec"};
	size_t max = o->max_bytes ? o->max_bytes : DEFAULT_MAX;
	size_t start = out->len;
	gk_buf tmp = {0};
	int pri = o->facility * 8 + gk_syslog_severity(ev);
	time_t t = (time_t)(gk_event_ts_us_or_now(ev) / 1000000);
	struct tm tm;
	localtime_r(&t, &tm);
	/* glibc: "<%d>%h %e %T %s[%d]: " */
	gk_buf_addf(out, "<%d>%s %2d %02d:%02d:%02d ", pri, mon[tm.tm_mon],
	            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	/* A TAG is alphanumeric and at most 32 characters; keep it a token. */
	if (o->ident)
		add_token(out, o->ident, strlen(o->ident), 32);
	else
		add_json_token(out, ev->proc, 32, &tmp);
	if (ev->pid.type == GK_JSON_NUMBER) {
		gk_buf_addc(out, '[');
		gk_buf_add(out, ev->pid.p, ev->pid.len < 20 ? ev->pid.len : 20);
		gk_buf_addc(out, ']');
	}
	gk_buf_add(out, ": ", 2);
	gk_buf_reset(&tmp);
	gk_event_text(ev->text, &tmp);
	gk_event_kv_text(ev, &tmp);
	size_t used = out->len - start;
	const char *text = tmp.data ? tmp.data : ""; /* none: never allocated */
	size_t skip = tmp.len && text[0] == ' ' ? 1 : 0; /* no msg */
	size_t room = used < max ? max - used : 0;
	size_t n = utf8_cut(text + skip, tmp.len - skip, room);
	/* One line: a newline would end the message for some readers. */
	for (size_t i = 0; i < n; i++) {
		char c = text[skip + i];
		gk_buf_addc(out, c == '\n' || c == '\r' ? ' ' : c);
	}
	bool cut = n < tmp.len - skip;
	gk_buf_free(&tmp);
	return cut;
}
