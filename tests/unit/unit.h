/* unit.h: a TAP producer for the C unit tests of libgokit. */
#ifndef GK_UNIT_H
#define GK_UNIT_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_n, unit_failed, unit_case_failed;

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			printf("#   %s:%d: check failed: %s\n", __FILE__,     \
			    __LINE__, #cond);                                  \
			unit_case_failed = 1;                                \
		}                                                            \
	} while (0)

#define CHECK_STR(a, b)                                                      \
	do {                                                                 \
		const char *a_ = (a), *b_ = (b);                             \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                     \
			printf("#   %s:%d: \"%s\" != \"%s\"\n", __FILE__,     \
			    __LINE__, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
			unit_case_failed = 1;                                \
		}                                                            \
	} while (0)

/* TEST(name) { ... } defines a case; RUN(name) runs it as one TAP line. */
#define TEST(name) static void name(void)
#define RUN(name)                                                            \
	do {                                                                 \
		unit_case_failed = 0;                                        \
		name();                                                      \
		unit_n++;                                                    \
		if (unit_case_failed)                                        \
			unit_failed++;                                       \
		printf("%s %d - %s\n", unit_case_failed ? "not ok" : "ok",   \
		    unit_n, #name);                                          \
		fflush(stdout);                                              \
	} while (0)
#define UNIT_END() (printf("1..%d\n", unit_n), unit_failed ? 1 : 0)
#endif
