/*
 * ctl_offline.h — innctl's commands that read a checkpoint file directly through the
 * engine (no daemon): inspect and verify.
 */
#ifndef INNSERVE_CTL_OFFLINE_H
#define INNSERVE_CTL_OFFLINE_H

#include <stdbool.h>
#include <stdio.h>

/* Print what a checkpoint holds to out.  As text: manifest summary, dims, names, parameter
 * count, blocks, certificate, self-test result.  As JSON: exactly the metadata document
 * the daemon answers to GET /v1/models/{name} for the file (proto_write_metadata), named
 * as the daemon's repository names it (NAME/VERSION/model.safetensors or NAME.safetensors,
 * version 1), with load_ms this process's load; a failed self-test still prints it (the
 * message goes to stderr).  Returns the exit code: 0 loaded and self-test passed, 4 the
 * file is invalid or its self-test failed, 5 out of memory. */
int ctl_inspect(const char *path, bool json, FILE *out);

/* Load each file with its embedded test vectors; print one PASS/FAIL line per file
 * (nothing on success when quiet).  Returns 0 when all pass, 4 otherwise. */
int ctl_verify(const char *const *paths, int n, bool quiet, bool json, FILE *out);

#endif
