/* sha256.h — SHA-256 of a buffer as 64 lowercase hex digits (+ NUL). */
#ifndef INNSERVE_SHA256_H
#define INNSERVE_SHA256_H
#include <stddef.h>
#include <stdint.h>
void sha256_hex(const uint8_t *data, size_t len, char out[65]);
#endif
