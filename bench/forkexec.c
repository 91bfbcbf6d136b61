/*
 * forkexec: the floor for a CGI request.  Forks, execs and waits for a
 * program K times, one at a time, and prints the CPU that cost per run:
 * getrusage(RUSAGE_SELF) + getrusage(RUSAGE_CHILDREN), after minus before,
 * divided by K.  bench/run compiles it into its temp dir and sets it beside
 * `gk-listener -- gk-exec SCRIPT`.
 *
 * The child gets the CGI meta-variables of a plain `GET /` (so a script that
 * reads them behaves as it does under gk-exec), stdin from /dev/null and
 * stdout into a pipe that the parent reads to EOF, as any CGI runner must.
 *
 * usage: forkexec K PROGRAM [ARGS...]
 * output: one line of key=value pairs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
tv_us(struct timeval tv)
{
	return tv.tv_sec * 1e6 + tv.tv_usec;
}

static double
cpu_us(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return tv_us(ru.ru_utime) + tv_us(ru.ru_stime);
}

static double
now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int
main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: forkexec K PROGRAM [ARGS...]\n");
		return 64;
	}
	long k = strtol(argv[1], NULL, 10);
	if (k <= 0) {
		fprintf(stderr, "forkexec: bad K '%s', expected a positive number\n", argv[1]);
		return 64;
	}
	char *envp[] = {
		"GATEWAY_INTERFACE=CGI/1.1",
		"SERVER_PROTOCOL=HTTP/1.1",
		"SERVER_SOFTWARE=forkexec",
		"SERVER_NAME=127.0.0.1",
		"SERVER_PORT=80",
		"REQUEST_METHOD=GET",
		"SCRIPT_NAME=",
		"PATH_INFO=/",
		"QUERY_STRING=",
		"REMOTE_ADDR=127.0.0.1",
		"HTTP_HOST=127.0.0.1",
		"PATH=/usr/local/bin:/usr/bin:/bin",
		NULL,
	};
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		perror("forkexec: /dev/null");
		return 71;
	}
	long bytes = 0, failed = 0;
	char buf[4096];
	double self0 = cpu_us(RUSAGE_SELF), kids0 = cpu_us(RUSAGE_CHILDREN);
	double t0 = now_us();
	for (long i = 0; i < k; i++) {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0) {
			perror("forkexec: pipe");
			return 71;
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("forkexec: fork");
			return 71;
		}
		if (pid == 0) {
			dup2(devnull, 0);
			dup2(p[1], 1);
			execve(argv[2], argv + 2, envp);
			_exit(127);
		}
		close(p[1]);
		ssize_t n;
		while ((n = read(p[0], buf, sizeof buf)) != 0) {
			if (n < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			bytes += n;
		}
		close(p[0]);
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed++;
	}
	double wall = now_us() - t0;
	double self = cpu_us(RUSAGE_SELF) - self0, kids = cpu_us(RUSAGE_CHILDREN) - kids0;
	printf("runs=%ld failed=%ld bytes_per_run=%.1f cpu_us_per_run=%.1f self_us_per_run=%.1f "
	       "children_us_per_run=%.1f wall_us_per_run=%.1f\n",
	       k, failed, (double)bytes / k, (self + kids) / k, self / k, kids / k, wall / k);
	return failed ? 1 : 0;
}
