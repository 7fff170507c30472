package fsdiff

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
)

// TestHardLinkTargetNamesADirectory: a hard link whose target is a
// symlink's name with a trailing slash ("app/a/"). A lexical clean reads
// the symlink, so the link would count as a second symlink; containerd's
// extractor resolves the target through the symlink (a trailing slash
// makes it a directory to resolve), links the file, and applies the link
// header's mode (a symlink's 0777) to it (redteam11).
func TestHardLinkTargetNamesADirectory(t *testing.T) {
	ctx := context.Background()
	dir := tarEntry{hdr: tar.Header{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o755}}
	secret := tarEntry{hdr: tar.Header{Name: "app/secret", Mode: 0o600}, body: "key"}
	sym := func(name string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: "secret", Mode: 0o777}}
	}
	honest, _, err := FromLayer(ctx, layerTar(t, dir, secret, sym("app/a"), sym("app/b")), nil)
	must(t, err)
	for _, target := range []string{"app/a/", "app/a/.", "/app/a/"} {
		link := tarEntry{hdr: tar.Header{Name: "app/b", Typeflag: tar.TypeLink, Linkname: target, Mode: 0o777}}
		forged := func() []tarEntry { return []tarEntry{dir, secret, sym("app/a"), link} }
		d, _, err := FromLayer(ctx, layerTar(t, forged()...), nil)
		if err == nil {
			t.Errorf("link target %q: accepted, digest %s (honest %s)", target, d, honest)
		}
		if os.Geteuid() != 0 {
			continue
		}
		root := t.TempDir()
		if _, err := archive.Apply(ctx, root, layerTar(t, forged()...)); err != nil {
			t.Logf("link target %q: containerd: %v", target, err)
			continue
		}
		fi, err := os.Lstat(filepath.Join(root, "app/secret"))
		must(t, err)
		t.Logf("link target %q: containerd leaves /app/secret %v", target, fi.Mode())
	}
}
