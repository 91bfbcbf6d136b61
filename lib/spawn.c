/*
 * spawn.c: posix_spawn of a south child.  posix_spawn rather than fork: glibc
 * implements it with clone(CLONE_VM|CLONE_VFORK), so spawning costs the same
 * whatever the parent's size, which matters to gk-exec's fork per request.
 *
 * The child gets a process group of its own.  Ctrl-C, kill %1 and
 * kill -- -PGID signal a whole process group; in ours, a handler that knows
 * nothing of gokit died at once and its requests in flight were answered
 * 502.  Out of it, the signal reaches only the top of the stack, which
 * drains from the top and then ends the child's group (stage.c).  Being
 * out of the terminal's foreground group, the child would be stopped by
 * SIGTTOU on writing to the terminal under stty tostop (its stderr is
 * often the terminal), or by SIGTTIN on reading it: it starts with both
 * ignored, so the write goes through and the read fails with EIO.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include "gokit.h"
#include "procspawn.h"

extern char **environ;

pid_t
gk_spawn(char *const argv[], int *to_child, int *from_child)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		int e = errno;
		if (in[0] >= 0) {
			close(in[0]);
			close(in[1]);
		}
		errno = e;
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawnattr_init(&at);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	/* Ignored in the child, which inherits them from us for the spawn. */
	sigdelset(&all, SIGTTOU);
	sigdelset(&all, SIGTTIN);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP |
	    POSIX_SPAWN_USEVFORK);
	struct sigaction ign = {.sa_handler = SIG_IGN}, ttou, ttin;
	sigemptyset(&ign.sa_mask);
	sigaction(SIGTTOU, &ign, &ttou);
	sigaction(SIGTTIN, &ign, &ttin);
	pid_t pid;
	int e = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
	sigaction(SIGTTOU, &ttou, NULL);
	sigaction(SIGTTIN, &ttin, NULL);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	/* The child set its group before its exec, and glibc returns only
	 * after the exec; for a libc that returns sooner, set it here too,
	 * so that no signal to the group can come before it (EACCES once
	 * the child has exec'd: nothing to do). */
	if (!e)
		setpgid(pid, pid);
	close(in[0]);
	close(out[1]);
	if (e) {
		close(in[1]);
		close(out[0]);
		errno = e;
		return -1;
	}
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	*to_child = in[1];
	*from_child = out[0];
	return pid;
}

bool
gk__signal_group(pid_t pgid, int sig)
{
	return pgid > 1 && kill(-pgid, sig) == 0;
}
