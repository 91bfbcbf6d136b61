/*
 * gk-export-loki: events to Grafana Loki's push API, POST
 * /loki/api/v1/push (JSON), labelled by chosen members, batched by size
 * and time, retried in order on 429 and 5xx.  See gk-export-loki(1).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log_gate.h"
#include "logship.h"

/* Loki's default max_label_names_per_series: a stream with more label
 * names is refused, and with it the whole push (--max-label-names). */
#define DEFAULT_MAX_LABELS 15
#define MAX_LABELS_BOUND 1000
#define MAX_HEADERS 16

static struct {
	gk_export *ex;
	gk_ehttp *http;
	gk_loki *loki;
	unsigned types;
	gk_buf entry;
	size_t max_line; /* Loki's max_line_size; 0: none */
	gk_series *m_skipped, *m_too_long;
	gk_series *m_rejected; /* updated on the sender thread */
	gk_log_gate too_long_gate;
} L;

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)arg;
	if (!(L.types & GK_EVMASK(ev->type))) {
		gk_counter_add(L.m_skipped, 1);
		return;
	}
	/* Loki refuses a longer line, answering 400 for the whole push
	 * (though it writes the rest): dropped here, alone, and counted. */
	if (L.max_line && ev->len > L.max_line) {
		gk_export_dropped(ex, 1);
		gk_counter_add(L.m_too_long, 1);
		gk_log_gate_error(&L.too_long_gate,
		                  "event longer than --max-line-size: dropped",
		                  "Loki would refuse it");
		return;
	}
	gk_buf_reset(&L.entry);
	gk_loki_entry(L.loki, ev, &L.entry);
	gk_ehttp_add(L.http, L.entry.data, L.entry.len);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)arg;
	gk_ehttp_drain_export(L.http, ex);
}

static bool
label_name_ok(const char *s, size_t n)
{
	if (!n || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return !(n >= 2 && s[0] == '_' && s[1] == '_');
}

static void
too_many_labels(uint64_t max)
{
	gk_usage_error("too many labels: --label (svc and level by default) "
	               "and --static-label give at most %llu names, as Loki "
	               "takes per stream (--max-label-names)",
	               (unsigned long long)max);
}

/*
 * A 4xx other than 408 and 429: Loki refused entries (too old, out of
 * order, bad labels).  It writes the entries of the push it accepts but
 * names only one error, not which entries it refused, so none can be
 * sent again without writing the others twice: the batch is counted
 * dropped (as many as Loki may have refused), and the push counted here.
 * On the sender thread, with verdict_arg.
 */
static size_t
refused(long status, const char *body, size_t len, size_t n, void *arg)
{
	(void)body, (void)len, (void)arg;
	if (status >= 400 && status < 500)
		gk_counter_add(L.m_rejected, 1); /* atomic */
	return n;
}

static size_t
name_len(const char *s)
{
	const char *eq = strchr(s, '=');
	return eq ? (size_t)(eq - s) : strlen(s);
}

/* Loki refuses a stream with a label name twice, and the push with it. */
static void
check_twice(const char *const *labels, size_t nlabels,
            const char *const *statics, size_t nstatic)
{
	const char **all = gk_xcalloc(nlabels + nstatic + 1, sizeof *all);
	size_t n = 0;
	for (size_t i = 0; i < nlabels; i++)
		all[n++] = labels[i];
	for (size_t i = 0; i < nstatic; i++)
		all[n++] = statics[i];
	for (size_t i = 0; i < n; i++) {
		size_t li = name_len(all[i]);
		for (size_t j = 0; j < i; j++)
			if (name_len(all[j]) == li &&
			    !memcmp(all[i], all[j], li))
				gk_usage_error("label %.*s given twice (by "
				               "--label or --static-label)",
				               (int)li, all[i]);
	}
	free(all);
}

static gk_ehttp_cli cli;

static void
usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: gk-export-loki [OPTIONS] [URL]\n"
	    "Send events to Grafana Loki: JSON POSTed to "
	    "URL/loki/api/v1/push.\n"
	    "  URL                    Loki's base URL (http://127.0.0.1:3100)\n"
	    "  -l, --label KEY        a member whose value is a label; "
	    "repeatable (svc, level)\n"
	    "  --static-label K=V     a label on every stream; repeatable\n"
	    "  --max-label-names N    label names per stream at most, as "
	    "Loki's max_label_names_per_series (15)\n"
	    "  --max-streams N        distinct label sets, then _overflow "
	    "(1000)\n"
	    "  --types LIST           event types sent (log,access)\n"
	    "  --tenant ID            X-Scope-OrgID header\n"
	    "  --max-line-size SIZE   longest event sent, as Loki's "
	    "max_line_size (256000; 0: any)\n"
	    "  -H, --header K=V       add a request header (auth); repeatable\n"
	    "  -z, --gzip             compress bodies (Content-Encoding: "
	    "gzip)\n");
	gk_ehttp_usage(f, &cli, "event", "");
	fprintf(f,
	    "  -h, --help             this help\n"
	    "  -V, --version          version\n");
}

int
main(int argc, char **argv)
{
	/* As many as the arguments; the bound is checked once all are read
	 * (--max-label-names may come after them). */
	const char **labels = gk_xcalloc((size_t)argc + 2, sizeof *labels);
	const char **statics = gk_xcalloc((size_t)argc + 1, sizeof *statics);
	size_t nlabels = 0, nstatic = 0;
	uint64_t max_labels = DEFAULT_MAX_LABELS;
	uint64_t max_streams = 1000;
	char tenant[300] = "";
	gk_ehttp_opts o = {.content_type = "application/json",
	                   .prefix = "{\"streams\":[",
	                   .separator = ",",
	                   .suffix = "]}",
	                   .batch_bytes = 512u << 10,
	                   .backoff_min_ms = 500,
	                   .backoff_max_ms = 30000,
	                   .refused = refused};
	L.types = GK_EVMASK(GK_EV_LOG) | GK_EVMASK(GK_EV_ACCESS);
	L.max_line = 256000; /* Loki's 256KB, as it reads sizes */
	gk_ehttp_cli_init(&cli, &o, MAX_HEADERS, 65536);
	static const struct option opts[] = {
	    {"label", required_argument, NULL, 'l'},
	    {"static-label", required_argument, NULL, 's'},
	    {"max-streams", required_argument, NULL, 'S'},
	    {"max-label-names", required_argument, NULL, 'N'},
	    {"types", required_argument, NULL, 'T'},
	    {"tenant", required_argument, NULL, 'O'},
	    {"max-line-size", required_argument, NULL, 'M'},
	    GK_EHTTP_LONGOPTS,
	    GK_EHTTP_LONGOPT_RETRY_MIN,
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":l:" GK_EHTTP_SHORTOPTS "hV", opts,
	            NULL)) != -1) {
		if (gk_ehttp_option(&cli, c, optarg))
			continue;
		switch (c) {
		case 'l':
			if (!label_name_ok(optarg, strlen(optarg)))
				gk_usage_error("bad --label: %s (expected a "
				               "Loki label name: letters, "
				               "digits, _)",
				               optarg);
			labels[nlabels++] = optarg;
			break;
		case 's': {
			const char *eq = strchr(optarg, '=');
			if (!eq || !eq[1] ||
			    !label_name_ok(optarg, (size_t)(eq - optarg)))
				gk_usage_error("bad --static-label: %s "
				               "(expected NAME=VALUE)",
				               optarg);
			/* Loki refuses a longer value, with the push. */
			if (strlen(eq + 1) > 2048)
				gk_usage_error("bad --static-label: %.*s=... "
				               "(value longer than 2048 "
				               "bytes)",
				               (int)(eq - optarg), optarg);
			statics[nstatic++] = optarg;
			break;
		}
		case 'S':
			if (gk_parse_uint(optarg, 1, 1000000, &max_streams) < 0)
				gk_usage_error(
				    "bad --max-streams: %s (expected "
				    "1 to 1000000)",
				    optarg);
			break;
		case 'N':
			if (gk_parse_uint(optarg, 1, MAX_LABELS_BOUND,
			                  &max_labels) < 0)
				gk_usage_error("bad --max-label-names: %s "
				               "(expected 1 to %d)",
				               optarg, MAX_LABELS_BOUND);
			break;
		case 'T':
			if (gk_evmask_parse(optarg, &L.types) < 0)
				gk_usage_error("bad --types: %s (expected a "
				               "list of log, access, span, "
				               "metrics, other, or all)",
				               optarg);
			break;
		case 'O':
			if (!*optarg || strpbrk(optarg, "\r\n"))
				gk_usage_error("bad --tenant: %s", optarg);
			/* One header however often given: the last wins. */
			if (!tenant[0])
				cli.headers[cli.nheaders++] = tenant;
			snprintf(tenant, sizeof tenant, "X-Scope-OrgID: %s",
			         optarg);
			break;
		case 'M':
			if (gk_parse_size(optarg, &L.max_line) < 0)
				gk_usage_error(
				    "bad --max-line-size: %s (expected "
				    "a size such as 256k, or 0)",
				    optarg);
			break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-loki"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	const char *base =
	    gk_ehttp_url_arg(argc, argv, "http://127.0.0.1:3100");
	gk_ehttp_cli_check(&cli, false);
	if (!nlabels) {
		labels[nlabels++] = "svc";
		labels[nlabels++] = "level";
	}
	if (nlabels + nstatic > max_labels)
		too_many_labels(max_labels);
	check_twice(labels, nlabels, statics, nstatic);
	/* URL/loki/api/v1/push, unless the path is given already. */
	gk_buf url = {0};
	gk_buf_adds(&url, base);
	if (!strstr(base, "/loki/api/v1/push")) {
		while (url.len && url.data[url.len - 1] == '/')
			url.len--;
		gk_buf_adds(&url, "/loki/api/v1/push");
	}
	o.url = gk_buf_cstr(&url);
	gk_export_def def = {
	    .name = "loki", .on_event = on_event, .on_drain = on_drain};
	L.ex = gk_export_new(&def);
	L.m_skipped = gk_metric_series(
	    gk_counter_new("gk_export_loki_skipped_total",
	                   "Events of a type not in --types", NULL));
	L.m_too_long = gk_metric_series(gk_counter_new(
	    "gk_export_loki_too_long_total",
	    "Events longer than --max-line-size, dropped", NULL));
	L.m_rejected = gk_metric_series(gk_counter_new(
	    "gk_export_loki_rejected_total",
	    "Pushes Loki refused with a 4xx other than 408 and 429, their "
	    "events counted dropped",
	    NULL));
	L.loki =
	    gk_loki_new(labels, nlabels, statics, nstatic, (size_t)max_streams);
	L.http = gk_ehttp_new(L.ex, &o);
	char f[600];
	snprintf(f, sizeof f, "url=%s", o.url);
	gk_log(GK_INFO, "sending events to Loki", f);
	int rc = gk_export_run(L.ex);
	gk_ehttp_free(L.http);
	gk_loki_free(L.loki);
	gk_buf_free(&url);
	gk_buf_free(&L.entry);
	free(labels);
	free(statics);
	return rc;
}
