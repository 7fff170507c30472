#ifndef CHECKSUM_H
#define CHECKSUM_H
#include <stddef.h>
#include <stdint.h>

/* Adler-32 of a buffer, continuing from adler (start with 1). */
uint32_t adler32(uint32_t adler, const unsigned char *buf, size_t len);

#endif
