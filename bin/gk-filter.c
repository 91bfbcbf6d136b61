/*
 * gk-filter: run a jq program over each event of stdin; outputs as compact
 * JSON lines on stdout, or to --route commands.  See gk-filter(1).
 *
 *	gk-filter [options] PROGRAM
 *	gk-filter [options] -f FILE
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filter.h"
#include "gokit.h"

static void
usage(void)
{
	printf("gk-filter: a jq program over each event of a stream\n\n"
	       "usage: gk-filter [options] PROGRAM\n"
	       "       gk-filter [options] -f FILE\n\n"
	       "  -f, --from-file FILE     read the program from FILE\n"
	       "      --arg NAME VALUE     $NAME is the string VALUE\n"
	       "      --argjson NAME JSON  $NAME is the JSON value\n"
	       "      --route EXPR CMD     outputs for which EXPR is true go to\n"
	       "                           CMD's stdin (no shell; repeatable;\n"
	       "                           the first matching route wins)\n"
	       "      --raw-proc NAME      proc of wrapped non-JSON lines "
	       "(unknown)\n"
	       "  -h, --help               this help\n"
	       "  -V, --version            the version\n\n"
	       "Events on stdin, one JSON object a line; other lines are "
	       "wrapped as\nlog events with \"raw\":true.  Numbers beyond "
	       "2^53 are refused.\nSee gk-filter(1) and gk-events(5).\n");
}

static char *
read_file(const char *path)
{
	FILE *fp = fopen(path, "r");
	if (!fp)
		gk_usage_error("unable to read -f %s: %s", path, strerror(errno));
	gk_buf b = {0};
	char tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof tmp, fp)) > 0)
		gk_buf_add(&b, tmp, n);
	bool bad = ferror(fp);
	fclose(fp);
	if (bad)
		gk_usage_error("unable to read -f %s", path);
	return gk_buf_cstr(&b);
}

int
main(int argc, char **argv)
{
	gk_events_init("gk-filter");
	enum { OPT_ARG = 256, OPT_ARGJSON, OPT_ROUTE, OPT_RAW_PROC };
	static const struct option opts[] = {
	    {"from-file", required_argument, NULL, 'f'},
	    {"arg", required_argument, NULL, OPT_ARG},
	    {"argjson", required_argument, NULL, OPT_ARGJSON},
	    {"route", required_argument, NULL, OPT_ROUTE},
	    {"raw-proc", required_argument, NULL, OPT_RAW_PROC},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	gk_filter_config cfg = {0};
	gk_filter_arg *args = gk_xcalloc((size_t)argc, sizeof *args);
	gk_filter_route *routes = gk_xcalloc((size_t)argc, sizeof *routes);
	const char *file = NULL;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:f:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			file = optarg;
			break;
		case OPT_ARG:
		case OPT_ARGJSON:
			if (optind >= argc)
				gk_usage_error("--%s %s: expected NAME VALUE",
				    c == OPT_ARG ? "arg" : "argjson", optarg);
			args[cfg.nargs].name = optarg;
			args[cfg.nargs].value = argv[optind++];
			args[cfg.nargs].json = c == OPT_ARGJSON;
			cfg.nargs++;
			break;
		case OPT_ROUTE:
			if (optind >= argc)
				gk_usage_error("--route %s: expected EXPR CMD",
				    optarg);
			routes[cfg.nroutes].expr = optarg;
			routes[cfg.nroutes].cmd = argv[optind++];
			cfg.nroutes++;
			break;
		case OPT_RAW_PROC:
			cfg.raw_proc = optarg;
			break;
		case 'h':
			usage();
			return 0;
		case 'V':
			printf("gk-filter %s\n", GK_VERSION);
			return 0;
		case ':':
			gk_usage_error("%s: expected a value (see --help)",
			    argv[optind - 1]);
			break;
		default: gk_usage_bad_option(argv);
		}
	}
	char *text = NULL;
	if (file) {
		text = read_file(file);
		/* A #! line, as jq skips it. */
		if (text[0] == '#' && text[1] == '!')
			memset(text, ' ', strcspn(text, "\n"));
		cfg.program_file = file;
		cfg.program = text;
	} else if (optind < argc)
		cfg.program = argv[optind++];
	else
		gk_usage_error("expected a PROGRAM or -f FILE");
	if (optind < argc)
		gk_usage_error("unexpected operand %s: events are read from "
		               "stdin",
		    argv[optind]);
	cfg.args = args;
	cfg.routes = routes;

	gk_buf err = {0};
	gk_filter *f = gk_filter_new(&cfg, &err);
	if (!f) {
		gk_buf line = {0};
		gk_buf_addf(&line, "gk-filter: fatal: %s\n", gk_buf_cstr(&err));
		(void)!write(2, line.data, line.len);
		return GK_EXIT_USAGE;
	}
	int status = gk_filter_run(f, 0, 1);
	gk_filter_free(f);
	free(text);
	free(args);
	free(routes);
	gk_buf_free(&err);
	return status;
}
