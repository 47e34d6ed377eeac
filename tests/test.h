/* A small test harness: each test is a function; CHECK records a failure with its place and carries on. Every
 * test binary ends with "N passed, M failed" (counting test functions) and exits 1 when any failed;
 * tests/run.sh adds the counts up. */
#ifndef TEST_TEST_H
#define TEST_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures_in_case;
static int test_passed, test_failed;

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) { \
			test_failures_in_case++; \
			fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, " " __VA_ARGS__); \
			fputc('\n', stderr); \
		} \
	} while (0)

/* A check whose condition says it all. */
#define EXPECT(cond) CHECK(cond, "%s", "")

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_CLOSE(a, b, tol) \
	do { \
		double ca_ = (double)(a), cb_ = (double)(b); \
		CHECK(fabs(ca_ - cb_) <= (tol) * fmax(1.0, fabs(cb_)), "%s = %.9g, %s = %.9g, tol %g", #a, ca_, #b, \
		      cb_, (double)(tol)); \
	} while (0)

#define RUN(fn) \
	do { \
		test_failures_in_case = 0; \
		fn(); \
		if (test_failures_in_case) { \
			test_failed++; \
			printf("FAIL %s\n", #fn); \
		} else { \
			test_passed++; \
			printf("ok   %s\n", #fn); \
		} \
		fflush(stdout); \
	} while (0)

static inline int test_summary(void)
{
	printf("%d passed, %d failed\n", test_passed, test_failed);
	return test_failed ? 1 : 0;
}

/* Deterministic pseudo-random numbers for test data (xorshift64*). */
static inline unsigned long long test_rand_u64(unsigned long long *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/* Uniform in [-1, 1). */
static inline float test_rand_f(unsigned long long *s)
{
	return (float)((test_rand_u64(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

#endif
