/*
 * gk-breaker: circuit breaking and timeouts.  The stage (options and callbacks)
 * is lib/breaker_stage.c, which gk-listener --fuse runs too; its logic is
 * lib/breaker.c.  See gk-breaker(1).
 */
#include "gokit.h"
#include "runtime.h"

int
main(int argc, char **argv)
{
	return gk_stage_main(argc, argv, gk__breaker_stage());
}
