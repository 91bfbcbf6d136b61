/*
 * gk-export-file: append events to a file, rotated by size or time, kept
 * N deep, reopened on SIGHUP, synced by policy, held in a bounded buffer
 * while the disk is full.  See gk-export-file(1).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logship.h"

static struct {
	gk_export *ex;
	gk_logfile *file;
	unsigned types;
	bool text;
	gk_buf line;
	gk_series *m_skipped;
} F;

static void
text_line(const gk_event *ev, gk_buf *out)
{
	/* 2026-12-04T09:30:00.123456Z WARN gk-limiter[4242]: msg k=v */
	gk_event_text(ev->ts, out);
	gk_buf_addc(out, ' ');
	const char *t = ev->type == GK_EV_LOG
	                    ? gk_level_name(gk_event_level(ev))
	                    : gk_event_type_name(ev->type);
	for (const char *p = t; *p; p++)
		gk_buf_addc(out, (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p));
	gk_buf_addc(out, ' ');
	gk_event_text(ev->proc, out);
	if (ev->pid.type == GK_JSON_NUMBER) {
		gk_buf_addc(out, '[');
		gk_buf_add(out, ev->pid.p, ev->pid.len);
		gk_buf_addc(out, ']');
	}
	gk_buf_add(out, ": ", 2);
	gk_event_text(ev->text, out);
	gk_event_kv_text(ev, out);
	/* One event, one line, and nothing a terminal would act on: a
	 * control character anywhere (a newline in proc, an escape) is a
	 * space. */
	for (size_t i = 0; i < out->len; i++) {
		unsigned char c = (unsigned char)out->data[i];
		if (c < 0x20 || c == 0x7f)
			out->data[i] = ' ';
	}
}

static void
on_event(gk_export *ex, const gk_event *ev, void *arg)
{
	(void)ex;
	(void)arg;
	if (!(F.types & GK_EVMASK(ev->type))) {
		gk_counter_add(F.m_skipped, 1);
		return;
	}
	gk_buf_reset(&F.line);
	if (F.text)
		text_line(ev, &F.line);
	else
		gk_buf_add(&F.line, ev->line, ev->len);
	gk_buf_addc(&F.line, '\n');
	gk_logfile_add(F.file, F.line.data, F.line.len);
}

static void
on_drained(gk_logfile *f, void *arg)
{
	(void)f;
	gk_export_done(arg);
}

static void
on_drain(gk_export *ex, void *arg)
{
	(void)arg;
	gk_logfile_drain(F.file, on_drained, ex);
}

static void
on_hup(gk_export *ex, void *arg)
{
	(void)ex;
	(void)arg;
	gk_logfile_reopen(F.file);
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: gk-export-file [options] PATH\n"
	        "Append events to PATH, one a line; rotate, keep, reopen on "
	        "SIGHUP.\n"
	        "  -s, --max-size SIZE    rotate past SIZE bytes (10M; 0: "
	        "never)\n"
	        "  -r, --rotate WHEN      also rotate every DURATION, or "
	        "daily at midnight (never)\n"
	        "  -k, --keep N           rotated files kept, PATH.1 .. PATH.N "
	        "(5)\n"
	        "      --fsync POLICY     never, batch or always (batch)\n"
	        "      --buffer SIZE      bytes held while the file cannot be "
	        "written (4m)\n"
	        "      --format FMT       json (the events as read) or text "
	        "(json)\n"
	        "      --types LIST       event types written (all)\n"
	        "      --mode OCTAL       mode of a new file (0644)\n"
	        "  -h, --help             this help\n"
	        "  -V, --version          version\n");
}

int
main(int argc, char **argv)
{
	gk_logfile_opts o = {.max_size = 10u << 20,
	                     .keep = 5,
	                     .fsync = GK_FSYNC_BATCH,
	                     .max_buffer = 4u << 20,
	                     .mode = 0644};
	F.types = GK_EVMASK_ALL;
	static const struct option opts[] = {
	    {"max-size", required_argument, NULL, 's'},
	    {"rotate", required_argument, NULL, 'r'},
	    {"keep", required_argument, NULL, 'k'},
	    {"fsync", required_argument, NULL, 'S'},
	    {"buffer", required_argument, NULL, 'B'},
	    {"format", required_argument, NULL, 'F'},
	    {"types", required_argument, NULL, 'T'},
	    {"mode", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	uint64_t v;
	size_t sz;
	char *end;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":s:r:k:hV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (gk_parse_size(optarg, &sz) < 0)
				gk_usage_error("bad --max-size: %s (expected "
				               "a size: 10M, 512k, 0)",
				               optarg);
			o.max_size = sz;
			break;
		case 'r':
			if (!strcmp(optarg, "daily")) {
				o.daily = true;
				o.rotate_ms = 0;
			} else if (gk_parse_duration_ms(optarg, &v) < 0 ||
			           v < 1000) {
				gk_usage_error("bad --rotate: %s (expected a "
				               "duration of 1s or more, or "
				               "daily)",
				               optarg);
			} else {
				o.rotate_ms = v;
				o.daily = false;
			}
			break;
		case 'k':
			if (gk_parse_uint(optarg, 1, 1000, &v) < 0)
				gk_usage_error("bad --keep: %s (expected 1 to "
				               "1000)",
				               optarg);
			o.keep = (unsigned)v;
			break;
		case 'S':
			if (!strcmp(optarg, "never"))
				o.fsync = GK_FSYNC_NEVER;
			else if (!strcmp(optarg, "batch"))
				o.fsync = GK_FSYNC_BATCH;
			else if (!strcmp(optarg, "always"))
				o.fsync = GK_FSYNC_ALWAYS;
			else
				gk_usage_error("bad --fsync: %s (expected "
				               "never, batch or always)",
				               optarg);
			break;
		case 'B':
			if (gk_parse_size(optarg, &sz) < 0 || sz < 1024)
				gk_usage_error("bad --buffer: %s (expected a "
				               "size of 1k or more)",
				               optarg);
			o.max_buffer = sz;
			break;
		case 'F':
			if (!strcmp(optarg, "json"))
				F.text = false;
			else if (!strcmp(optarg, "text"))
				F.text = true;
			else
				gk_usage_error("bad --format: %s (expected "
				               "json or text)",
				               optarg);
			break;
		case 'T':
			if (gk_evmask_parse(optarg, &F.types) < 0)
				gk_usage_error("bad --types: %s (expected a "
				               "list of log, access, span, "
				               "metrics, other, or all)",
				               optarg);
			break;
		case 'm':
			errno = 0;
			v = strtoul(optarg, &end, 8);
			if (errno || *end || !*optarg || v > 07777)
				gk_usage_error("bad --mode: %s (expected an "
				               "octal mode such as 0640)",
				               optarg);
			o.mode = (unsigned)v;
			break;
		case 'h': usage(stdout); return 0;
		case 'V': gk_export_version("gk-export-file"); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	if (optind >= argc)
		gk_usage_error("missing PATH (the file to append to)");
	o.path = argv[optind++];
	if (optind < argc)
		gk_usage_error("unexpected argument: %s (expected one PATH)",
		               argv[optind]);
	if (!*o.path)
		gk_usage_error("bad PATH: empty");
	gk_export_def def = {.name = "file",
	                     .on_event = on_event,
	                     .on_drain = on_drain,
	                     .on_hup = on_hup};
	F.ex = gk_export_new(&def);
	F.m_skipped = gk_metric_series(
	    gk_counter_new("gk_export_file_skipped_total",
	                   "Events of a type not in --types", NULL));
	F.file = gk_logfile_new(F.ex, &o);
	if (!F.file)
		gk_fatal(73, "unable to open %s: %s", o.path, strerror(errno));
	char p[300];
	snprintf(p, sizeof p, "path=%s", o.path);
	gk_log(GK_INFO, "appending events", p);
	int rc = gk_export_run(F.ex);
	gk_logfile_free(F.file);
	gk_buf_free(&F.line);
	return rc;
}
