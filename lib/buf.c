/* buf.c: growable byte buffers and allocation that cannot fail. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gokit.h"

static void
out_of_memory(void)
{
	static const char msg[] = "gokit: fatal: out of memory\n";
	(void)!write(2, msg, sizeof msg - 1);
	_exit(GK_EXIT_NOMEM);
}

void *
gk_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		out_of_memory();
	return p;
}

void *
gk_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		out_of_memory();
	return p;
}

void *
gk_xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		out_of_memory();
	return p;
}

char *
gk_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(gk_xmalloc(n), s, n);
}

void
(gk_buf_reserve)(gk_buf *b, size_t extra)
{
	if (b->cap - b->len > extra)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap - b->len <= extra)
		cap *= 2;
	b->data = gk_xrealloc(b->data, cap);
	b->cap = cap;
}

void
(gk_buf_add)(gk_buf *b, const void *p, size_t n)
{
	if (!n)
		return;
	gk_buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void
(gk_buf_addc)(gk_buf *b, char c)
{
	gk_buf_reserve(b, 1);
	b->data[b->len++] = c;
}

void
gk_buf_adds(gk_buf *b, const char *s)
{
	gk_buf_add(b, s, strlen(s));
}

void
gk_buf_addf(gk_buf *b, const char *fmt, ...)
{
	va_list ap;
	gk_buf_reserve(b, 64);
	va_start(ap, fmt);
	int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= b->cap - b->len) {
		gk_buf_reserve(b, (size_t)n + 1);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

void
gk_buf_adduint(gk_buf *b, uint64_t v)
{
	/* Two digits a step: timestamps in µs have 16. */
#define D10(x) #x "0" #x "1" #x "2" #x "3" #x "4" #x "5" #x "6" #x "7" \
	#x "8" #x "9"
	static const char pairs[201] = D10(0) D10(1) D10(2) D10(3) D10(4)
	    D10(5) D10(6) D10(7) D10(8) D10(9);
#undef D10
	char tmp[24];
	int i = sizeof tmp;
	while (v >= 100) {
		unsigned r = (unsigned)(v % 100);
		v /= 100;
		i -= 2;
		memcpy(tmp + i, pairs + 2 * r, 2);
	}
	if (v >= 10) {
		i -= 2;
		memcpy(tmp + i, pairs + 2 * v, 2);
	} else
		tmp[--i] = (char)('0' + v);
	gk_buf_add(b, tmp + i, sizeof tmp - (size_t)i);
}

void
gk_buf_consume(gk_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void
gk_buf_reset(gk_buf *b)
{
	b->len = 0;
}

void
gk_buf_free(gk_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *
gk_buf_cstr(gk_buf *b)
{
	gk_buf_reserve(b, 1);
	b->data[b->len] = 0;
	return b->data;
}
