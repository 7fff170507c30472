package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunUsageAndKeygen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "t.key"), filepath.Join(dir, "t.pub")
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{nil, exitUsage, "usage"},
		{[]string{"bogus"}, exitUsage, "unknown command"},
		{[]string{"keygen", "--private", priv}, exitUsage, "both --private and --public"},
		{[]string{"keygen", "--private", priv, "--public", pub}, exitOK, "wrote private key"},
		{[]string{"keygen", "--private", priv, "--public", pub}, exitUsage, "refusing to overwrite"},
		{[]string{"verify", "img"}, exitUsage, "--key is required"},
		{[]string{"verify", "img", "--key", pub, "--output", "yaml"}, exitUsage, "--output must be"},
		{[]string{"verify", "img", "--key", filepath.Join(dir, "none")}, exitUsage, "reading key file"},
		{[]string{"verify", "--key", pub, "img", "--policy", filepath.Join(dir, "none")}, exitUsage, "reading policy"},
		{[]string{"show"}, exitUsage, "want exactly one IMAGE"},
		{[]string{"diff", "a"}, exitUsage, "want OLD and NEW"},
		{[]string{"diff", "a", "b", "--threshold", "-1"}, exitUsage, "must not be negative"},
	} {
		var out bytes.Buffer
		code := run(ctx, tc.args, &out, &out)
		if code != tc.code || !strings.Contains(out.String(), tc.out) {
			t.Errorf("run %q = %d, %q; want %d, %q", tc.args, code, out.String(), tc.code, tc.out)
		}
	}
	data, err := os.ReadFile(pub)
	if err != nil || !bytes.Contains(data, []byte("PUBLIC KEY")) {
		t.Fatalf("public key: %v %q", err, data)
	}
	if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v %v", fi.Mode(), err)
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := newFlagSet("x", &bytes.Buffer{})
	k := fs.String("key", "", "")
	pos, err := parseInterspersed(fs, []string{"a", "--key", "k", "b", "--", "--c"})
	if err != nil || *k != "k" || strings.Join(pos, ",") != "a,b,--c" {
		t.Fatalf("pos %q key %q err %v", pos, *k, err)
	}
}
