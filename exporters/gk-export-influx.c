/*
 * gk-export-influx: write the metrics snapshots and log events read on
 * stdin to InfluxDB as line protocol points, batched and POSTed with
 * libcurl: /write?db= (1.x) or /api/v2/write?org=&bucket= with a token
 * (2.x).  See gk-export-influx(1).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export.h"
#include "influx_line.h"

#define MAX_HEADERS 16

static struct {
	gk_ehttp *h;
	gk_influx_opts o;
	gk_influx_stats st, st_seen;
	gk_buf out;
	gk_series *m_points, *m_not_finite, *m_empty, *m_empty_keys,
	    *m_dup_tags, *m_backslashes, *m_bad_pid, *m_bad_time, *m_skipped;
} I;

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)ex;
	(void)arg;
	/* Spans, access events, and logs with --no-logs: passed over. */
	if (ev->type != GK_EV_METRICS && (ev->type != GK_EV_LOG || !I.o.logs)) {
		gk_counter_add(I.m_skipped, 1);
		return;
	}
	gk_buf_reset(&I.out);
	size_t n = gk_influx_event(ev, &I.o, &I.out, &I.st);
	/* One record per point: a batch never splits a line. */
	for (size_t off = 0; n && off < I.out.len;) {
		const char *nl = memchr(I.out.data + off, '\n', I.out.len - off);
		size_t len = (size_t)(nl - (I.out.data + off));
		gk_ehttp_add(I.h, I.out.data + off, len);
		off += len + 1;
	}
	gk_counter_add(I.m_points, (double)n);
	/* What gk_influx_event counted since the last event. */
#define DELTA(series, field)                                              \
	if (I.st.field != I.st_seen.field)                                \
		gk_counter_add(I.series, (double)(I.st.field - I.st_seen.field));
	DELTA(m_not_finite, not_finite)
	DELTA(m_empty, empty)
	DELTA(m_empty_keys, empty_keys)
	DELTA(m_dup_tags, dup_tags)
	DELTA(m_backslashes, backslashes)
	DELTA(m_bad_pid, bad_pid)
	DELTA(m_bad_time, bad_time)
#undef DELTA
	I.st_seen = I.st;
	if (I.out.cap > (1u << 20))
		gk_buf_free(&I.out);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)arg;
	gk_ehttp_drain_export(I.h, ex);
}

/*
 * How many points of a rejected batch InfluxDB dropped.  A 1.x "partial
 * write" (a field of another type, a key it refuses) wrote the others
 * and says how many it dropped: {"error":"partial write: ... dropped=N"}.
 * Any other answer: the whole batch (counted dropped, though InfluxDB may
 * have written some).
 */
static size_t
refused(long status, const char *body, size_t len, size_t n, void *arg)
{
	(void)status;
	(void)arg;
	static const char pw[] = "partial write", dr[] = "dropped=",
	                  up[] = "unable to parse";
	if (!memmem(body, len, pw, sizeof pw - 1))
		return n;
	/* Lines it could not parse are not in its dropped=N (1.6 says
	 * dropped=0 for them): the whole batch, then, to be safe. */
	if (memmem(body, len, up, sizeof up - 1))
		return n;
	/* The last dropped=: the error text before it may quote a point. */
	const char *p = NULL;
	for (const char *q = body, *end = body + len;
	     (q = memmem(q, (size_t)(end - q), dr, sizeof dr - 1));
	     q += sizeof dr - 1)
		p = q + sizeof dr - 1;
	if (!p)
		return n;
	size_t d = 0, digits = 0;
	for (; p < body + len && *p >= '0' && *p <= '9' && digits < 19;
	     p++, digits++)
		d = d * 10 + (size_t)(*p - '0');
	return digits && d < n ? d : n;
}

static gk_ehttp_cli cli;

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gk-export-influx --db DB [--rp RP] [OPTIONS] [URL]\n"
	    "       gk-export-influx --org ORG --bucket B --token-file F "
	    "[OPTIONS] [URL]\n"
	    "Write metrics snapshots and log events as InfluxDB line protocol "
	    "points.\n"
	    "  URL                    base URL (http://127.0.0.1:8086)\n"
	    "  --db DB                1.x: POST URL/write?db=DB\n"
	    "  --rp RP                1.x: the retention policy\n"
	    "  --org ORG              2.x: POST URL/api/v2/write?org=ORG&"
	    "bucket=B\n"
	    "  --bucket B             2.x: the bucket\n"
	    "  --token-file FILE      2.x: Authorization: Token (first line "
	    "of FILE;\n"
	    "                         else $INFLUX_TOKEN)\n"
	    "  --logs-measurement M   measurement of log events (logs)\n"
	    "  --no-logs              metrics only\n"
	    "  --pid-tag              a pid tag on metric points\n"
	    "  -H, --header K=V       add a request header; repeatable\n"
	    "  -z, --gzip             gzip bodies\n");
	gk_ehttp_usage(f, &cli, "point", "");
	fprintf(f,
	    "  -h, --help             this help\n"
	    "  -V, --version          version\n");
}

/* Append v percent-encoded for a query string. */
static void
add_query_value(gk_buf *b, const char *v)
{
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		    c == '.' || c == '~')
			gk_buf_addc(b, (char)c);
		else
			gk_buf_addf(b, "%%%02X", c);
	}
}

static char *
read_token(const char *file)
{
	if (!file) {
		const char *e = getenv("INFLUX_TOKEN");
		return e && *e ? gk_xstrdup(e) : NULL;
	}
	FILE *f = fopen(file, "r");
	if (!f)
		gk_fatal(66 /* EX_NOINPUT */, "unable to read %s: %m",
		    file);
	char line[4096];
	char *r = fgets(line, sizeof line, f);
	fclose(f);
	if (!r)
		gk_usage_error("bad --token-file: %s (empty)", file);
	line[strcspn(line, "\r\n")] = 0;
	if (!*line)
		gk_usage_error("bad --token-file: %s (empty first line)", file);
	return gk_xstrdup(line);
}

int
main(int argc, char **argv)
{
	gk_events_init("gk-export-influx");
	gk_ehttp_opts o = {.content_type = "text/plain; charset=utf-8",
	                   .refused = refused,
	                   .separator = "\n",
	                   .backoff_min_ms = 500};
	gk_ehttp_cli_init(&cli, &o, MAX_HEADERS, 4096);
	cli.no_retry_min = true; /* --retry-max lowers the first delay */
	const char *db = NULL, *rp = NULL, *org = NULL, *bucket = NULL;
	const char *token_file = NULL;
	I.o.logs = "logs";
	static const struct option opts[] = {
	    {"db", required_argument, NULL, 'd'},
	    {"rp", required_argument, NULL, 'R'},
	    {"org", required_argument, NULL, 'o'},
	    {"bucket", required_argument, NULL, 'B'},
	    {"token-file", required_argument, NULL, 'T'},
	    {"logs-measurement", required_argument, NULL, 'L'},
	    {"no-logs", no_argument, NULL, 'N'},
	    {"pid-tag", no_argument, NULL, 'P'},
	    GK_EHTTP_LONGOPTS,
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":" GK_EHTTP_SHORTOPTS "hV", opts,
	            NULL)) != -1) {
		if (gk_ehttp_option(&cli, c, optarg))
			continue;
		switch (c) {
		case 'd': db = optarg; break;
		case 'R': rp = optarg; break;
		case 'o': org = optarg; break;
		case 'B': bucket = optarg; break;
		case 'T': token_file = optarg; break;
		case 'L':
			if (!*optarg)
				gk_usage_error("bad --logs-measurement: empty");
			/* InfluxDB cannot read a trailing backslash. */
			if (optarg[strlen(optarg) - 1] == '\\')
				gk_usage_error(
				    "bad --logs-measurement: %s (ends "
				    "with a backslash)",
				    optarg);
			I.o.logs = optarg;
			break;
		case 'N': I.o.logs = NULL; break;
		case 'P': I.o.pid_tag = true; break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-influx"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	const char *base =
	    gk_ehttp_url_arg(argc, argv, "http://127.0.0.1:8086");
	bool v2 = org || bucket;
	if (v2 && db)
		gk_usage_error("--db (InfluxDB 1.x) and --org/--bucket (2.x) "
		               "exclude each other");
	if (!v2 && !db)
		gk_usage_error("expected --db DB (1.x) or --org ORG --bucket B "
		               "(2.x)");
	if (v2 && (!org || !bucket))
		gk_usage_error("2.x needs both --org and --bucket");
	/* o.headers is cli.headers: the token's, added below, is one more
	 * (there is room for it and the NULL). */
	gk_ehttp_cli_check(&cli, true);
	gk_buf url = {0};
	size_t blen = strlen(base);
	while (blen && base[blen - 1] == '/')
		blen--;
	gk_buf_add(&url, base, blen);
	char *auth = NULL;
	if (v2) {
		char *token = read_token(token_file);
		if (!token)
			gk_usage_error("2.x needs a token: --token-file FILE or "
			               "INFLUX_TOKEN");
		size_t n = strlen(token) + 32;
		auth = gk_xmalloc(n);
		snprintf(auth, n, "Authorization: Token %s", token);
		free(token);
		cli.headers[cli.nheaders++] = auth;
		gk_buf_adds(&url, "/api/v2/write?org=");
		add_query_value(&url, org);
		gk_buf_adds(&url, "&bucket=");
		add_query_value(&url, bucket);
	} else {
		gk_buf_adds(&url, "/write?db=");
		add_query_value(&url, db);
		if (rp) {
			gk_buf_adds(&url, "&rp=");
			add_query_value(&url, rp);
		}
	}
	gk_buf_adds(&url, "&precision=ns");
	o.url = gk_buf_cstr(&url);
	char host[256];
	if (gethostname(host, sizeof host - 1) == 0 && host[0]) {
		host[sizeof host - 1] = 0;
		I.o.host = host;
	}

	gk_export_def def = {.name = "influx", .on_event = on_event,
	                     .on_drain = on_drain};
	gk_export *ex = gk_export_new(&def);
	I.m_points = gk_metric_series(gk_counter_new(
	    "gk_export_influx_points_total", "Points made from events", NULL));
	I.m_not_finite = gk_metric_series(gk_counter_new(
	    "gk_export_influx_not_finite_total",
	    "NaN or infinite values left out of their point", NULL));
	I.m_empty = gk_metric_series(gk_counter_new(
	    "gk_export_influx_empty_total",
	    "Series with no finite value: no point", NULL));
	I.m_empty_keys = gk_metric_series(gk_counter_new(
	    "gk_export_influx_empty_key_total",
	    "Members with an empty name left out of their point, and series "
	    "of a metric with an empty name", NULL));
	I.m_dup_tags = gk_metric_series(gk_counter_new(
	    "gk_export_influx_duplicate_tag_total",
	    "Labels left out of their point: a tag of that key was there "
	    "already (label_svc beside svc)", NULL));
	I.m_backslashes = gk_metric_series(gk_counter_new(
	    "gk_export_influx_trailing_backslash_total",
	    "Names (measurement, tag key or value, field key) whose trailing "
	    "backslashes were left out: InfluxDB cannot read them",
	    NULL));
	I.m_bad_pid = gk_metric_series(gk_counter_new(
	    "gk_export_influx_bad_pid_total",
	    "Log events whose pid was not an integer: left out of the point",
	    NULL));
	I.m_bad_time = gk_metric_series(gk_counter_new(
	    "gk_export_influx_bad_time_total",
	    "Events of a ts past what InfluxDB holds (2262-04-11): not written",
	    NULL));
	I.m_skipped = gk_metric_series(gk_counter_new(
	    "gk_export_influx_skipped_total",
	    "Events not written: spans, access events, logs with --no-logs",
	    NULL));
	I.h = gk_ehttp_new(ex, &o);
	/* The URL without the query: the token is never in it anyway. */
	char f[2100];
	snprintf(f, sizeof f, "url=%s", o.url);
	gk_log(GK_INFO, "writing InfluxDB line protocol", f);
	int status = gk_export_run(ex);
	size_t left = gk_ehttp_pending(I.h);
	gk_ehttp_free(I.h);
	if (left) { /* what was dropped at exit shows in a last snapshot */
		gk_metrics_snapshot();
		gk_events_flush();
	}
	gk_buf_free(&I.out);
	gk_buf_free(&url);
	gk_ehttp_cli_free(&cli);
	free(auth);
	return status;
}
