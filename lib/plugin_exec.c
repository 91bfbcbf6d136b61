/*
 * plugin_exec.c: finding and running an exporter plugin (plugin_exec.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gokit.h"
#include "plugin_exec.h"

/* The directory of this program's executable; "" when unknown. */
static void
self_dir(char *dir, size_t size)
{
	ssize_t n = readlink("/proc/self/exe", dir, size - 1);
	if (n <= 0) {
		dir[0] = 0;
		return;
	}
	dir[n] = 0;
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
}

void
gk_plugin_exec(const char *name, char **argv)
{
	char prog[128], path[PATH_MAX + 200], self[PATH_MAX];
	snprintf(prog, sizeof prog, "gk-export-%s", name);
	argv[0] = prog;
	if (strchr(name, '/')) {
		errno = EINVAL;
		return;
	}
	const char *dirs[4] = {getenv("GK_EXPORTER_DIR"), GK_LIBEXEC, NULL,
	                       NULL};
	char d1[PATH_MAX + 32], d2[PATH_MAX + 32];
	self_dir(self, sizeof self);
	if (self[0]) {
		snprintf(d1, sizeof d1, "%s/../libexec/gokit", self);
		snprintf(d2, sizeof d2, "%s/../exporters", self);
		dirs[2] = d1;
		dirs[3] = d2;
	}
	for (int i = 0; i < 4; i++) {
		if (!dirs[i] || !*dirs[i])
			continue;
		snprintf(path, sizeof path, "%s/%s", dirs[i], prog);
		if (access(path, X_OK) == 0)
			execv(path, argv);
	}
	execvp(prog, argv);
}
