/* hash.c: the one string hash of the library's tables (FNV-1a). */
#include "gokit.h"

uint64_t
gk__hash_bytes(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
	return h;
}
