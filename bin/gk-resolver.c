/*
 * gk-resolver: names to live endpoint sets, and registration.  Options
 * and callbacks; the sources are lib/resolver*.c, registration
 * lib/resolver_register*.c.  See gk-resolver(1).
 *
 *	gk-resolver [--json] [--watch] [-o FILE] [--nameserver HOST:PORT]
 *	    [--invalidate-after DUR] [--timeout DUR] URI
 *	gk-resolver register URI --name NAME --addr HOST:PORT --ttl DUR
 *	    [--check URL] [--weight N] [--tags T,...]
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gokit.h"
#include "resolver.h"
#include "resolver_register.h"

#define EXIT_UNAVAILABLE 69 /* EX_UNAVAILABLE */
#define EXIT_CANTCREAT 73   /* EX_CANTCREAT */

static struct {
	gk_loop *loop;
	gk_resolver *res;
	gk_register *reg;
	const char *uri, *out;
	bool json, watch, got_set, stopping, ready;
	int status;
	gk_timer timeout;
	gk_metrics_timer metrics;
	gk_series *m_writes, *m_write_errors;
	/* --watch -o: the set a write failed for (ENOSPC, EIO), written
	 * again with backoff until it goes through or a new set comes. */
	gk_buf unwritten;
	bool write_failing;
	uint64_t write_retry_ms;
	gk_timer write_retry;
	uint64_t watchdog_ms;
	gk_timer watchdog;
} X;

#define WRITE_RETRY_MIN_MS 500
#define WRITE_RETRY_MAX_MS 10000

static void
usage(void)
{
	printf(
	    "gk-resolver: names to live endpoint sets, and registration\n\n"
	    "usage: gk-resolver [options] URI\n"
	    "       gk-resolver register URI --name NAME --addr HOST:PORT "
	    "--ttl DUR [options]\n\n"
	    "URI: static:H:P,...  file:PATH  dns:NAME:PORT  "
	    "dns+srv:_svc._tcp.NAME\n"
	    "     consul:http://H:P/SERVICE[?tag=T&passing]  "
	    "etcd:http://H:P/PREFIX\n\n"
	    "  -j, --json                 one JSON object per set\n"
	    "  -w, --watch                a new set on every change, until "
	    "SIGTERM\n"
	    "  -o, --output FILE          write the set to FILE atomically, in "
	    "the\n"
	    "                             endpoints format of gk-client "
	    "--endpoints\n"
	    "      --nameserver HOST:PORT DNS server for dns: and dns+srv:\n"
	    "      --invalidate-after DUR drop the last good set after DUR of "
	    "source errors\n"
	    "      --timeout DUR          without --watch: give up after DUR "
	    "(10s)\n\n"
	    "register:\n"
	    "      --name NAME            the service\n"
	    "      --addr HOST:PORT       this instance\n"
	    "      --ttl DUR              lease or check TTL, kept alive every "
	    "third\n"
	    "      --check URL            keep alive only while URL answers "
	    "2xx\n"
	    "      --weight N             the instance's weight (1)\n"
	    "      --tags T,...           tags (Consul; after the weight in "
	    "etcd)\n\n"
	    "  -h, --help                 this help\n"
	    "  -V, --version              the version\n\n"
	    "Exit: 0 done, 64 usage, 69 source unavailable or deregistration "
	    "failed,\n73 unable to write FILE, 74 unable to write the output. "
	    "See gk-resolver(1).\n");
}

static uint64_t
duration(const char *opt, const char *v)
{
	uint64_t ms;
	if (gk_parse_duration_ms(v, &ms) < 0)
		gk_usage_error("bad --%s: %s (expected a duration: 250ms, 2s)",
		               opt, v);
	return ms;
}

static void
finish(int status)
{
	X.status = status;
	gk_loop_stop(X.loop);
}

/* sd_notify(3) READY=1 once the first set has been written where it goes
 * (standard output, or the -o file), not at start: under Type=notify the
 * unit is up once it serves a set, and units ordered after it (a
 * gk-client reading the file) do not start before there is one. */
static void
ready(void)
{
	if (X.ready)
		return;
	X.ready = true;
	gk_notify("READY=1");
}

static void write_out(void);

static void
on_write_retry(gk_loop *loop, void *arg)
{
	(void)loop;
	(void)arg;
	write_out();
}

/* Write X.unwritten to the -o file; with --watch, a failure is tried
 * again with backoff, so that the file catches up once the disk has room
 * again even when the set does not change. */
static void
write_out(void)
{
	gk_timer_stop(X.loop, &X.write_retry);
	if (gk_write_file_atomic(X.out,
	                         X.unwritten.data ? X.unwritten.data : "",
	                         X.unwritten.len) < 0) {
		int e = errno;
		gk_counter_add(X.m_write_errors, 1);
		if (!X.watch)
			gk_fatal(EXIT_CANTCREAT, "unable to write %s: %s",
			         X.out, strerror(e));
		char f[300], w[300];
		snprintf(f, sizeof f, "file=%s", X.out);
		snprintf(w, sizeof w, "error=%s", strerror(e));
		if (!X.write_failing)
			gk_log(GK_ERROR,
			       "unable to write the endpoints file, "
			       "trying again",
			       f, w);
		X.write_failing = true;
		gk_timer_start(X.loop, &X.write_retry, X.write_retry_ms,
		               on_write_retry, NULL);
		X.write_retry_ms = X.write_retry_ms * 2 > WRITE_RETRY_MAX_MS
		                       ? WRITE_RETRY_MAX_MS
		                       : X.write_retry_ms * 2;
		return;
	}
	gk_counter_add(X.m_writes, 1);
	ready();
	if (X.write_failing) {
		char f[300];
		snprintf(f, sizeof f, "file=%s", X.out);
		gk_log(GK_INFO, "endpoints file written again", f);
	}
	X.write_failing = false;
}

static void
emit(const gk_endpoint *set, size_t n)
{
	gk_buf b = {0};
	if (X.out) {
		gk_resolver_format_lines(&b, set, n);
		gk_buf_reset(&X.unwritten);
		gk_buf_add(&X.unwritten, b.data ? b.data : "", b.len);
		X.write_retry_ms = WRITE_RETRY_MIN_MS;
		write_out();
	} else {
		if (X.json) {
			gk_resolver_format_json(&b, set, n);
			gk_buf_addc(&b, '\n');
		} else {
			gk_resolver_format_lines(&b, set, n);
			if (X.watch) /* a blank line ends each set */
				gk_buf_addc(&b, '\n');
		}
		if ((b.len && fwrite(b.data, 1, b.len, stdout) != b.len) ||
		    fflush(stdout) == EOF)
			gk_fatal(GK_EXIT_IOERR,
			         "unable to write the output: %s",
			         strerror(errno));
		ready();
	}
	gk_buf_free(&b);
}

static void
on_set(const gk_endpoint *set, size_t n, void *arg)
{
	(void)arg;
	if (X.stopping)
		return;
	char k[32];
	snprintf(k, sizeof k, "endpoints=%zu", n);
	gk_log(GK_DEBUG, "endpoint set", k);
	emit(set, n);
	X.got_set = true;
	if (!X.watch) {
		X.stopping = true;
		finish(0);
	}
}

static void
on_error(const char *what, void *arg)
{
	(void)arg;
	if (!X.watch && !X.got_set && !X.stopping) {
		X.stopping = true;
		gk_fatal(EXIT_UNAVAILABLE, "unable to resolve %s: %s", X.uri,
		         what);
	}
	if (!X.ready) {
		/* Not ready yet: systemctl status says what it waits for.  On
		 * one line: a newline from an error text (a registry's
		 * answer) would start another assignment, READY=1 even. */
		char st[400];
		snprintf(st, sizeof st, "STATUS=waiting for the first set: %s",
		         what);
		for (char *c = st; *c; c++)
			if ((unsigned char)*c < ' ')
				*c = ' ';
		gk_notify(st);
	}
}

static void
on_timeout(gk_loop *loop, void *arg)
{
	(void)loop;
	(void)arg;
	gk_fatal(EXIT_UNAVAILABLE, "unable to resolve %s: timed out", X.uri);
}

static void
on_hup(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)signo;
	(void)arg;
	/* Nothing to reload: the sources follow their names themselves. */
	gk_log(GK_INFO, "SIGHUP ignored: nothing to reload");
}

static void
on_deregistered(bool ok, void *arg)
{
	(void)arg;
	finish(ok ? 0 : EXIT_UNAVAILABLE);
}

static void
on_term(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)signo;
	(void)arg;
	if (X.reg && !X.stopping) {
		/* Take the registration out first; a second signal ends
		 * at once.  systemd is told the unit is stopping, as the
		 * stages tell it when they drain. */
		X.stopping = true;
		gk_notify("STOPPING=1\nSTATUS=deregistering");
		gk_register_stop(X.reg, on_deregistered, NULL);
		return;
	}
	/* Without --watch, 0 says the set was written: a run interrupted
	 * before it came did not do its job. */
	if (!X.reg && !X.watch && !X.got_set)
		gk_fatal(EXIT_UNAVAILABLE,
		         "unable to resolve %s: interrupted "
		         "before a set came",
		         X.uri);
	X.stopping = true;
	finish(X.reg ? EXIT_UNAVAILABLE : 0);
}

static void
on_watchdog(gk_loop *loop, void *arg)
{
	(void)arg;
	gk_notify("WATCHDOG=1");
	gk_timer_start(loop, &X.watchdog, X.watchdog_ms, on_watchdog, NULL);
}

static void
start_loop(bool long_running)
{
	signal(SIGPIPE, SIG_IGN);
	X.loop = gk_loop_new();
	gk_loop_signal(X.loop, SIGTERM, on_term, NULL);
	gk_loop_signal(X.loop, SIGINT, on_term, NULL);
	gk_loop_signal(X.loop, SIGUSR1, gk_metrics_on_signal, NULL);
	gk_loop_signal(X.loop, SIGHUP, on_hup, NULL);
	if (long_running)
		gk_metrics_every(X.loop, &X.metrics);
	/* sd_watchdog_enabled(3): a unit with WatchdogSec= is told we are
	 * alive every half of it, from the loop, as the stages do. */
	X.watchdog_ms = gk_watchdog_interval_ms();
	if (X.watchdog_ms)
		gk_timer_start(X.loop, &X.watchdog, X.watchdog_ms, on_watchdog,
		               NULL);
}

static int
register_main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"name", required_argument, NULL, 'n'},
	    {"addr", required_argument, NULL, 'a'},
	    {"ttl", required_argument, NULL, 't'},
	    {"check", required_argument, NULL, 'c'},
	    {"weight", required_argument, NULL, 'W'},
	    {"tags", required_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0},
	};
	gk_register_options o = {0};
	uint64_t w;
	int c;
	optind = 1; /* argv[0] is "register" */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hV", lo, NULL)) != -1) {
		switch (c) {
		case 'n': o.name = optarg; break;
		case 'a': o.addr = optarg; break;
		case 't': o.ttl_ms = duration("ttl", optarg); break;
		case 'c':
			if (strncmp(optarg, "http://", 7) &&
			    strncmp(optarg, "https://", 8))
				gk_usage_error("bad --check: %s (expected an "
				               "http:// or https:// URL)",
				               optarg);
			o.check_url = optarg;
			break;
		case 'W':
			if (gk_parse_uint(optarg, 1, 1000000, &w) < 0)
				gk_usage_error(
				    "bad --weight: %s (expected 1 to "
				    "1000000)",
				    optarg);
			o.weight = (unsigned)w;
			break;
		case 'T': o.tags = optarg; break;
		case 'h': usage(); return 0;
		case 'V': printf("gk-resolver %s\n", GK_VERSION); return 0;
		case ':':
			gk_usage_error("option %s needs a value",
			               argv[optind - 1]);
		default: gk_usage_bad_option(argv);
		}
	}
	if (optind != argc - 1)
		gk_usage_error(
		    optind >= argc
		        ? "register: expected a URI "
		          "(etcd:http://H:P/PREFIX or consul:http://H:P)"
		        : "register: one URI only (see --help)");
	o.uri = argv[optind];
	if (!o.name || !o.addr || !o.ttl_ms)
		gk_usage_error("register needs --name NAME, --addr HOST:PORT "
		               "and --ttl DUR");
	start_loop(true);
	const char *why = NULL;
	X.reg = gk_register_new(X.loop, &o, &why);
	if (!X.reg)
		gk_usage_error("bad registration: %s (%s)", o.uri, why);
	gk_notify("READY=1");
	gk_loop_run(X.loop);
	gk_register_free(X.reg);
	gk_metrics_snapshot();
	gk_events_flush();
	return X.status;
}

int
main(int argc, char **argv)
{
	gk_events_init("gk-resolver");
	if (argc > 1 && !strcmp(argv[1], "register"))
		return register_main(argc - 1, argv + 1);
	static const struct option lo[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"watch", no_argument, NULL, 'w'},
	    {"output", required_argument, NULL, 'o'},
	    {"nameserver", required_argument, NULL, 'N'},
	    {"invalidate-after", required_argument, NULL, 'I'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0},
	};
	gk_resolver_options ro = {0};
	uint64_t timeout_ms = 10000;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":jwo:hV", lo, NULL)) != -1) {
		switch (c) {
		case 'j': X.json = true; break;
		case 'w': X.watch = true; break;
		case 'o': X.out = optarg; break;
		case 'N': {
			const char *colon = strrchr(optarg, ':');
			if (!colon || colon == optarg || !colon[1] ||
			    strspn(colon + 1, "0123456789") !=
			        strlen(colon + 1))
				gk_usage_error("bad --nameserver: %s (expected "
				               "IP:PORT)",
				               optarg);
			ro.nameserver = optarg;
			break;
		}
		case 'I':
			ro.invalidate_after_ms =
			    duration("invalidate-after", optarg);
			break;
		case 't': timeout_ms = duration("timeout", optarg); break;
		case 'h': usage(); return 0;
		case 'V': printf("gk-resolver %s\n", GK_VERSION); return 0;
		case ':':
			gk_usage_error("option %s needs a value",
			               argv[optind - 1]);
		default: gk_usage_bad_option(argv);
		}
	}
	if (optind >= argc)
		gk_usage_error(
		    "expected a URI (static:, file:, dns:, dns+srv:, "
		    "consul:, etcd:; see --help)");
	if (optind != argc - 1)
		gk_usage_error("unexpected argument: %s (one URI only)",
		               argv[optind + 1]);
	if (X.json && X.out)
		gk_usage_error("--json with -o: the file is always written in "
		               "the endpoints format");
	if (!timeout_ms)
		gk_usage_error(
		    "bad --timeout: 0 (expected a duration above 0)");
	X.uri = argv[optind];
	start_loop(X.watch);
	X.m_writes = gk_metric_series(
	    gk_counter_new("gk_resolver_file_writes_total",
	                   "Sets written to the -o file", NULL));
	X.m_write_errors = gk_metric_series(gk_counter_new(
	    "gk_resolver_file_write_errors_total",
	    "Sets that could not be written to the -o file", NULL));
	ro.on_error = on_error;
	const char *why = NULL;
	X.res = gk_resolver_new(X.loop, X.uri, &ro, on_set, NULL, &why);
	if (!X.res)
		gk_usage_error("bad URI: %s (%s)", X.uri, why);
	if (!X.stopping) {
		if (!X.watch)
			gk_timer_start(X.loop, &X.timeout, timeout_ms,
			               on_timeout, NULL);
		gk_loop_run(X.loop);
	}
	gk_timer_stop(X.loop, &X.timeout);
	gk_timer_stop(X.loop, &X.write_retry);
	gk_buf_free(&X.unwritten);
	gk_resolver_free(X.res);
	if (X.watch)
		gk_metrics_snapshot();
	gk_events_flush();
	return X.status;
}
