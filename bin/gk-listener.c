/*
 * gk-listener: the HTTP/1.1 transport.  Everything it does is the stage
 * runtime's HTTP north side; it has no callbacks of its own, and with
 * --fuse runs the built-in stages below it in its own process.  See
 * gk-listener(1).
 */
#include "gokit.h"
#include "runtime.h"

int
main(int argc, char **argv)
{
	static const gk_stage_def def = {
	    .ops = {.name = "gk-listener"},
	    .summary = "HTTP/1.1 in front of a stack of stages",
	    .north_http = true,
	    .default_timeout_ms = GK_HTTP_TIMEOUT_MS,
	    .fusable = gk__builtin_stage,
	};
	return gk_stage_main(argc, argv, &def);
}
