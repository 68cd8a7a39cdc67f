/*
 * ctl_offline.h — innctl's commands that read a checkpoint file directly through the
 * engine (no daemon): inspect and verify.
 */
#ifndef INNSERVE_CTL_OFFLINE_H
#define INNSERVE_CTL_OFFLINE_H

#include <stdbool.h>
#include <stdio.h>

/* Print what a checkpoint holds (manifest summary, dims, names, parameter count, blocks,
 * certificate, self-test result) to out, as text or as one JSON document.  Returns the
 * exit code: 0 loaded and self-test passed, 4 the file is invalid or its self-test
 * failed. */
int ctl_inspect(const char *path, bool json, FILE *out);

/* Load each file with its embedded test vectors; print one PASS/FAIL line per file
 * (nothing on success when quiet).  Returns 0 when all pass, 4 otherwise. */
int ctl_verify(const char *const *paths, int n, bool quiet, bool json, FILE *out);

#endif
