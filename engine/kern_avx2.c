/*
 * kern_avx2.c — the AVX2 + FMA kernel path (x86-64; built with -mavx2 -mfma, run only when
 * cpuid reports both).  The body is kern_impl.h.
 */
#if defined(__x86_64__)
#define KERN_ISA 1
#define KERN_TABLE kern_avx2
#include "kern_impl.h"
#endif
