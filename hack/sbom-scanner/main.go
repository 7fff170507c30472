// Command sbom-scanner is a minimal BuildKit SBOM generator for the offline
// lab, used with `--attest type=sbom,generator=<image>` in place of
// docker/buildkit-syft-scanner, which cannot be pulled without the internet.
//
// BuildKit runs the generator image with the scanned image's root file system
// mounted read-only at $BUILDKIT_SCAN_SOURCE, optional extra stages under
// $BUILDKIT_SCAN_SOURCE_EXTRAS/<name>, and collects every file written to
// $BUILDKIT_SCAN_DESTINATION as an in-toto statement
// (frontend/attestations/sbom and exporter/attestation/unbundle.go of
// BuildKit). This scanner writes one SPDX 2.3 document per source listing
// every regular file with its SHA-1 (required by SPDX for files) and SHA-256.
// It knows nothing about packages: it is an inventory of files, not a
// package analysis.
package main

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	predicateSPDX   = "https://spdx.dev/Document"
	statementInToto = "https://in-toto.io/Statement/v0.1"
	toolName        = "buildtrace-sbom-scanner"
	// coreName is the file name stem BuildKit recognises as the core SBOM
	// (result.AttestationSBOMCore = "sbom"): only the core document is
	// supplemented with layer IDs.
	coreName = "sbom"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sbom-scanner:", err)
		os.Exit(1)
	}
}

func run() error {
	src := os.Getenv("BUILDKIT_SCAN_SOURCE")
	dst := os.Getenv("BUILDKIT_SCAN_DESTINATION")
	if src == "" || dst == "" {
		return fmt.Errorf("BUILDKIT_SCAN_SOURCE and BUILDKIT_SCAN_DESTINATION must be set (this program is run by BuildKit as an SBOM generator)")
	}
	now := time.Now().UTC()
	if err := scanTo(src, filepath.Join(dst, coreName+".spdx.json"), coreName, now); err != nil {
		return err
	}
	extras := os.Getenv("BUILDKIT_SCAN_SOURCE_EXTRAS")
	if extras == "" {
		return nil
	}
	entries, err := os.ReadDir(extras)
	if err != nil {
		return fmt.Errorf("reading extra scan sources: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if err := scanTo(filepath.Join(extras, e.Name()), filepath.Join(dst, e.Name()+".spdx.json"), e.Name(), now); err != nil {
			return err
		}
	}
	return nil
}

// scanTo writes the in-toto statement for the tree at root to out.
func scanTo(root, out, name string, now time.Time) error {
	doc, err := scan(root, name, now)
	if err != nil {
		return err
	}
	st := statement{Type: statementInToto, PredicateType: predicateSPDX, Subject: []any{}, Predicate: doc}
	dt, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding SBOM of %s: %w", root, err)
	}
	if err := os.WriteFile(out, dt, 0o644); err != nil {
		return fmt.Errorf("writing SBOM: %w", err)
	}
	return nil
}

// statement is an in-toto statement with an empty subject: BuildKit sets the
// image manifest as subject when there is none.
type statement struct {
	Type          string    `json:"_type"`
	PredicateType string    `json:"predicateType"`
	Subject       []any     `json:"subject"`
	Predicate     *document `json:"predicate"`
}

// document is the subset of SPDX 2.3 (JSON) this scanner fills in.
type document struct {
	SPDXVersion       string         `json:"spdxVersion"`
	DataLicense       string         `json:"dataLicense"`
	SPDXID            string         `json:"SPDXID"`
	Name              string         `json:"name"`
	DocumentNamespace string         `json:"documentNamespace"`
	CreationInfo      creationInfo   `json:"creationInfo"`
	Files             []file         `json:"files"`
	Relationships     []relationship `json:"relationships"`
}

type creationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type file struct {
	FileName  string     `json:"fileName"`
	SPDXID    string     `json:"SPDXID"`
	Checksums []checksum `json:"checksums"`
	// NOASSERTION: the scanner does not look at licences.
	LicenseConcluded string `json:"licenseConcluded"`
	CopyrightText    string `json:"copyrightText"`
}

type checksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type relationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// scan lists the regular files under root. Symbolic links, directories and
// devices have no content of their own and are left out.
func scan(root, name string, now time.Time) (*document, error) {
	var files []file
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking %s: %w", p, err)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		s1, s256, err := digests(p)
		if err != nil {
			return err
		}
		files = append(files, file{
			FileName: "/" + filepath.ToSlash(rel),
			Checksums: []checksum{
				{Algorithm: "SHA1", Value: s1},
				{Algorithm: "SHA256", Value: s256},
			},
			LicenseConcluded: "NOASSERTION",
			CopyrightText:    "NOASSERTION",
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].FileName < files[j].FileName })
	doc := &document{
		SPDXVersion: "SPDX-2.3",
		DataLicense: "CC0-1.0",
		SPDXID:      "SPDXRef-DOCUMENT",
		Name:        name,
		// Unique per document, as SPDX asks; built from the content so a
		// rescan of the same tree gives the same namespace.
		DocumentNamespace: "https://buildtrace.invalid/sbom/" + name + "/" + treeDigest(files),
		CreationInfo: creationInfo{
			Created:  now.Format(time.RFC3339),
			Creators: []string{"Tool: " + toolName},
		},
		Files: files,
	}
	for i := range doc.Files {
		// SPDX IDs allow letters, digits, '.' and '-' only.
		doc.Files[i].SPDXID = fmt.Sprintf("SPDXRef-File-%d-%s", i, spdxIDPart(doc.Files[i].FileName))
		doc.Relationships = append(doc.Relationships, relationship{
			Element: "SPDXRef-DOCUMENT", Type: "DESCRIBES", Related: doc.Files[i].SPDXID,
		})
	}
	if doc.Relationships == nil {
		doc.Relationships = []relationship{}
	}
	if doc.Files == nil {
		doc.Files = []file{}
	}
	return doc, nil
}

func digests(p string) (sha1Hex, sha256Hex string, err error) {
	f, err := os.Open(p)
	if err != nil {
		return "", "", fmt.Errorf("opening %s: %w", p, err)
	}
	defer f.Close()
	h1, h256 := sha1.New(), sha256.New()
	if _, err := io.Copy(io.MultiWriter(h1, h256), f); err != nil {
		return "", "", fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h1.Sum(nil)), hex.EncodeToString(h256.Sum(nil)), nil
}

func treeDigest(files []file) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%s\x00", f.FileName, f.Checksums[1].Value)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func spdxIDPart(name string) string {
	var b strings.Builder
	for _, r := range path.Clean(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}
