/*
 * allocwrap.c — the counting, failing allocator wrappers of allocwrap.h and the
 * fail-each-allocation-in-turn driver (af_run_failing).
 */
#include "allocwrap.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "testutil.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__real_aligned_alloc(size_t a, size_t n);

/* the wrappers' own state: this test binary's allocator bookkeeping */
static atomic_long g_live;    /* blocks allocated through the wrappers and not freed */
static atomic_long g_count;   /* allocations since af_arm */
static atomic_long g_fail_at; /* 1-based allocation number to fail; 0: none */
static atomic_long g_held;    /* g_fail_at saved by af_hold */
static atomic_bool g_failed;  /* the armed allocation was reached (and failed) */

static bool af_fail_now(void)
{
    long at = atomic_load(&g_fail_at);
    if (at <= 0)
        return false;
    if (atomic_fetch_add(&g_count, 1) + 1 == at) {
        atomic_store(&g_failed, true);
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n)
{
    if (af_fail_now())
        return NULL;
    void *p = __real_malloc(n);
    if (p)
        atomic_fetch_add(&g_live, 1);
    return p;
}

void *__wrap_calloc(size_t n, size_t s)
{
    if (af_fail_now())
        return NULL;
    void *p = __real_calloc(n, s);
    if (p)
        atomic_fetch_add(&g_live, 1);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (af_fail_now())
        return NULL;
    void *q = __real_realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&g_live, 1);
    return q;
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    if (af_fail_now())
        return NULL;
    void *p = __real_aligned_alloc(a, n);
    if (p)
        atomic_fetch_add(&g_live, 1);
    return p;
}

void __wrap_free(void *p)
{
    if (p)
        atomic_fetch_sub(&g_live, 1);
    __real_free(p);
}

char *__wrap_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = __wrap_malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void af_hooks(void)
{
    cJSON_Hooks h = {__wrap_malloc, __wrap_free};
    cJSON_InitHooks(&h);
}

long af_live(void) { return atomic_load(&g_live); }

static void af_arm(long n)
{
    atomic_store(&g_count, 0);
    atomic_store(&g_failed, false);
    atomic_store(&g_held, 0);
    atomic_store(&g_fail_at, n);
}

static void af_disarm(void) { atomic_store(&g_fail_at, 0); }

void af_hold(void) { atomic_store(&g_held, atomic_exchange(&g_fail_at, 0)); }

void af_release(void) { atomic_store(&g_fail_at, atomic_exchange(&g_held, 0)); }

long af_run_failing(const char *what, af_op op, void *arg)
{
    long n = 1;
    for (;; n++) {
        char why[512] = "";
        long live0 = af_live();
        af_arm(n);
        int rc = op(arg, why);
        af_disarm();
        long leaked = af_live() - live0;
        ck_assert_msg(rc >= 0, "%s: allocation %ld failing: %s", what, n, why);
        ck_assert_msg(leaked == 0, "%s: allocation %ld failing leaks %ld blocks", what, n,
                      leaked);
        if (!atomic_load(&g_failed)) {
            ck_assert_msg(rc == 1, "%s: fails without an allocation failure: %s", what, why);
            break;
        }
        ck_assert_msg(rc == 0, "%s: allocation %ld failed but the operation says it succeeded",
                      what, n);
    }
    return n - 1;
}
