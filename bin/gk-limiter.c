/*
 * gk-limiter: rate limits, concurrency limits and backpressure.  The stage
 * (options and callbacks) is lib/limiter_stage.c, which gk-listener --fuse runs
 * too; its logic is lib/limiter.c.  See gk-limiter(1).
 */
#include "gokit.h"
#include "runtime.h"

int
main(int argc, char **argv)
{
	return gk_stage_main(argc, argv, gk__limiter_stage());
}
