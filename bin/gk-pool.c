/*
 * gk-pool: N copies of a handler that answers one request at a time, with
 * requests spread over the idle copies.  The logic is in lib/pool.c; this
 * is options and callbacks.
 *
 *	gk-listener -l :8080 -- gk-pool -n 4 -- ./handler ARGS
 *
 * A request cancelled, or past its deadline, while a copy works on it gets
 * that copy killed and restarted: see lib/pool.c and gk-pool(1).
 */
#include "pool.h"

static gk_pool_config config;

static int
option(int short_name, const char *name, const char *value, void *arg)
{
	(void)arg;
	if (short_name == 'n') {
		config.n = (unsigned)gk_opt_uint(name, value, 1, 4096);
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
	return gk_pool_start(st, &config);
}

static void
on_request(gk_stage *st, gk_req *req, void *arg)
{
	(void)arg;
	gk_pool_request(st, req);
}

static void
on_done(gk_stage *st, gk_req *req, int status, void *arg)
{
	(void)arg;
	gk_pool_done(st, req, status);
}

static void
on_drain(gk_stage *st, void *arg)
{
	(void)arg;
	gk_pool_drain(st);
}

static void
stop(gk_stage *st, void *arg)
{
	(void)arg;
	gk_pool_stop(st);
}

int
main(int argc, char **argv)
{
	static const gk_stage_option opts[] = {
	    {"copies", 'n', true, "N",
		"run N copies of the handler (number of online CPUs)"},
	    {0},
	};
	gk_stage_def def = {
	    .ops = {.name = "gk-pool",
		.req_state_size = gk_pool_req_state_size(),
		.start = start,
		.on_request = on_request,
		.on_done = on_done,
		.on_drain = on_drain,
		.stop = stop},
	    .summary = "N copies of a one-request-at-a-time handler; a copy "
		       "whose request is cancelled is killed and restarted",
	    .options = opts,
	    .option = option,
	    .no_south = true,
	    .operands = operands,
	    .operands_usage = "-- CMD [ARGS...]",
	};
	return gk_stage_main(argc, argv, &def);
}
