/* resolver_static.c: static:10.0.0.1:80,10.0.0.2:80 (weights as a=80*3). */
#include <stdlib.h>
#include <string.h>

#include "resolver_source.h"

static int
static_start(gk_resolver *r, const char *rest, void **state, const char **why)
{
	*state = NULL;
	gk_endpoint *set = NULL;
	size_t n = 0, cap = 0;
	while (*rest) {
		size_t len = strcspn(rest, ",");
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			set = gk_xrealloc(set, cap * sizeof *set);
		}
		/* "host:port" or "host:port*weight" */
		char one[300];
		if (len >= sizeof one) {
			free(set);
			*why = "endpoint too long";
			return -1;
		}
		memcpy(one, rest, len);
		one[len] = 0;
		char *star = strchr(one, '*');
		if (star)
			*star = ' ';
		if (gk__resolver_parse_line(one, strlen(one), &set[n]) != 0) {
			free(set);
			*why = "expected static:HOST:PORT[*WEIGHT],...";
			return -1;
		}
		n++;
		rest += len;
		if (*rest == ',')
			rest++;
	}
	if (!n) {
		*why = "no endpoints: expected static:HOST:PORT[*WEIGHT],...";
		return -1;
	}
	gk__resolver_publish(r, set, n);
	free(set);
	return 0;
}

const gk_resolver_source gk_resolver_static = {"static", static_start, NULL};
