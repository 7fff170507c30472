package e2e

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/test/lab"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The red-team round 6 attacks: a registry writer after the build, against
// diff digest v2 and verify's reading of every layer (base included). Each
// test builds an honest image, forges one layer the way a writer would,
// shows what BuildKit's own unpacking (containerd's archive.Apply, as a pull
// does) makes of the forgery, and runs verify, which must refuse it.

// rt6Honest builds and pushes the honest image the forgeries start from:
// a COPY puts two files in /etc, and one traced RUN appends to one of them
// (hardening it), deletes the other and writes a file of its own.
func rt6Honest(t *testing.T, ctx context.Context, l *lab.Lab, name, n string) (*registry.Image, int) {
	t.Helper()
	body := "FROM BASE\nCOPY guard.conf remove-me /etc/\n" +
		"RUN echo hardened-" + n + " >> /etc/guard.conf && rm /etc/remove-me && mkdir -p /app && echo seen-" + n + " > /app/seen\n"
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": dockerfile(l, body),
		"guard.conf": "deny all " + n + "\n",
		"remove-me":  "backdoor " + n + "\n",
	})
	honest := l.Ref(name)
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
	out, code := runCLI(t, l, "verify", honest, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", honest)
	img := l.Image(t, ctx, honest)
	return img, layerOf(t, img.Manifests[0].Config, "RUN /bin/sh -c echo hardened")
}

// rt6Probe builds on the forged image (BuildKit pulls and unpacks it as any
// pull does) and returns the lines the probe printed about the three paths.
func rt6Probe(t *testing.T, ctx context.Context, l *lab.Lab, forged string) string {
	t.Helper()
	probe := lab.WriteContext(t, map[string]string{"Dockerfile": "FROM " + forged + "\n" +
		"RUN echo \"RT6 guard.conf=[$(cat /etc/guard.conf 2>&1 | tr '\\n' ' ')]\"; " +
		"echo \"RT6 remove-me=[$(cat /etc/remove-me 2>&1 | tr '\\n' ' ')]\"; " +
		"echo \"RT6 backdoor=[$(cat /etc/backdoor 2>&1 | tr '\\n' ' ')]\"; " +
		"echo \"RT6 seen=[$(cat /app/seen 2>&1 | tr '\\n' ' ')]\"\n"})
	res := l.Buildx(ctx, lab.Build{Context: probe, Args: []string{"--no-cache"}})
	if res.Err != nil {
		t.Logf("building on the forged image: %v\n%s", res.Err, res.Output)
	}
	var seen []string
	for _, line := range strings.Split(res.Output, "\n") {
		if i := strings.Index(line, "RT6 "); i >= 0 && !strings.Contains(line, "$(cat") {
			seen = append(seen, line[i:])
		}
	}
	t.Logf("a build on the forged image sees:\n%s", strings.Join(seen, "\n"))
	return strings.Join(seen, "\n")
}

// TestRedTeam6GlobalHeaderUndoesARun: a PAX global header ('g') carries a
// name. fsdiff.FromLayer skips 'g' entries outright, but containerd's
// applyNaive treats them as any entry up to createTarFile: it resolves the
// name and, when something is at that path, removes it (os.RemoveAll:
// "if path exists we almost always just want to remove and replace it"),
// and only then does createTarFile ignore the header. On an overlay
// snapshot (every layer above the first) the path is in the layer's own
// upper dir, so a 'g' header named like an entry of the same layer, placed
// after it, undoes that entry: a file the run created vanishes, a file it
// modified reverts to the lower layer's content, a whiteout is removed and
// the file the run deleted is back. The digest does not change.
func TestRedTeam6GlobalHeaderUndoesARun(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := randHex(8)
	img, i := rt6Honest(t, ctx, l, "redteam6-g", n)

	forged := l.Ref("redteam6-g")
	rtRetarLayer(t, ctx, img, forged, i, func(es []rtEnt) []rtEnt {
		for _, e := range es {
			t.Logf("RUN layer entry: %c %s", e.h.Typeflag, e.h.Name)
		}
		for _, name := range []string{"etc/guard.conf", "etc/remove-me", "app/seen"} {
			es = append(es, rtEnt{&tar.Header{Name: name, Typeflag: tar.TypeXGlobalHeader}, nil})
		}
		return es
	})
	seen := rt6Probe(t, ctx, l, forged)
	undone := strings.Contains(seen, "RT6 guard.conf=[deny all "+n+" ]") &&
		strings.Contains(seen, "RT6 remove-me=[backdoor "+n+" ]")

	out, code := runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	t.Logf("verify %s:\n%s", forged, out)
	if code == 0 || !strings.Contains(out, "[binding]") {
		t.Errorf("verify did not refuse the binding of %s (exit %d), whose traced RUN layer %d has 'g' headers after its entries etc/guard.conf, etc/.wh.remove-me and app/seen: unpacked, the run's changes are undone (the build on it saw the run's edit reverted and the file it deleted back: %v)", forged, code, i, undone)
	}
}

// rt6SkippableFrame returns a blob that verify reads as the tar honest and
// containerd as the tar evil. containerd's compression.DetectCompression
// takes a zstd skippable frame (magic 0x184D2A5?) for zstd; verify's
// Decompress knows only the frame magic 28 b5 2f fd and reads such a blob
// as an uncompressed tar. The blob is one 512-byte tar header of type 'g'
// (which FromLayer skips) whose first 8 bytes are the skippable frame's
// magic and length, the honest tar, which the frame's length covers, and a
// zstd frame of the evil tar.
func rt6SkippableFrame(t *testing.T, honest, evil []byte) []byte {
	t.Helper()
	h := make([]byte, 512)
	binary.LittleEndian.PutUint32(h[0:], 0x184D2A50)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(h)+len(honest)-8))
	rt6GlobalHeader(h)
	var z bytes.Buffer
	zw, err := zstd.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(evil); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return slices.Concat(h, honest, z.Bytes())
}

// rt6GlobalHeader fills the 512-byte block h, whose name field's first
// bytes the caller chose, as a tar header of type 'g' (a PAX global header
// with no records, which FromLayer skips and extractors create nothing for)
// with a valid checksum.
func rt6GlobalHeader(h []byte) {
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], "00000000000\x00")
	copy(h[136:], "00000000000\x00")
	h[156] = tar.TypeXGlobalHeader
	copy(h[257:], "ustar\x0000")
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
}

// TestRedTeam6ZstdSkippableFrame: verify and the extractor decompress a
// layer blob differently. verify reads the honest tar of the traced RUN's
// layer (same diff digest, bound to the traced run); BuildKit, as any
// containerd pull, unpacks a tar of the writer's choice: the run's edit
// reverted, a new file, the run's own file changed. The config's diff_ids
// name the evil tar, as BuildKit checks; verify never reads them.
func TestRedTeam6ZstdSkippableFrame(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := randHex(8)
	img, i := rt6Honest(t, ctx, l, "redteam6-zstd", n)
	m := img.Manifests[0]

	honest := rtLayerTar(t, ctx, img.Ref, m.Manifest.Layers[i])
	var evilEs []rtEnt
	for _, e := range rtReadTar(t, honest) {
		switch e.h.Name {
		case "etc/guard.conf":
			e.data = []byte("allow all " + n + "\n")
		case "app/seen":
			e.data = []byte("forged " + n + "\n")
		}
		evilEs = append(evilEs, e)
	}
	evilEs = append(evilEs, rtEnt{&tar.Header{Name: "etc/backdoor", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: time.Unix(0, 0)}, []byte("#!/bin/sh\necho owned " + n + "\n")})
	evil := rtWriteTar(t, evilEs)
	blob := rt6SkippableFrame(t, honest, evil)

	forged := l.Ref("redteam6-zstd")
	ld := pushBytes(t, ctx, registry.New(registry.Options{}), forged, "application/vnd.oci.image.layer.v1.tar+zstd", blob)
	forge(t, ctx, img, forged, forgery{
		config: func(cfg *ocispec.Image) {
			cfg.RootFS.DiffIDs = slices.Clone(cfg.RootFS.DiffIDs)
			cfg.RootFS.DiffIDs[i] = digest.FromBytes(evil)
		},
		layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[i] = ld; return ls },
	})
	seen := rt6Probe(t, ctx, l, forged)
	swapped := strings.Contains(seen, "RT6 guard.conf=[allow all "+n+" ]") && strings.Contains(seen, "RT6 backdoor=[#!/bin/sh echo owned "+n+" ]")

	out, code := runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	t.Logf("verify %s:\n%s", forged, out)
	if code == 0 || !strings.Contains(out, "[binding]") {
		t.Errorf("verify did not refuse the binding of %s (exit %d), whose traced RUN layer %d is a zstd skippable frame over the honest tar followed by a zstd frame of another tar: verify reads the first, every containerd pull the second (the build on it saw guard.conf rewritten and a setuid /etc/backdoor: %v)", forged, code, i, swapped)
	}
}

// TestRedTeam6HonestOddRuns: RUN steps that do odd but legitimate things to
// the file system verify (a false refusal is a bug too): a file replaced by
// a directory and a directory by a file, a symlink by a directory and a
// directory by a symlink, a deleted directory made again, a hard link to a
// lower file, and a later step writing into what an earlier one replaced;
// on Debian (usr-merged: /bin is a symlink to usr/bin) writes through /bin
// and /lib, and a COPY to /bin.
func TestRedTeam6HonestOddRuns(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n := randHex(8)
	for _, tc := range []struct{ name, from, body string }{
		{"busybox", "BASE", "COPY f /etc/odd/f\nCOPY f /etc/odd/d/g\n" +
			"RUN ln -s /etc/odd/d /etc/odd/l && mkdir -p /etc/odd/e/sub && echo e > /etc/odd/e/sub/x\n" +
			"RUN rm /etc/odd/f && mkdir /etc/odd/f && echo in > /etc/odd/f/in" +
			" && rm -r /etc/odd/d && echo file > /etc/odd/d" +
			" && rm /etc/odd/l && mkdir /etc/odd/l && echo l > /etc/odd/l/x" +
			" && rm -r /etc/odd/e && ln -s /tmp /etc/odd/e" +
			" && ln /etc/passwd /etc/odd/hl-" + n + "\n" +
			"RUN echo more > /etc/odd/f/more && echo y > /etc/odd/l/y && rm /etc/odd/d && mkdir -p /etc/odd/d/again && rm -r /etc/odd/f && mkdir /etc/odd/f\n" +
			"WORKDIR /etc/odd/w\nRUN echo w > w\n"},
		{"debian", l.Registry + "/library/debian:bookworm", "COPY f /bin/odd-copied\n" +
			"RUN echo x > /bin/odd-" + n + " && cp /bin/true /lib/odd-true && rm /usr/bin/tac && ln -sf /usr/bin/odd-" + n + " /bin/odd-link\n" +
			"RUN rm /bin/odd-copied && mkdir /bin/odd-copied && echo y > /usr/bin/odd-copied/y\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			df := dockerfile(l, "FROM "+tc.from+"\n"+tc.body)
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "f": "f " + n + "\n"})
			ref := l.Ref("redteam6-odd-" + tc.name)
			l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
			t.Logf("verify %s:\n%s", ref, out)
			if code != 0 {
				t.Errorf("verify refused an honest build (exit %d):\n%s", code, df)
			}
		})
	}
}

// rt6GzipTarPolyglot returns a blob that is at once a gzip stream of the
// tar honest and, read as it is, the tar evil. For a layer whose media type
// says uncompressed (application/vnd.oci.image.layer.v1.tar) containerd
// reads the blob as a tar (its stream processor decompresses only what the
// media type calls compressed); verify's Decompress goes by the first two
// bytes and gunzips it. The gzip header's FEXTRA field (any bytes, up to
// 65535) holds the tar evil, starting with a 'g' header block whose name
// field begins with the gzip header itself; the deflate stream of honest
// follows the extra field, after evil's end marker, where a tar reader no
// longer looks.
func rt6GzipTarPolyglot(t *testing.T, honest, evil []byte) []byte {
	t.Helper()
	xlen := 512 - 12 + len(evil)
	if xlen > 0xffff {
		t.Fatalf("the evil tar (%d bytes) does not fit in a gzip extra field", len(evil))
	}
	h := make([]byte, 512)
	// ID1 ID2 CM=deflate FLG=FEXTRA MTIME=0 XFL=0 OS=unknown, then XLEN.
	copy(h, []byte{0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff})
	binary.LittleEndian.PutUint16(h[10:], uint16(xlen))
	rt6GlobalHeader(h)
	var d bytes.Buffer
	fw, err := flate.NewWriter(&d, flate.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(honest); err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	trailer := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(honest)), uint32(len(honest)))
	return slices.Concat(h, evil, d.Bytes(), trailer)
}

// TestRedTeam6GzipTarPolyglot: the same as TestRedTeam6ZstdSkippableFrame
// with the layer declared uncompressed: verify decompresses by magic bytes,
// containerd by media type, and the blob is both a gzip of the honest tar
// and, as it is, another tar. The config's diff_ids name the blob (what
// containerd reads).
func TestRedTeam6GzipTarPolyglot(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := randHex(8)
	img, i := rt6Honest(t, ctx, l, "redteam6-poly", n)
	m := img.Manifests[0]

	honest := rtLayerTar(t, ctx, img.Ref, m.Manifest.Layers[i])
	var evilEs []rtEnt
	for _, e := range rtReadTar(t, honest) {
		switch e.h.Name {
		case "etc/guard.conf":
			e.data = []byte("allow all " + n + "\n")
		case "app/seen":
			e.data = []byte("forged " + n + "\n")
		}
		evilEs = append(evilEs, e)
	}
	evilEs = append(evilEs, rtEnt{&tar.Header{Name: "etc/backdoor", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: time.Unix(0, 0)}, []byte("#!/bin/sh\necho owned " + n + "\n")})
	blob := rt6GzipTarPolyglot(t, honest, rtWriteTar(t, evilEs))

	forged := l.Ref("redteam6-poly")
	ld := pushBytes(t, ctx, registry.New(registry.Options{}), forged, ocispec.MediaTypeImageLayer, blob)
	forge(t, ctx, img, forged, forgery{
		config: func(cfg *ocispec.Image) {
			cfg.RootFS.DiffIDs = slices.Clone(cfg.RootFS.DiffIDs)
			cfg.RootFS.DiffIDs[i] = digest.FromBytes(blob)
		},
		layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[i] = ld; return ls },
	})
	seen := rt6Probe(t, ctx, l, forged)
	swapped := strings.Contains(seen, "RT6 guard.conf=[allow all "+n+" ]") && strings.Contains(seen, "RT6 backdoor=[#!/bin/sh echo owned "+n+" ]")

	out, code := runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	t.Logf("verify %s:\n%s", forged, out)
	if code == 0 || !strings.Contains(out, "[binding]") {
		t.Errorf("verify did not refuse the binding of %s (exit %d), whose traced RUN layer %d is declared an uncompressed tar and is one, other than the gzip of the honest tar it also is: verify gunzips it, every containerd pull reads it as it is (the build on it saw guard.conf rewritten and a setuid /etc/backdoor: %v)", forged, code, i, swapped)
	}
}

// TestRedTeam6HardLinkDotDot: FromLayer refuses ".." in an entry's name
// but cleans a hard link's Linkname lexically (path.Clean), while
// containerd (hardlinkRootPath) resolves the Linkname's parent with
// fs.RootPath, which follows a symlink first and applies ".." to where it
// points. The traced run made two empty files /app/a and /app/b, a symlink
// /app/s -> /opt/x and a file /opt/a. The forgery turns /app/b's entry into
// a hard link to "app/s/../a", moved to the end of the tar (entry order is
// not in the digest): FromLayer reads a link to /app/a (an empty file, same
// metadata: the digest is the run's), the extractor links /app/b to
// /opt/a.
func TestRedTeam6HardLinkDotDot(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := randHex(8)
	body := "FROM BASE\nRUN mkdir -p /opt/x /app && echo secret-" + n + " > /opt/a && ln -s /opt/x /app/s && : > /app/a && : > /app/b\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, body)})
	honest := l.Ref("redteam6-link")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
	out, code := runCLI(t, l, "verify", honest, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", honest)
	img := l.Image(t, ctx, honest)
	i := layerOf(t, img.Manifests[0].Config, "RUN /bin/sh -c mkdir -p /opt/x")

	forged := l.Ref("redteam6-link")
	rtRetarLayer(t, ctx, img, forged, i, func(es []rtEnt) []rtEnt {
		var b *tar.Header
		es = slices.DeleteFunc(es, func(e rtEnt) bool {
			if e.h.Name == "app/b" {
				b = e.h
				return true
			}
			return false
		})
		if b == nil {
			t.Fatal("the RUN layer has no app/b")
		}
		link := *b
		link.Typeflag, link.Linkname = tar.TypeLink, "app/s/../a"
		return append(es, rtEnt{&link, nil})
	})
	probe := lab.WriteContext(t, map[string]string{"Dockerfile": "FROM " + forged + "\n" +
		"RUN echo \"RT6 b=[$(cat /app/b 2>&1)] a=[$(cat /app/a 2>&1)]\"\n"})
	res := l.Buildx(ctx, lab.Build{Context: probe, Args: []string{"--no-cache"}})
	if res.Err != nil {
		t.Logf("building on the forged image: %v\n%s", res.Err, res.Output)
	}
	changed := false
	for _, line := range strings.Split(res.Output, "\n") {
		if j := strings.Index(line, "RT6 "); j >= 0 && !strings.Contains(line, "$(cat") {
			t.Logf("a build on the forged image sees: %s", line[j:])
			changed = changed || strings.Contains(line, "b=[secret-"+n+"]")
		}
	}

	out, code = runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	t.Logf("verify %s:\n%s", forged, out)
	if code == 0 || !strings.Contains(out, "[binding]") {
		t.Errorf("verify did not refuse the binding of %s (exit %d), whose traced RUN layer %d has /app/b as a hard link to \"app/s/../a\": verify reads a link to the empty /app/a, containerd links /app/b to /opt/a (the build on it saw /app/b hold /opt/a's content: %v)", forged, code, i, changed)
	}
}
