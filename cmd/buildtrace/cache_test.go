package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCacheRefusesWhatOthersCanWrite: the base cache decides verdicts, so a
// directory or entry that another local user owns or can write is not read.
func TestCacheRefusesWhatOthersCanWrite(t *testing.T) {
	var warn bytes.Buffer
	dir := filepath.Join(t.TempDir(), "base")
	c := openCache(dir, &warn) // not there yet: made on the first Put
	if c == nil {
		t.Fatalf("a missing directory: no cache (%s)", warn.String())
	}
	c.Put("k", []byte("view"))
	if b, ok := c.Get("k"); !ok || string(b) != "view" {
		t.Fatalf("Get after Put = %q, %v", b, ok)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory mode: %v, %v", fi, err)
	}
	if err := os.Chmod(filepath.Join(dir, "k"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("k"); ok {
		t.Error("an entry others can write was read")
	}
	if err := os.Chmod(filepath.Join(dir, "k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if c := openCache(dir, &warn); c != nil || !strings.Contains(warn.String(), "can be written by other users") {
		t.Errorf("a world-writable directory was used (warning %q)", warn.String())
	}
	if _, ok := c.Get("k"); ok {
		t.Error("an entry in a directory others can write was read")
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		warn.Reset()
		if c := openCache(dir, &warn); c != nil || !strings.Contains(warn.String(), "another user") {
			t.Errorf("another user's directory was used (warning %q)", warn.String())
		}
	}
	if openCache("", &warn) != nil {
		t.Error(`--cache-dir "" gave a cache`)
	}
}
