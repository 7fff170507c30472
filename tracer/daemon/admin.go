package daemon

import (
	"golang.org/x/sys/unix"

	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// listenAdmin opens the admin socket: a unix socket only root can connect
// to (mode 0600 in a 0700 directory), for reading any build's trace while
// debugging. Root on the tracer's host is trusted anyway: it can read the
// signing key.
func listenAdmin(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path) // a socket left by an earlier run
	}
	// The socket is created with the umask's mode; close it down before
	// anyone can connect.
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return ln, nil
}

func adminServer(h http.Handler, maxWait time.Duration) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: maxWait + time.Minute}
}

func umask(m int) int { return unix.Umask(m) }
