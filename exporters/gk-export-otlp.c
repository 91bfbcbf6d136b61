/*
 * gk-export-otlp: send the events read on stdin to an OpenTelemetry
 * collector over OTLP/HTTP with JSON encoding: spans to /v1/traces,
 * metrics snapshots to /v1/metrics, every other event to /v1/logs.
 * See gk-export-otlp(1); the encoding is in lib/otlp_json.c.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log_gate.h"
#include "otlp.h"

#define MAX_HEADERS 32
#define MAX_PROCS 10000

enum { SIG_TRACES, SIG_METRICS, SIG_LOGS, NSIG_ };

static const char *const sig_name[NSIG_] = {"traces", "metrics", "logs"};
static const char *const sig_prefix[NSIG_] = {
    "{\"resourceSpans\":[", "{\"resourceMetrics\":[", "{\"resourceLogs\":["};

/* partialSuccess's count of what it rejected, per signal. */
static const char *const rejected_key[NSIG_] = {
    "rejectedSpans", "rejectedDataPoints", "rejectedLogRecords"};

static struct {
	gk_export *ex;
	gk_ehttp *h[NSIG_];
	int draining;
	gk_smap *starts; /* "proc\0pid" -> process start, ns (uint64_t *) */
	gk_buf rec, key;
	gk_series *m_invalid, *m_skipped;
	gk_series *m_rejected[NSIG_]; /* updated on the sender threads */
	gk_log_gate invalid_gate;
} O;

/* OTLP/HTTP: retry only what the specification calls retryable. */
static enum gk_ehttp_verdict
verdict(long status, void *arg)
{
	(void)arg;
	if (status >= 200 && status < 300)
		return GK_EHTTP_OK;
	if (status == 0 || status == 429 || status == 502 || status == 503 ||
	    status == 504)
		return GK_EHTTP_RETRY;
	return GK_EHTTP_DROP;
}

/* A count as OTLP's JSON writes an int64: a decimal string, or a number. */
static bool
count_of(gk_json v, uint64_t *out)
{
	int64_t i;
	if (v.type == GK_JSON_NUMBER && gk_json_int(v, &i) && i >= 0) {
		*out = (uint64_t)i;
		return true;
	}
	if (v.type != GK_JSON_STRING || v.len < 3 || v.len > 22)
		return false;
	uint64_t c = 0;
	for (size_t k = 1; k + 1 < v.len; k++) {
		if (v.p[k] < '0' || v.p[k] > '9' || c > UINT64_MAX / 10 - 1)
			return false;
		c = c * 10 + (uint64_t)(v.p[k] - '0');
	}
	*out = c;
	return true;
}

/*
 * OTLP/HTTP's partial success: a 200 whose body's partialSuccess counts
 * the items the collector rejected, with an errorMessage; they are lost
 * and must not be sent again.  A span or a log record is one record
 * here, so that many are dropped; a metrics record is a whole snapshot
 * and rejectedDataPoints counts points, so none is.  Every signal's
 * rejected items are counted in gk_export_otlp_rejected_total.  On the sender
 * thread (gk_ehttp_opts.partial).
 */
static size_t
partial(const char *body, size_t len, size_t n, uint64_t *rejected, char *msg,
        size_t cap, void *arg)
{
	int sig = (int)(intptr_t)arg;
	while (len && (unsigned char)body[len - 1] <= ' ')
		len--;
	while (len && (unsigned char)*body <= ' ')
		body++, len--;
	gk_wire_error err;
	if (!len || *body != '{' || gk_json_validate(body, len, &err) < 0)
		return 0; /* not JSON (or cut at 64 KiB): a full success */
	gk_json ps = gk_json_member((gk_json){GK_JSON_OBJECT, body, len},
	                            "partialSuccess");
	if (ps.type != GK_JSON_OBJECT)
		return 0;
	if (!count_of(gk_json_member(ps, rejected_key[sig]), rejected))
		*rejected = 0;
	gk_counter_add(O.m_rejected[sig], (double)*rejected); /* atomic */
	gk_json em = gk_json_member(ps, "errorMessage");
	if (em.type == GK_JSON_STRING) {
		gk_buf b = {0};
		gk_json_string(em, &b);
		size_t k = 0;
		for (; k < b.len && k + 1 < cap; k++) {
			unsigned char c = (unsigned char)b.data[k];
			msg[k] = c < ' ' || c == 0x7f ? ' ' : (char)c;
		}
		/* Cut at the bound: no half of a UTF-8 character. */
		if (k < b.len && (b.data[k] & 0xc0) == 0x80) {
			while (k && (msg[k - 1] & 0xc0) == 0x80)
				k--;
			if (k)
				k--;
		}
		msg[k] = 0;
		gk_buf_free(&b);
	}
	if (sig == SIG_METRICS)
		return 0;
	return *rejected < n ? (size_t)*rejected : n;
}

static void
invalid(gk_export *ex, const char *why)
{
	gk_export_dropped(ex, 1);
	gk_counter_add(O.m_invalid, 1);
	/* at most one a second, with the count */
	gk_log_gate_error(&O.invalid_gate, "event not encodable as OTLP: dropped", why);
}

/* The start of the process of a metrics event: from its snapshot, or as
 * remembered from an earlier part. */
static uint64_t
process_start(const gk_event *ev)
{
	gk_buf *k = &O.key;
	gk_buf_reset(k);
	gk_event_text(ev->proc, k);
	gk_buf_addc(k, 0);
	gk_event_text(ev->pid, k);
	uint64_t ns = 0;
	uint64_t *slot = gk_smap_get(O.starts, k->data, k->len);
	if (gk_otlp_snapshot_start(ev, &ns)) {
		if (!slot) {
			if (gk_smap_count(O.starts) >= MAX_PROCS)
				return ns; /* not remembered past the bound */
			slot = gk_xmalloc(sizeof *slot);
			*gk_smap_slot(O.starts, k->data, k->len, true) = slot;
		}
		*slot = ns;
		return ns;
	}
	return slot ? *slot : 0;
}

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)arg;
	const char *why = NULL;
	int sig = ev->type == GK_EV_SPAN      ? SIG_TRACES
	          : ev->type == GK_EV_METRICS ? SIG_METRICS
	                                      : SIG_LOGS;
	if (!O.h[sig]) { /* a signal not in --signals: passed over */
		gk_counter_add(O.m_skipped, 1);
		return;
	}
	int r;
	gk_buf_reset(&O.rec);
	if (sig == SIG_TRACES)
		r = gk_otlp_span(ev, &O.rec, &why);
	else if (sig == SIG_METRICS)
		r = gk_otlp_metrics(ev, process_start(ev), &O.rec, &why);
	else
		r = gk_otlp_log(ev, &O.rec, &why);
	if (r < 0)
		invalid(ex, why);
	else if (r == 0)
		gk_ehttp_add(O.h[sig], O.rec.data, O.rec.len);
	if (O.rec.cap > (1u << 20))
		gk_buf_free(&O.rec);
}

static void
drained(gk_ehttp *h, void *arg)
{
	(void)h;
	gk_export *ex = arg;
	if (--O.draining == 0)
		gk_export_done(ex);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)arg;
	O.draining = 1; /* held until every drain is asked for */
	for (int i = 0; i < NSIG_; i++) {
		if (O.h[i]) {
			O.draining++;
			gk_ehttp_drain(O.h[i], drained, ex);
		}
	}
	drained(NULL, ex);
}

static gk_ehttp_cli cli;

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gk-export-otlp [OPTIONS] [URL]\n"
	    "Send events to an OpenTelemetry collector over OTLP/HTTP (JSON):\n"
	    "spans to URL/v1/traces, metrics to URL/v1/metrics, the others "
	    "to URL/v1/logs.\n"
	    "  URL                    base URL (http://127.0.0.1:4318)\n"
	    "  -H, --header K=V       add a request header (auth); repeatable\n"
	    "  -z, --gzip             gzip bodies (Content-Encoding: gzip)\n"
	    "  --signals LIST         of traces,metrics,logs (all)\n");
	gk_ehttp_usage(f, &cli, "record", ", per signal");
	fprintf(f,
	    "  -h, --help             this help\n"
	    "  -V, --version          version\n");
}

int
main(int argc, char **argv)
{
	gk_events_init("gk-export-otlp");
	gk_ehttp_opts o = {.content_type = "application/json",
	                   .separator = ",",
	                   .suffix = "]}",
	                   .batch_records = 1000,
	                   .max_bytes = 1u << 20, /* per signal: 3 in all */
	                   .backoff_min_ms = 500,
	                   .verdict = verdict,
	                   .partial = partial};
	gk_ehttp_cli_init(&cli, &o, MAX_HEADERS, 4096);
	bool want[NSIG_] = {true, true, true};
	static const struct option opts[] = {
	    GK_EHTTP_LONGOPTS,
	    GK_EHTTP_LONGOPT_RETRY_MIN,
	    {"signals", required_argument, NULL, 's'},
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
		case 's': {
			want[0] = want[1] = want[2] = false;
			char *dup = gk_xstrdup(optarg), *save = NULL;
			for (char *t = strtok_r(dup, ",", &save); t;
			     t = strtok_r(NULL, ",", &save)) {
				int i;
				for (i = 0; i < NSIG_; i++)
					if (!strcmp(t, sig_name[i]))
						break;
				if (i == NSIG_)
					gk_usage_error("bad --signals: %s "
					               "(expected traces, "
					               "metrics, logs)",
					    t);
				want[i] = true;
			}
			free(dup);
			break;
		}
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-otlp"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	const char *base =
	    gk_ehttp_url_arg(argc, argv, "http://127.0.0.1:4318");
	gk_ehttp_cli_check(&cli, true);

	gk_export_def def = {.name = "otlp", .on_event = on_event,
	                     .on_drain = on_drain};
	O.ex = gk_export_new(&def);
	O.starts = gk_smap_new();
	O.m_invalid = gk_metric_series(gk_counter_new(
	    "gk_export_otlp_invalid_total",
	    "Events that could not be encoded as OTLP (bad ids, times)", NULL));
	O.m_skipped = gk_metric_series(
	    gk_counter_new("gk_export_otlp_skipped_total",
	                   "Events of a signal not in --signals", NULL));
	/* Every signal's series now: the sender threads only add. */
	gk_metric *rej = gk_counter_new(
	    "gk_export_otlp_rejected_total",
	    "Items a collector's partialSuccess said it rejected: spans, "
	    "data points, log records",
	    "signal");
	for (int i = 0; i < NSIG_; i++)
		O.m_rejected[i] = gk_series_getv(
		    rej, (const char *const[]){sig_name[i], NULL});
	size_t blen = strlen(base);
	while (blen && base[blen - 1] == '/')
		blen--;
	char url[NSIG_][2048];
	for (int i = 0; i < NSIG_; i++) {
		if (!want[i])
			continue;
		snprintf(url[i], sizeof url[i], "%.*s/v1/%s", (int)blen, base,
		    sig_name[i]);
		o.url = url[i];
		o.prefix = sig_prefix[i];
		o.verdict_arg = (void *)(intptr_t)i;
		O.h[i] = gk_ehttp_new(O.ex, &o);
	}
	char f[2100];
	snprintf(f, sizeof f, "url=%.*s", (int)blen, base);
	gk_log(GK_INFO, "sending OTLP/HTTP JSON", f);
	int status = gk_export_run(O.ex);
	size_t left = 0;
	for (int i = 0; i < NSIG_; i++) {
		if (!O.h[i])
			continue;
		left += gk_ehttp_pending(O.h[i]);
		gk_ehttp_free(O.h[i]);
	}
	if (left) { /* what was dropped at exit shows in a last snapshot */
		gk_metrics_snapshot();
		gk_events_flush();
	}
	size_t pos = 0;
	const char *key;
	void *val;
	while (gk_smap_next(O.starts, &pos, &key, &val))
		free(val);
	gk_smap_free(O.starts);
	gk_buf_free(&O.rec);
	gk_buf_free(&O.key);
	gk_ehttp_cli_free(&cli);
	return status;
}
