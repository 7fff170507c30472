// Package steptag names the cgroups that tie a running BuildKit ExecOp to a
// buildtrace step. It is the whole contract between the frontend (which sets
// the cgroup parent on every ExecOp) and the tracer (which follows every
// cgroup under it): neither imports the other.
package steptag

import (
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
}

// ParseCgroup parses a cgroup path as the kernel reports it
// ("/buildtrace/<step>/buildkit/<container>"). ok is false for any other
// path, including the intermediate directories.
func ParseCgroup(path string) (c Container, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) != 4 || parts[0] != Root || parts[2] != "buildkit" || !Valid(parts[1]) || parts[3] == "" {
		return Container{}, false
	}
	return Container{StepID: parts[1], ContainerID: parts[3]}, true
}

// StepOfCgroup returns the step ID of any cgroup path at or below a step's
// directory.
func StepOfCgroup(path string) (string, error) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) < 2 || parts[0] != Root || !Valid(parts[1]) {
		return "", fmt.Errorf("cgroup %q is not under /%s/<step id>", path, Root)
	}
	return parts[1], nil
}
