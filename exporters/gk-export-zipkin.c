/*
 * gk-export-zipkin: send the span events read on stdin to Zipkin, as a
 * JSON array of v2 spans POSTed to /api/v2/spans.  Other events are not
 * for Zipkin and are passed over.  See gk-export-zipkin(1); the encoding
 * is in lib/zipkin_json.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log_gate.h"
#include "otlp.h"

#define MAX_HEADERS 32

static struct {
	gk_ehttp *h;
	gk_buf rec;
	gk_series *m_invalid, *m_skipped;
	gk_log_gate invalid_gate;
} Z;

static void
invalid(gk_export *ex, const char *why)
{
	gk_export_dropped(ex, 1);
	gk_counter_add(Z.m_invalid, 1);
	/* at most one a second, with the count */
	gk_log_gate_error(&Z.invalid_gate, "span not encodable for Zipkin: dropped", why);
}

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)arg;
	if (ev->type != GK_EV_SPAN) {
		gk_counter_add(Z.m_skipped, 1);
		return;
	}
	const char *why = NULL;
	gk_buf_reset(&Z.rec);
	if (gk_zipkin_span(ev, &Z.rec, &why) < 0)
		invalid(ex, why);
	else
		gk_ehttp_add(Z.h, Z.rec.data, Z.rec.len);
	if (Z.rec.cap > (1u << 20))
		gk_buf_free(&Z.rec);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)arg;
	gk_ehttp_drain_export(Z.h, ex);
}

static gk_ehttp_cli cli;

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gk-export-zipkin [OPTIONS] [URL]\n"
	    "Send span events to Zipkin: JSON v2 spans POSTed to "
	    "URL/api/v2/spans.\n"
	    "  URL                    base URL (http://127.0.0.1:9411)\n"
	    "  -H, --header K=V       add a request header (auth); repeatable\n"
	    "  -z, --gzip             gzip bodies (Content-Encoding: gzip)\n");
	gk_ehttp_usage(f, &cli, "span", "");
	fprintf(f,
	    "  -h, --help             this help\n"
	    "  -V, --version          version\n");
}

int
main(int argc, char **argv)
{
	gk_events_init("gk-export-zipkin");
	gk_ehttp_opts o = {.content_type = "application/json",
	                   .prefix = "[",
	                   .separator = ",",
	                   .suffix = "]",
	                   .batch_records = 1000,
	                   .backoff_min_ms = 500};
	gk_ehttp_cli_init(&cli, &o, MAX_HEADERS, 4096);
	static const struct option opts[] = {
	    GK_EHTTP_LONGOPTS,
	    GK_EHTTP_LONGOPT_RETRY_MIN,
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
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-zipkin"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	const char *base =
	    gk_ehttp_url_arg(argc, argv, "http://127.0.0.1:9411");
	gk_ehttp_cli_check(&cli, true);
	/* The base URL, or the full one already ending in /api/v2/spans. */
	char url[2048];
	size_t blen = strlen(base);
	while (blen && base[blen - 1] == '/')
		blen--;
	static const char path[] = "/api/v2/spans";
	if (blen >= sizeof path - 1 &&
	    !memcmp(base + blen - (sizeof path - 1), path, sizeof path - 1))
		snprintf(url, sizeof url, "%.*s", (int)blen, base);
	else
		snprintf(url, sizeof url, "%.*s%s", (int)blen, base, path);
	o.url = url;

	gk_export_def def = {.name = "zipkin", .on_event = on_event,
	                     .on_drain = on_drain};
	gk_export *ex = gk_export_new(&def);
	Z.m_invalid = gk_metric_series(gk_counter_new(
	    "gk_export_zipkin_invalid_total",
	    "Span events that could not be encoded (bad ids, times)", NULL));
	Z.m_skipped = gk_metric_series(gk_counter_new(
	    "gk_export_zipkin_skipped_total",
	    "Events passed over: not spans", NULL));
	Z.h = gk_ehttp_new(ex, &o);
	char f[2100];
	snprintf(f, sizeof f, "url=%s", url);
	gk_log(GK_INFO, "sending Zipkin v2 spans", f);
	int status = gk_export_run(ex);
	size_t left = gk_ehttp_pending(Z.h);
	gk_ehttp_free(Z.h);
	if (left) { /* what was dropped at exit shows in a last snapshot */
		gk_metrics_snapshot();
		gk_events_flush();
	}
	gk_buf_free(&Z.rec);
	gk_ehttp_cli_free(&cli);
	return status;
}
