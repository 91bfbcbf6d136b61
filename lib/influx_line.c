/*
 * influx_line.c: events as InfluxDB line protocol (see influx_line.h).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "export_fold.h"
#include "influx_line.h"

/* A character that takes a backslash (a newline, written as a space,
 * too). */
static bool
special(char c, bool is_measurement)
{
	return c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t' ||
	       (!is_measurement && c == '=');
}

size_t
gk_influx_name_len(const char *s, size_t n)
{
	/* InfluxDB's parser ends a name at a separator not right after a
	 * backslash: a trailing backslash would escape the separator after
	 * it and cannot be written. */
	while (n && s[n - 1] == '\\')
		n--;
	return n;
}

void
gk_influx_name(gk_buf *out, const char *s, size_t n, bool is_measurement)
{
	n = gk_influx_name_len(s, n);
	gk_buf_reserve(out, n + 8);
	/* A line that starts with '#' is a comment. */
	if (is_measurement && n && s[0] == '#')
		gk_buf_addc(out, '_');
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		/* Only "\" and a special character is read as one: any other
		 * backslash, even two in a row, is itself. */
		if (special(c, is_measurement)) {
			gk_buf_addc(out, '\\');
			if (c == '\n' || c == '\r' || c == '\t')
				c = ' ';
		}
		gk_buf_addc(out, c);
	}
}

void
gk_influx_string(gk_buf *out, const char *s, size_t n)
{
	gk_buf_reserve(out, n + 2);
	gk_buf_addc(out, '"');
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			gk_buf_addc(out, '\\');
		gk_buf_addc(out, s[i]);
	}
	gk_buf_addc(out, '"');
}

/* The length of s[0..n) as written: without its trailing backslashes,
 * counted. */
static size_t
name_len(const char *s, size_t n, gk_influx_stats *st)
{
	size_t w = gk_influx_name_len(s, n);
	if (w != n)
		st->backslashes++;
	return w;
}

/* v's text in tmp, its trailing backslashes cut (counted). */
static void
json_text(gk_json v, gk_buf *tmp, gk_influx_stats *st)
{
	gk_buf_reset(tmp);
	gk_event_text(v, tmp);
	tmp->len = name_len(tmp->data, tmp->len, st);
}

/* ",key=value" unless the key or value is empty. */
static void
tag(gk_buf *out, const char *k, size_t kn, const char *v, size_t vn,
    gk_influx_stats *st)
{
	kn = name_len(k, kn, st);
	vn = name_len(v, vn, st);
	if (!vn || !kn)
		return;
	gk_buf_addc(out, ',');
	gk_influx_name(out, k, kn, false);
	gk_buf_addc(out, '=');
	gk_influx_name(out, v, vn, false);
}

static void
json_tag(gk_buf *out, gk_json k, gk_json v, gk_buf *kt, gk_buf *vt,
         gk_influx_stats *st)
{
	gk_buf_reset(kt);
	gk_buf_reset(vt);
	gk_event_text(k, kt);
	gk_event_text(v, vt);
	tag(out, kt->data, kt->len, vt->data, vt->len, st);
}

static void
common_tags(gk_buf *out, const gk_event *ev, const gk_influx_opts *o, bool pid,
            gk_buf *kt, gk_buf *vt, gk_influx_stats *st)
{
	static const gk_json proc_k = {GK_JSON_NUMBER, "proc", 4};
	static const gk_json svc_k = {GK_JSON_NUMBER, "svc", 3};
	static const gk_json pid_k = {GK_JSON_NUMBER, "pid", 3};
	if (ev->svc.type != GK_JSON_NONE)
		json_tag(out, svc_k, ev->svc, kt, vt, st);
	if (ev->proc.type != GK_JSON_NONE)
		json_tag(out, proc_k, ev->proc, kt, vt, st);
	if (o->host && *o->host)
		tag(out, "host", 4, o->host, strlen(o->host), st);
	if (pid && ev->pid.type != GK_JSON_NONE)
		json_tag(out, pid_k, ev->pid, kt, vt, st);
}

/* ",key=number" or " key=number" for the first. */
static bool
num_field(gk_buf *out, bool *first, const char *k, size_t kn, double v,
    gk_influx_stats *st)
{
	if (!isfinite(v)) {
		st->not_finite++;
		return false;
	}
	gk_buf_addc(out, *first ? ' ' : ',');
	*first = false;
	gk_influx_name(out, k, kn, false);
	gk_buf_addc(out, '=');
	gk_fmt_value(out, v);
	return true;
}

static void
timestamp(gk_buf *out, uint64_t ns)
{
	if (ns) {
		gk_buf_addc(out, ' ');
		gk_buf_adduint(out, ns);
	}
	gk_buf_addc(out, '\n');
}

/* A label name that must be renamed: a tag of ours, or "time". */
static bool
reserved_tag(const char *s, size_t n)
{
	static const char *const names[] = {"svc", "proc", "host", "pid",
	                                    "time"};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		if (strlen(names[i]) == n && !memcmp(s, names[i], n))
			return true;
	return false;
}

/* True when keys (each a size_t length, then its bytes) holds k; else k
 * is added to it. */
static bool
key_seen(gk_buf *keys, const char *k, size_t n)
{
	for (size_t off = 0; off < keys->len;) {
		size_t l;
		memcpy(&l, keys->data + off, sizeof l);
		off += sizeof l;
		if (l == n && !memcmp(keys->data + off, k, n))
			return true;
		off += l;
	}
	gk_buf_add(keys, (const char *)&n, sizeof n);
	gk_buf_add(keys, k, n);
	return false;
}

static size_t
metric_points(const gk_event *ev, const gk_influx_opts *o, gk_buf *out,
    gk_influx_stats *st)
{
	gk_buf kt = {0}, vt = {0}, name = {0}, keys = {0};
	uint64_t ns = gk_event_ts_ns(ev->ts);
	size_t points = 0;
	gk_snap_iter si;
	gk_snap_family f;
	gk_snap_begin(&si, ev);
	while (gk_snap_next(&si, &f)) {
		gk_json_iter it;
		gk_snap_series s;
		gk_snap_series_begin(&it, &f);
		while (gk_snap_series_next(&it, &f, &s)) {
			size_t start = out->len;
			json_text(f.name, &name, st);
			gk_influx_name(out, name.data, name.len, true);
			if (out->len == start) { /* no measurement */
				st->empty_keys++;
				continue;
			}
			gk_json_iter li;
			gk_json k, v;
			gk_json_iter_init(&li, s.labels);
			gk_buf_reset(&keys);
			while (gk_json_iter_next(&li, &k, &v)) {
				/* A label named as a tag of ours is renamed,
				 * and so is "time", which InfluxDB refuses as a
				 * tag key (the point is dropped): the name as
				 * written, its trailing backslashes cut
				 * ("time\"). */
				json_text(k, &vt, st);
				gk_buf_reset(&kt);
				if (reserved_tag(vt.data, vt.len))
					gk_buf_adds(&kt, "label_");
				gk_buf_add(&kt, vt.data, vt.len);
				json_text(v, &vt, st);
				if (!kt.len || !vt.len)
					continue; /* left out by tag() */
				/* A key twice ("label_svc" beside a renamed
				 * "svc") makes InfluxDB drop the point: the
				 * first is kept. */
				if (key_seen(&keys, kt.data, kt.len)) {
					st->dup_tags++;
					continue;
				}
				tag(out, kt.data, kt.len, vt.data, vt.len, st);
			}
			common_tags(out, ev, o, o->pid_tag, &kt, &vt, st);
			bool first = true;
			if (f.type != GK_HISTOGRAM) {
				num_field(out, &first, "value", 5, s.value, st);
			} else {
				num_field(out, &first, "sum", 3, s.sum, st);
				num_field(out, &first, "count", 5, s.count, st);
				gk_json_iter bi;
				gk_json_iter_init(&bi, s.buckets);
				double le, c;
				while (gk_snap_bucket_next(&bi, &le, &c)) {
					gk_buf_reset(&name);
					gk_fmt_float(&name, le);
					num_field(out, &first, name.data, name.len,
					    c, st);
				}
			}
			if (first) { /* no field: not a point */
				out->len = start;
				st->empty++;
				continue;
			}
			timestamp(out, ns);
			points++;
		}
	}
	gk_buf_free(&kt);
	gk_buf_free(&vt);
	gk_buf_free(&name);
	gk_buf_free(&keys);
	return points;
}

static size_t
log_point(const gk_event *ev, const gk_influx_opts *o, gk_buf *out,
    gk_influx_stats *st)
{
	gk_buf kt = {0}, vt = {0};
	gk_influx_name(out, o->logs, strlen(o->logs), true);
	enum gk_level lv = gk_event_level(ev);
	static const char *const names[] = {"debug", "info", "warn", "error",
	                                    "fatal"};
	tag(out, "level", 5, names[lv], strlen(names[lv]), st);
	common_tags(out, ev, o, false, &kt, &vt, st);
	/* msg first (every log event has one, "" when it had none). */
	gk_buf_adds(out, " msg=");
	gk_buf_reset(&vt);
	gk_event_text(ev->text, &vt);
	gk_influx_string(out, vt.data ? vt.data : "", vt.len);
	/* An integer field: its text as given (1.5i, 1e3i) would make
	 * InfluxDB refuse the point. */
	int64_t pid;
	if (gk_json_int(ev->pid, &pid)) {
		gk_buf_adds(out, ",pid=");
		gk_buf_addf(out, "%lldi", (long long)pid);
	} else if (ev->pid.type != GK_JSON_NONE) {
		st->bad_pid++;
	}
	for (unsigned i = 0; i < ev->msg->nfields; i++) {
		gk_json k = ev->msg->field[i].key, v = ev->msg->field[i].value;
		if (gk_event_common_key(k) || v.type == GK_JSON_NULL)
			continue;
		json_text(k, &kt, st);
		if (!kt.len) { /* "": InfluxDB refuses the whole batch */
			st->empty_keys++;
			continue;
		}
		gk_buf_addc(out, ',');
		gk_influx_name(out, kt.data, kt.len, false);
		/* InfluxDB refuses that key (also time\ once cut) */
		if (kt.len == 4 && !memcmp(kt.data, "time", 4))
			gk_buf_addc(out, '_');
		gk_buf_addc(out, '=');
		double d;
		switch (v.type) {
		case GK_JSON_NUMBER:
			/* Always a float: a member that is 1 in one event and
			 * 1.5 in the next keeps one field type. */
			if (gk_json_double(v, &d) && isfinite(d)) {
				gk_fmt_value(out, d);
				break;
			}
			gk_influx_string(out, v.p, v.len);
			break;
		case GK_JSON_TRUE: gk_buf_adds(out, "true"); break;
		case GK_JSON_FALSE: gk_buf_adds(out, "false"); break;
		case GK_JSON_STRING:
			gk_buf_reset(&vt);
			gk_json_string(v, &vt);
			gk_influx_string(out, vt.data ? vt.data : "", vt.len);
			break;
		default: /* objects, arrays: their JSON text */
			gk_influx_string(out, v.p, v.len);
			break;
		}
	}
	timestamp(out, gk_event_ts_ns(ev->ts));
	gk_buf_free(&kt);
	gk_buf_free(&vt);
	return 1;
}

/* InfluxDB holds times up to 2262-04-11T23:47:16.854775806Z (int64
 * nanoseconds): it refuses a point of a later ts.  The year is read too,
 * as nanoseconds past 2554 no longer fit in 64 bits. */
static bool
time_ok(gk_json ts)
{
	if (ts.type == GK_JSON_STRING && ts.len >= 6) {
		int y = 0;
		for (size_t i = 1; i <= 4; i++) {
			if (ts.p[i] < '0' || ts.p[i] > '9')
				return true; /* not a time: none is written */
			y = y * 10 + (ts.p[i] - '0');
		}
		if (y > 2262)
			return false;
	}
	return gk_event_ts_ns(ts) <= 9223372036854775806ull;
}

size_t
gk_influx_event(const gk_event *ev, const gk_influx_opts *o, gk_buf *out,
    gk_influx_stats *st)
{
	bool metrics = ev->type == GK_EV_METRICS;
	if (!metrics && !(ev->type == GK_EV_LOG && o->logs && *o->logs))
		return 0;
	if (!time_ok(ev->ts)) {
		st->bad_time++;
		return 0;
	}
	return metrics ? metric_points(ev, o, out, st)
	               : log_point(ev, o, out, st);
}
