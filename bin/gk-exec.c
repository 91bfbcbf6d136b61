/*
 * gk-exec: a handler stage that runs a CGI/1.1 program (RFC 3875) for each
 * request.  The logic is in lib/cgi.c; this is options and callbacks.
 *
 *	gk-listener -l :8080 -- gk-exec [-j N] [-t DUR] /path/script.cgi [ARGS]
 */
#include "cgi.h"

static gk_cgi_config config = {.timeout_ms = 30000};

static int
option(int short_name, const char *name, const char *value, void *arg)
{
	(void)arg;
	switch (short_name) {
	case 'j':
		config.jobs = (unsigned)gk_opt_uint(name, value, 1, 65536);
		return 0;
	case 't':
		config.timeout_ms = gk_opt_duration_ms(name, value, 0);
		return 0;
	}
	return -1;
}

static int
operands(int argc, char **argv, void *arg)
{
	(void)arg;
	if (argc < 1 || !argv[0][0])
		return -1;
	config.argv = argv;
	return 0;
}

static int
start(gk_stage *st, void *arg)
{
	(void)arg;
	return gk_cgi_start(st, &config);
}

static void
on_request(gk_stage *st, gk_req *req, void *arg)
{
	(void)arg;
	gk_cgi_request(st, req);
}

static void
on_done(gk_stage *st, gk_req *req, int status, void *arg)
{
	(void)arg;
	gk_cgi_done(st, req, status);
}

int
main(int argc, char **argv)
{
	static const gk_stage_option opts[] = {
	    {"jobs", 'j', true, "N",
		"at most N children at once (number of online CPUs)"},
	    {"child-timeout", 't', true, "DUR",
		"kill a child after DUR and answer 504 (30s; 0: never)"},
	    {0},
	};
	gk_stage_def def = {
	    .ops = {.name = "gk-exec",
		.req_state_size = gk_cgi_req_state_size(),
		.start = start,
		.on_request = on_request,
		.on_done = on_done},
	    .summary = "run a CGI/1.1 program for each request",
	    .options = opts,
	    .option = option,
	    .no_south = true,
	    .operands = operands,
	    .operands_usage = "SCRIPT [ARGS...]",
	};
	return gk_stage_main(argc, argv, &def);
}
