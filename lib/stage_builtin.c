/*
 * stage_builtin.c: the stages gk-listener --fuse runs in its own process,
 * by the name of their program.  Only gk-listener refers to this table,
 * so that the other programs do not carry every stage.
 */
#include <string.h>

#include "runtime.h"

const gk_stage_def *
gk__builtin_stage(const char *name)
{
	if (!strcmp(name, "gk-tracer"))
		return gk__tracer_stage();
	if (!strcmp(name, "gk-limiter"))
		return gk__limiter_stage();
	if (!strcmp(name, "gk-breaker"))
		return gk__breaker_stage();
	return NULL;
}
