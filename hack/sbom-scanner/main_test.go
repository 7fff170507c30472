package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestScanWritesSPDXStatement(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "etc", "hello"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("etc/hello", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BUILDKIT_SCAN_SOURCE", src)
	t.Setenv("BUILDKIT_SCAN_DESTINATION", dst)
	t.Setenv("BUILDKIT_SCAN_SOURCE_EXTRAS", "")
	if err := run(); err != nil {
		t.Fatal(err)
	}
	dt, err := os.ReadFile(filepath.Join(dst, "sbom.spdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Type          string          `json:"_type"`
		PredicateType string          `json:"predicateType"`
		Subject       []any           `json:"subject"`
		Predicate     json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(dt, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != statementInToto || st.PredicateType != predicateSPDX || st.Subject == nil {
		t.Fatalf("statement header = %q %q %v", st.Type, st.PredicateType, st.Subject)
	}
	var doc document
	if err := json.Unmarshal(st.Predicate, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || doc.SPDXID != "SPDXRef-DOCUMENT" || doc.DocumentNamespace == "" {
		t.Errorf("document header = %+v", doc)
	}
	if _, err := time.Parse(time.RFC3339, doc.CreationInfo.Created); err != nil {
		t.Errorf("created: %v", err)
	}
	if len(doc.Files) != 1 {
		t.Fatalf("files = %+v, want only the regular file", doc.Files)
	}
	f := doc.Files[0]
	sum := sha256.Sum256([]byte("hi\n"))
	if f.FileName != "/etc/hello" || f.SPDXID != "SPDXRef-File-0-etc-hello" || len(f.Checksums) != 2 ||
		f.Checksums[0].Algorithm != "SHA1" || f.Checksums[1] != (checksum{"SHA256", hex.EncodeToString(sum[:])}) {
		t.Errorf("file = %+v", f)
	}
	if len(doc.Relationships) != 1 || doc.Relationships[0] != (relationship{"SPDXRef-DOCUMENT", "DESCRIBES", f.SPDXID}) {
		t.Errorf("relationships = %+v", doc.Relationships)
	}
}

func TestScanNeedsEnvironment(t *testing.T) {
	t.Setenv("BUILDKIT_SCAN_SOURCE", "")
	t.Setenv("BUILDKIT_SCAN_DESTINATION", "")
	if err := run(); err == nil {
		t.Fatal("run without BuildKit's environment succeeded")
	}
}
