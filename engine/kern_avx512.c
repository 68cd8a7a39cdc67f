/*
 * kern_avx512.c — the AVX-512F kernel path (x86-64; built with -mavx512f, run only when
 * cpuid reports AVX-512F, AVX2 and FMA).  The body is kern_impl.h.
 */
#if defined(__x86_64__)
#define KERN_ISA 2
#define KERN_TABLE kern_avx512
#include "kern_impl.h"
#endif
