/*
 * gk-tracer: request tracing.  The stage (options and callbacks) is
 * lib/tracer_stage.c, which gk-listener --fuse runs too; its logic is
 * lib/tracer.c.  See gk-tracer(1).
 */
#include "gokit.h"
#include "runtime.h"

int
main(int argc, char **argv)
{
	return gk_stage_main(argc, argv, gk__tracer_stage());
}
