/* procspawn.h: starting a south child on pipes (internal). */
#ifndef GK_PROCSPAWN_H
#define GK_PROCSPAWN_H

#include <sys/types.h>

/*
 * execve argv[0] (searched in PATH when it holds no '/'; never through a
 * shell) with its stdin and stdout on new nonblocking close-on-exec pipes
 * (*to_child, *from_child); stderr and the event fd are inherited.  The
 * child starts with the default disposition and an empty mask for every
 * signal.  Returns the pid, or -1 with errno.
 */
pid_t gk_spawn(char *const argv[], int *to_child, int *from_child);

#endif
