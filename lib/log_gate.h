/*
 * log_gate.h: at most one log event a second for an error that recurs,
 * with how many were held back since the last one (internal).
 */
#ifndef GK_LOG_GATE_H
#define GK_LOG_GATE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct gk_log_gate {
	uint64_t last_ms;    /* when the last event went out */
	uint64_t suppressed; /* held back since then */
	bool any;            /* one went out already */
} gk_log_gate;

/*
 * One more occurrence: true when it may be logged now, *held then set to
 * how many were held back before it (and the gate rearmed); false when it
 * is held back (and counted).
 */
bool gk_log_gate_pass(gk_log_gate *g, uint64_t *held);

/*
 * An error event through the gate: msg with reason=why and count= the
 * occurrences it stands for (itself and those held back).
 */
void gk_log_gate_error(gk_log_gate *g, const char *msg, const char *why);

#endif
