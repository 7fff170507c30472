// Exits 0 when this kernel runs an i386 system call (int $0x80, getpid)
// from a 64-bit task; a kernel without IA32 emulation kills it instead.
#include <unistd.h>

int main(void)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory", "r8", "r9", "r10", "r11");
	return r == getpid() ? 0 : 1;
}
