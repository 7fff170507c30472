/* c-app: prints the Adler-32 checksum of each file named, or of stdin. */
#include <stdio.h>
#include "checksum.h"

static int sum_file(const char *name, FILE *f)
{
	unsigned char buf[65536];
	uint32_t adler = 1;
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		adler = adler32(adler, buf, n);
	if (ferror(f)) {
		perror(name);
		return 1;
	}
	printf("%08x  %s\n", (unsigned)adler, name);
	return 0;
}

int main(int argc, char **argv)
{
	int rc = 0;
	if (argc < 2)
		return sum_file("-", stdin);
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f) {
			perror(argv[i]);
			rc = 1;
			continue;
		}
		rc |= sum_file(argv[i], f);
		fclose(f);
	}
	return rc;
}
