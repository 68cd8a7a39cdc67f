/*
 * allocwrap.h — allocation-failure injection for the Check runners linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=strdup,
 * --wrap=aligned_alloc (Makefile: ALLOC_WRAP): every allocation of engine/, proto/,
 * server/ and the test goes through allocwrap.c's wrappers, and cJSON's too after
 * af_hooks.  The wrappers count live blocks (the leak check) and fail the allocation whose
 * number is armed.  Counters are atomic: allocations of pool worker threads count too.
 */
#ifndef INNSERVE_ALLOCWRAP_H
#define INNSERVE_ALLOCWRAP_H

#include <stdbool.h>

/* Routes cJSON's allocations through the wrappers. */
void af_hooks(void);
/* Blocks allocated through the wrappers and not freed. */
long af_live(void);

/* An operation under test: 1 = it succeeded, 0 = it failed cleanly (its out-of-memory
 * status and a message), -1 = anything else, described in why.  It must not call Check's
 * assertions: they allocate, and the wrappers would count and fail those too.  It may
 * call af_hold / af_release around set-up work that is not under test. */
typedef int (*af_op)(void *arg, char why[512]);

/* Suspends the armed failure (allocations are neither counted nor failed, but still
 * tracked as live) until af_release. */
void af_hold(void);
void af_release(void);

/* Runs op with allocation 1, 2, ... failing until a run reaches no failure.  Each failed
 * run must fail cleanly and leave no block allocated; the last run must succeed.  Returns
 * the number of allocations the operation makes. */
long af_run_failing(const char *what, af_op op, void *arg);

#endif
