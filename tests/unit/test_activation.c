/* test_activation.c: gk_listen_fds reads LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES as sd_listen_fds_with_names(3) does, and
 * gk_watchdog_interval_ms WATCHDOG_USEC and WATCHDOG_PID as
 * sd_watchdog_enabled(3). */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "gokit.h"
#include "unit.h"

static char why[256];

/* gk_listen_fds with the variables set ("-": unset, "self": our pid). */
static int
listen_fds(const char *pid, const char *fds, const char *names, char ***v)
{
	char self[32];
	snprintf(self, sizeof self, "%ld", (long)getpid());
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (strcmp(pid, "-"))
		setenv("LISTEN_PID", strcmp(pid, "self") ? pid : self, 1);
	if (strcmp(fds, "-"))
		setenv("LISTEN_FDS", fds, 1);
	if (strcmp(names, "-"))
		setenv("LISTEN_FDNAMES", names, 1);
	why[0] = 0;
	int n = gk_listen_fds(v, why, sizeof why);
	/* whatever came of them, they are gone for the children */
	CHECK(!getenv("LISTEN_PID") && !getenv("LISTEN_FDS") &&
	    !getenv("LISTEN_FDNAMES"));
	return n;
}

static void
free_names(char **v)
{
	for (int i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* fds 3 and 4 open (as systemd passes two sockets), 5 to 9 closed. */
static void
two_fds(void)
{
	for (int fd = 3; fd < 10; fd++)
		close(fd);
	CHECK(open("/dev/null", O_RDONLY) == 3);
	CHECK(open("/dev/null", O_RDONLY) == 4);
}

TEST(passed_with_names)
{
	two_fds();
	char **v = NULL;
	CHECK(listen_fds("self", "2", "json:http", &v) == 2);
	CHECK(v && v[0] && v[1] && !v[2]);
	if (v && v[0] && v[1]) {
		CHECK_STR(v[0], "json");
		CHECK_STR(v[1], "http");
	}
	CHECK(fcntl(3, F_GETFD) & FD_CLOEXEC);
	CHECK(fcntl(4, F_GETFD) & FD_CLOEXEC);
	free_names(v);
	/* without LISTEN_FDNAMES each has an empty name */
	v = NULL;
	CHECK(listen_fds("self", "2", "-", &v) == 2);
	CHECK(v && v[0] && v[1] && !*v[0] && !*v[1] && !v[2]);
	free_names(v);
	/* an empty name is a name */
	v = NULL;
	CHECK(listen_fds("self", "2", ":http", &v) == 2);
	CHECK(v && v[0] && !*v[0]);
	free_names(v);
	CHECK(listen_fds("self", "1", "-", NULL) == 1);
}

/* Not ours, or nothing passed: 0, whatever LISTEN_FDS holds. */
TEST(not_ours)
{
	char **v = (char **)1;
	CHECK(listen_fds("-", "2", "a:b", &v) == 0 && !v);
	CHECK(listen_fds("1", "1x", "a:b:c", &v) == 0 && !v);
	CHECK(listen_fds("self", "-", "a", &v) == 0 && !v);
}

TEST(malformed_is_an_error)
{
	two_fds();
	static const struct {
		const char *pid, *fds, *names, *why;
	} bad[] = {
	    {"self", "1x", "-",
		"bad LISTEN_FDS: 1x (expected a number of sockets from 1)"},
	    {"self", "0", "-",
		"bad LISTEN_FDS: 0 (expected a number of sockets from 1)"},
	    {"self", "-1", "-",
		"bad LISTEN_FDS: -1 (expected a number of sockets from 1)"},
	    {"self", "", "-",
		"bad LISTEN_FDS:  (expected a number of sockets from 1)"},
	    {"self", "99999999999", "-", "bad LISTEN_FDS: 99999999999 "
		"(expected a number of sockets from 1)"},
	    {"12x", "1", "-", "bad LISTEN_PID: 12x (expected a process id)"},
	    {"", "1", "-", "bad LISTEN_PID:  (expected a process id)"},
	    {"0", "1", "-", "bad LISTEN_PID: 0 (expected a process id)"},
	    {"self", "2", "json",
		"LISTEN_FDNAMES names 1 socket and LISTEN_FDS passes 2: json"},
	    {"self", "1", "json:http", "LISTEN_FDNAMES names 2 sockets and "
		"LISTEN_FDS passes 1: json:http"},
	    {"self", "2", "", "LISTEN_FDNAMES names 0 sockets and "
		"LISTEN_FDS passes 2: "},
	    {"self", "3", "-",
		"LISTEN_FDS passes 3 sockets but fd 5 is not open"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char **v = NULL;
		int n = listen_fds(bad[i].pid, bad[i].fds, bad[i].names, &v);
		if (n != -1)
			printf("#   case %zu: %d, not -1\n", i, n);
		CHECK(n == -1 && !v);
		CHECK_STR(why, bad[i].why);
	}
}

/* Half the interval systemd gave, in ms; 0: no watchdog of ours. */
static uint64_t
watchdog(const char *usec, const char *pid)
{
	char self[32];
	snprintf(self, sizeof self, "%ld", (long)getpid());
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	if (usec)
		setenv("WATCHDOG_USEC", usec, 1);
	if (pid)
		setenv("WATCHDOG_PID", strcmp(pid, "self") ? pid : self, 1);
	return gk_watchdog_interval_ms();
}

TEST(watchdog_variables)
{
	char self_x[40];
	snprintf(self_x, sizeof self_x, "%ldx", (long)getpid());
	CHECK(watchdog(NULL, NULL) == 0);
	CHECK(watchdog("400000", NULL) == 200);
	CHECK(watchdog("400000", "self") == 200);
	CHECK(watchdog("1000", "self") == 1); /* never 0 once enabled */
	CHECK(watchdog("400000", "1") == 0);  /* another process's */
	CHECK(watchdog("400000", self_x) == 0);
	CHECK(watchdog("400000x", "self") == 0);
	CHECK(watchdog("0", "self") == 0);
	CHECK(watchdog("", NULL) == 0);
	CHECK(watchdog("-5", NULL) == 0);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

int
main(void)
{
	RUN(passed_with_names);
	RUN(not_ours);
	RUN(malformed_is_an_error);
	RUN(watchdog_variables);
	return UNIT_END();
}
