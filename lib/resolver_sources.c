/* resolver_sources.c: the table of resolver sources by scheme. */
#include <string.h>

#include "resolver_source.h"

static const gk_resolver_source *const sources[] = {
    &gk_resolver_static,
    &gk_resolver_file,
    &gk_resolver_dns,
    &gk_resolver_dns_srv,
    &gk_resolver_consul,
    &gk_resolver_etcd,
    NULL,
};

const gk_resolver_source *
gk__resolver_source(const char *scheme)
{
	for (int i = 0; sources[i]; i++)
		if (!strcmp(sources[i]->scheme, scheme))
			return sources[i];
	return NULL;
}
