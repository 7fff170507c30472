// Command arm32 changes files and connects through 32-bit arm (EABI) system
// calls, for TestArm32Calls on an arm64 kernel (hack/arm64-vm.sh builds it
// with GOARCH=arm). Usage: arm32 <dir> <host:port>.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: arm32 <dir> <host:port>")
		os.Exit(2)
	}
	dir := os.Args[1]
	for _, step := range []func() error{
		func() error { return os.WriteFile(dir+"/a32.txt", []byte("x"), 0o644) },
		func() error { return os.Mkdir(dir+"/d32", 0o755) },
		func() error { return os.Rename(dir+"/a32.txt", dir+"/d32/b32.txt") },
		func() error { return os.Chmod(dir+"/d32/b32.txt", 0o600) },
		func() error { return os.Symlink("tgt32", dir+"/l32") },
		func() error { return os.Remove(dir + "/l32") },
		func() error { return os.Remove(dir + "/d32/b32.txt") },
	} {
		if err := step(); err != nil {
			fmt.Fprintln(os.Stderr, "arm32:", err)
			os.Exit(1)
		}
	}
	if c, err := net.Dial("tcp4", os.Args[2]); err == nil {
		c.Close()
	}
}
