/*
 * export_http_opts.c: the command-line options every gk_ehttp plugin
 * takes (see gk_ehttp_cli in export.h), their bounds, errors and usage
 * lines, so that gk-export-influx, -loki, -otlp and -zipkin parse them
 * alike.  Each plugin keeps its own defaults and its own options.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export.h"

void
gk_ehttp_cli_init(gk_ehttp_cli *c, gk_ehttp_opts *o, size_t max_headers,
    size_t min_queue)
{
	memset(c, 0, sizeof *c);
	c->o = o;
	c->dflt = *o;
	c->max_headers = max_headers < GK_EHTTP_MAX_HEADERS ?
	    max_headers : GK_EHTTP_MAX_HEADERS;
	c->min_queue = min_queue;
}

static void
header(gk_ehttp_cli *c, const char *arg)
{
	if (c->nheaders >= c->max_headers)
		gk_usage_error("too many --header options (at most %zu)",
		    c->max_headers);
	char *h = gk_ehttp_header_arg(arg);
	if (!h)
		gk_usage_error("bad --header: %s (expected NAME=VALUE)", arg);
	c->owned[c->nheaders] = true;
	c->headers[c->nheaders++] = h;
}

int
gk_ehttp_option(gk_ehttp_cli *c, int opt, const char *arg)
{
	gk_ehttp_opts *o = c->o;
	switch (opt) {
	case 'H': header(c, arg); break;
	case 'z': o->gzip = true; break;
	case GK_EHTTP_OPT_BATCH_BYTES:
		o->batch_bytes = gk_opt_size("batch-bytes", arg, 1024);
		break;
	case GK_EHTTP_OPT_BATCH_RECORDS:
		o->batch_records = gk_opt_uint("batch-records", arg, 1, 1000000);
		break;
	case GK_EHTTP_OPT_BATCH_INTERVAL:
		o->batch_ms = gk_opt_duration_ms("batch-interval", arg, 1);
		break;
	case GK_EHTTP_OPT_MAX_QUEUE:
		o->max_bytes = gk_opt_size("max-queue", arg,
		    c->min_queue);
		break;
	case GK_EHTTP_OPT_TIMEOUT:
		o->timeout_ms = gk_opt_duration_ms("timeout", arg, 1);
		break;
	case GK_EHTTP_OPT_RETRY_MIN:
		if (c->no_retry_min)
			return 0;
		o->backoff_min_ms = gk_opt_duration_ms("retry-min", arg, 1);
		break;
	case GK_EHTTP_OPT_RETRY_MAX:
		o->backoff_max_ms = gk_opt_duration_ms("retry-max", arg, 1);
		if (c->no_retry_min && o->backoff_max_ms < o->backoff_min_ms)
			o->backoff_min_ms = o->backoff_max_ms;
		break;
	default: return 0;
	}
	return 1;
}

void
gk_ehttp_cli_check(gk_ehttp_cli *c, bool check_batch)
{
	gk_ehttp_opts *o = c->o;
	if (o->backoff_max_ms && o->backoff_max_ms < o->backoff_min_ms)
		gk_usage_error("bad --retry-max: shorter than --retry-min");
	if (check_batch && o->max_bytes && o->batch_bytes &&
	    o->batch_bytes > o->max_bytes)
		gk_usage_error("bad --batch-bytes: larger than --max-queue");
	c->headers[c->nheaders] = NULL;
	o->headers = c->headers;
}

/* n as --help shows a default: 2MiB, 256KiB, else bytes. */
static const char *
size_str(char *buf, size_t len, size_t n)
{
	if (n && n % (1u << 20) == 0)
		snprintf(buf, len, "%zuMiB", n >> 20);
	else if (n && n % 1024 == 0)
		snprintf(buf, len, "%zuKiB", n >> 10);
	else
		snprintf(buf, len, "%zu", n);
	return buf;
}

/* ms as --help shows a default: 1s, 500ms. */
static const char *
duration_str(char *buf, size_t len, uint64_t ms)
{
	if (ms && ms % 1000 == 0)
		snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(buf, len, "%llums", (unsigned long long)ms);
	return buf;
}

void
gk_ehttp_usage(FILE *f, const gk_ehttp_cli *c, const char *unit,
    const char *queue_note)
{
	const gk_ehttp_opts *d = &c->dflt;
	char a[32], b[32];
	/* The 0 defaults are gk_ehttp_new()'s (export_http.c). */
	fprintf(f, "  --batch-bytes SIZE     close a batch past SIZE (%s)\n",
	    size_str(a, sizeof a, d->batch_bytes ? d->batch_bytes : 256u << 10));
	fprintf(f, "  --batch-records N      ... or N %ss (%zu)\n", unit,
	    d->batch_records ? d->batch_records : 5000);
	fprintf(f, "  --batch-interval DUR   ... or DUR after its first %s (%s)\n",
	    unit, duration_str(a, sizeof a, d->batch_ms ? d->batch_ms : 1000));
	fprintf(f, "  --max-queue SIZE       batches waiting%s (%s)\n",
	    queue_note,
	    size_str(b, sizeof b, d->max_bytes ? d->max_bytes : 2u << 20));
	fprintf(f, "  --timeout DUR          per request (%s)\n",
	    duration_str(a, sizeof a, d->timeout_ms ? d->timeout_ms : 10000));
	if (!c->no_retry_min)
		fprintf(f, "  --retry-min DUR        first retry delay (%s)\n",
		    duration_str(a, sizeof a,
		        d->backoff_min_ms ? d->backoff_min_ms : 100));
	fprintf(f, "  --retry-max DUR        longest retry delay (%s)\n",
	    duration_str(a, sizeof a,
	        d->backoff_max_ms ? d->backoff_max_ms : 30000));
}

const char *
gk_ehttp_url_arg(int argc, char **argv, const char *dflt)
{
	const char *base = dflt;
	if (optind < argc)
		base = argv[optind++];
	if (optind < argc)
		gk_usage_error("unexpected argument: %s (expected [URL])",
		    argv[optind]);
	if (strncmp(base, "http://", 7) && strncmp(base, "https://", 8))
		gk_usage_error("bad URL: %s (expected http://HOST:PORT or "
		               "https://...)",
		    base);
	return base;
}

void
gk_ehttp_cli_free(gk_ehttp_cli *c)
{
	for (size_t i = 0; i < c->nheaders; i++)
		if (c->owned[i])
			free((char *)c->headers[i]);
	c->nheaders = 0;
}
