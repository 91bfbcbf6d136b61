/*
 * gk-exporter: run an exporter plugin, or feed one event stream to several.
 *
 *   gk-exporter NAME [ARGS...]           exec gk-export-NAME ARGS...
 *   gk-exporter --to NAME[:ARGS] ...     fan out stdin to each plugin
 *
 * Finding a plugin is lib/plugin_exec.c; the fan-out (a bounded buffer per
 * sink that drops oldest first, restarts with backoff, drain) is
 * lib/fanout.c and lib/fanout_input.c.  See gk-exporter(1).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fanout.h"
#include "plugin_exec.h"

static void
on_term(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	(void)signo;
	gk_fanout_term(arg);
}

static void
on_hup(gk_loop *loop, int signo, void *arg)
{
	(void)loop;
	gk_fanout_signal(arg, signo);
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gk-exporter NAME [ARGS...]\n"
	    "       gk-exporter [--buffer SIZE] [--buffer-events N] "
	    "--to NAME[:ARG,ARG...] ...\n"
	    "Run the exporter plugin gk-export-NAME, or feed the events on "
	    "stdin to several.\n"
	    "  --to NAME[:ARGS]     a sink: plugin NAME with ARGS split on "
	    "commas (\\, for a comma)\n"
	    "  --buffer SIZE        per-sink buffer bound (4m)\n"
	    "  --buffer-events N    per-sink bound in events (none)\n"
	    "  --drain-timeout DUR  at EOF or TERM, time given to the sinks "
	    "(5s)\n"
	    "  -h, --help           this help\n"
	    "  -V, --version        version\n");
}

int
main(int argc, char **argv)
{
	gk_events_init("gk-exporter");
	gk_fanout_opts o = {.buffer_bytes = 4u << 20, .drain_ms = 5000};
	const char *tos[GK_FANOUT_MAX_SINKS];
	int ntos = 0;
	static const struct option opts[] = {
	    {"to", required_argument, NULL, 't'},
	    {"buffer", required_argument, NULL, 'b'},
	    {"buffer-events", required_argument, NULL, 'n'},
	    {"drain-timeout", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0}};
	int c;
	uint64_t v;
	opterr = 0;
	/* '+': options end at the plugin name (gk-exporter NAME -l ...). */
	while ((c = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (ntos == GK_FANOUT_MAX_SINKS)
				gk_usage_error("too many --to: %s (at most 32)",
				    optarg);
			tos[ntos++] = optarg;
			break;
		case 'b':
			if (gk_parse_size(optarg, &o.buffer_bytes) < 0 ||
			    o.buffer_bytes < 4096)
				gk_usage_error("bad --buffer: %s (expected a "
				               "size of at least 4k, e.g. 4m)",
				    optarg);
			break;
		case 'n':
			if (gk_parse_uint(optarg, 1, 100000000, &v) < 0)
				gk_usage_error("bad --buffer-events: %s "
				               "(expected a count)",
				    optarg);
			o.buffer_events = v;
			break;
		case 'd':
			if (gk_parse_duration_ms(optarg, &o.drain_ms) < 0)
				gk_usage_error("bad --drain-timeout: %s "
				               "(expected a duration, e.g. 5s)",
				    optarg);
			break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("gk-exporter %s\n", GK_VERSION); return 0;
		default: gk_usage_getopt(c, argv);
		}
	}
	if (!ntos) {
		if (optind >= argc)
			gk_usage_error("expected a plugin NAME [ARGS...] or "
			               "--to NAME[:ARGS] (see --help)");
		const char *name = argv[optind];
		if (!*name || strchr(name, '/'))
			gk_usage_error("bad plugin name: %s (expected NAME, "
			               "e.g. prometheus)",
			    name);
		gk_plugin_exec(name, argv + optind);
		gk_fatal(127, "unable to run plugin gk-export-%s: %s", name,
		    strerror(errno));
	}
	if (optind < argc)
		gk_usage_error("unexpected argument: %s (with --to, every sink "
		               "is a --to)",
		    argv[optind]);

	signal(SIGPIPE, SIG_IGN);
	gk_loop *loop = gk_loop_new();
	gk_fanout *f = gk_fanout_new(loop, &o);
	const char *why;
	for (int i = 0; i < ntos; i++)
		if (gk_fanout_add(f, tos[i], &why) < 0)
			gk_usage_error("bad --to: %s (%s)", tos[i], why);
	gk_loop_signal(loop, SIGTERM, on_term, f);
	gk_loop_signal(loop, SIGINT, on_term, f);
	gk_loop_signal(loop, SIGHUP, on_hup, f);
	/* USR1 is not passed on: its default action ends a plugin that does
	 * not handle it (a script).  Each plugin writes its own snapshots. */
	gk_loop_signal(loop, SIGUSR1, gk_metrics_on_signal, NULL);
	gk_fanout_start(f, 0);
	gk_metrics_timer mt = {0};
	gk_metrics_every(loop, &mt);
	gk_loop_run(loop);
	gk_fanout_finish(f); /* say what was dropped, last */
	gk_metrics_snapshot();
	gk_events_flush();
	gk_fanout_free(f);
	gk_loop_free(loop);
	return 0;
}
