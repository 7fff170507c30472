#include "checksum.h"

uint32_t adler32(uint32_t adler, const unsigned char *buf, size_t len)
{
	uint32_t a = adler & 0xffff, b = adler >> 16;
	for (size_t i = 0; i < len; i++) {
		a = (a + buf[i]) % 65521;
		b = (b + a) % 65521;
	}
	return (b << 16) | a;
}
