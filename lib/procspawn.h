/* procspawn.h: starting a south child on pipes (internal). */
#ifndef GK_PROCSPAWN_H
#define GK_PROCSPAWN_H

#include <stdbool.h>
#include <sys/types.h>

/*
 * execve argv[0] (searched in PATH when it holds no '/'; never through a
 * shell) with its stdin and stdout on new nonblocking close-on-exec pipes
 * (*to_child, *from_child); stderr and the event fd are inherited.  The
 * child starts in a process group of its own (its pid), with an empty
 * signal mask, SIGTTOU and SIGTTIN ignored (it is not in the terminal's
 * foreground group) and the default disposition for every other signal.
 * Returns the pid, or -1 with errno.
 */
pid_t gk_spawn(char *const argv[], int *to_child, int *from_child);

/*
 * Send sig to the process group of a child gk_spawn started (pgid is its
 * pid): the child and whatever it started that stayed in its group, even
 * once the child itself has been reaped (the group's id is not given to
 * another process while a member lives).  True when the group had a member.
 */
bool gk__signal_group(pid_t pgid, int sig);

#endif
