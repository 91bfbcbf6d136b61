/*
 * ares_loop.h: a c-ares channel driven by a gk_loop: its sockets watched
 * by the loop, its timeouts on a loop timer, so that a lookup never blocks
 * the loop (internal to libgokit).
 */
#ifndef GK_ARES_LOOP_H
#define GK_ARES_LOOP_H

#include <ares.h>

#include "gokit.h"

typedef struct gk_ares {
	ares_channel ch; /* NULL until opened */
	gk_loop *loop;
	gk_timer timer;
} gk_ares;

/*
 * Open a channel whose tries wait timeout_ms each, tries times; nameserver
 * "IP:PORT" (or NULL: resolv.conf's servers).  -1 with *why set when
 * c-ares cannot start or nameserver is malformed.  a must not move while
 * open: the channel's callbacks hold it.
 */
int gk__ares_open(gk_ares *a, gk_loop *loop, int timeout_ms, int tries,
    const char *nameserver, const char **why);
/* After queries are sent: the channel's next timeout is armed. */
void gk__ares_arm(gk_ares *a);
/* Close the channel: its pending queries are answered ARES_EDESTRUCTION. */
void gk__ares_close(gk_ares *a);

#endif
