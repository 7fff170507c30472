// Package steptag names the cgroups that tie a running BuildKit ExecOp to a
// buildtrace step. It is the whole contract between the frontend (which sets
// the cgroup parent on every ExecOp) and the tracer (which follows every
// cgroup under it): neither imports the other.
package steptag

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Root is the cgroup directory, relative to a hierarchy's root, under which
// every tagged ExecOp runs. BuildKit's runc executor puts a container at
// /<cgroup parent>/buildkit/<container id>.
const Root = "buildtrace"

// IDLen is the length of a step ID in hex characters (128 bits).
const IDLen = 32

// NewID derives a step ID from the bytes that identify a step. The same
// identity always yields the same ID, so BuildKit's cache keys stay stable.
func NewID(identity []byte) string {
	sum := sha256.Sum256(identity)
	return hex.EncodeToString(sum[:])[:IDLen]
}

// Valid reports whether id has the form NewID produces.
func Valid(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// CgroupParent is the value for an ExecOp's Meta.CgroupParent.
func CgroupParent(stepID string) string {
	return Root + "/" + stepID
}

// Container is what a container cgroup path says about a step.
type Container struct {
	StepID      string
	ContainerID string // BuildKit's executor ID, also its bundle directory name
	// Prefix is the cgroup above /buildtrace/: "" for a buildkitd on the
	// host, its container's cgroup (e.g. "/docker/<id>") for a buildkitd in
	// a container with a cgroup namespace of its own.
	Prefix string
}

// ParseCgroup parses a cgroup path as the kernel reports it
// ("[<prefix>]/buildtrace/<step>/buildkit/<container>"). ok is false for
// any other path, including the intermediate directories.
func ParseCgroup(path string) (c Container, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	n := len(parts)
	if n < 4 {
		return Container{}, false
	}
	tail := parts[n-4:]
	if tail[0] != Root || tail[2] != "buildkit" || !Valid(tail[1]) || tail[3] == "" {
		return Container{}, false
	}
	for _, p := range parts[:n-4] {
		if p == "" || p == Root {
			return Container{}, false // one step tree inside another
		}
	}
	c = Container{StepID: tail[1], ContainerID: tail[3]}
	if n > 4 {
		c.Prefix = "/" + strings.Join(parts[:n-4], "/")
	}
	return c, true
}

// StepOfCgroup returns the step ID of any cgroup path at or below a step's
// directory, wherever that directory is (a buildkitd in a container puts
// it below the container's cgroup).
func StepOfCgroup(path string) (string, error) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == Root && Valid(parts[i+1]) {
			return parts[i+1], nil
		}
	}
	return "", fmt.Errorf("cgroup %q is not under /%s/<step id>", path, Root)
}

// StepNonce derives a step's nonce from the build's nonce secret
// (tracerapi.NonceRoot): the frontend puts it into the step's container,
// the tracer derives it again to attribute the container.
func StepNonce(buildSecret, stepID string) string {
	m := hmac.New(sha256.New, []byte(buildSecret))
	m.Write([]byte(stepID))
	return hex.EncodeToString(m.Sum(nil))[:32]
}
