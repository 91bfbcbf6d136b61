/* log_gate.c: see log_gate.h. */
#include "log_gate.h"

#include "gokit.h"

#define GK_LOG_GATE_MS 1000

bool
gk_log_gate_pass(gk_log_gate *g, uint64_t *held)
{
	uint64_t now = gk_monotonic_ms();
	if (g->any && now - g->last_ms < GK_LOG_GATE_MS) {
		g->suppressed++;
		return false;
	}
	*held = g->suppressed;
	g->any = true;
	g->last_ms = now;
	g->suppressed = 0;
	return true;
}
