/*
 * kern_portable.c — the portable kernel path: plain C11 with fmaf, for every CPU (the
 * reference the vector paths match bit for bit).  The body is kern_impl.h.
 */
#define KERN_ISA 0
#define KERN_TABLE kern_portable
#include "kern_impl.h"
