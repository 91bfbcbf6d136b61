/* log_gate.c: see log_gate.h. */
#include "log_gate.h"

#include <stdio.h>

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

void
gk_log_gate_error(gk_log_gate *g, const char *msg, const char *why)
{
	uint64_t held;
	if (!gk_log_gate_pass(g, &held))
		return;
	char f1[160], f2[64];
	snprintf(f1, sizeof f1, "reason=%s", why);
	snprintf(f2, sizeof f2, "count=%llu", (unsigned long long)(held + 1));
	gk_log(GK_ERROR, msg, f1, f2);
}
