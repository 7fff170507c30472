package steptag

import "testing"

func TestParseCgroup(t *testing.T) {
	id := NewID([]byte("op"))
	if !Valid(id) {
		t.Fatalf("NewID produced invalid id %q", id)
	}
	if NewID([]byte("op")) != id || NewID([]byte("op2")) == id {
		t.Fatal("NewID is not a deterministic function of its input")
	}
	c, ok := ParseCgroup("/" + CgroupParent(id) + "/buildkit/abc123")
	if !ok || c.StepID != id || c.ContainerID != "abc123" {
		t.Fatalf("ParseCgroup = %+v, %v", c, ok)
	}
	for _, p := range []string{"/buildtrace/" + id, "/buildtrace/" + id + "/buildkit", "/buildkit/abc", "/buildtrace/XYZ/buildkit/a", "/buildtrace/" + id + "/other/a"} {
		if _, ok := ParseCgroup(p); ok {
			t.Errorf("ParseCgroup(%q) accepted", p)
		}
	}
	if s, err := StepOfCgroup("/buildtrace/" + id + "/buildkit"); err != nil || s != id {
		t.Errorf("StepOfCgroup = %q, %v", s, err)
	}
	if _, err := StepOfCgroup("/system.slice/x"); err == nil {
		t.Error("StepOfCgroup accepted a foreign cgroup")
	}
	nested := "/docker/abc/" + CgroupParent(id) + "/buildkit/xyz"
	if c, ok := ParseCgroup(nested); !ok || c.StepID != id || c.ContainerID != "xyz" || c.Prefix != "/docker/abc" {
		t.Errorf("ParseCgroup(%q) = %+v, %v", nested, c, ok)
	}
	if c, _ := ParseCgroup("/" + CgroupParent(id) + "/buildkit/abc123"); c.Prefix != "" {
		t.Errorf("top-level prefix = %q", c.Prefix)
	}
	for _, p := range []string{"/docker/abc/buildtrace/" + id + "/buildkit", "/buildtrace/" + id + "/buildtrace/" + id + "/buildkit/a", "/docker/abc/buildkit/x"} {
		if _, ok := ParseCgroup(p); ok {
			t.Errorf("ParseCgroup(%q) accepted", p)
		}
	}
	if s, err := StepOfCgroup("/docker/abc/buildtrace/" + id + "/buildkit/x"); err != nil || s != id {
		t.Errorf("nested StepOfCgroup = %q, %v", s, err)
	}
	if _, err := StepOfCgroup("/docker/abc/buildkit/x"); err == nil {
		t.Error("StepOfCgroup accepted a frontend's nested cgroup")
	}
}
