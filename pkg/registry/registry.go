// Package registry reads (and, for tests and tools, writes) an image index
// and its BuildKit attestation manifests through containerd's remotes.
package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BuildKit's annotations on attestation manifests in an index.
const (
	AnnotationReferenceType   = "vnd.docker.reference.type"
	AnnotationReferenceDigest = "vnd.docker.reference.digest"
	ReferenceTypeAttestation  = "attestation-manifest"
	AnnotationPredicateType   = "in-toto.io/predicate-type"
	MediaTypeInToto           = "application/vnd.in-toto+json"
)

// Options configure access to registries.
type Options struct {
	// PlainHTTP makes every registry use plain HTTP. Loopback registries
	// (127.0.0.0/8, ::1, localhost) always do.
	PlainHTTP bool
}

// Client reads and writes images.
type Client struct {
	resolver remotes.Resolver
}

// New returns a client that honours the docker CLI's credentials
// (~/.docker/config.json and its credential helpers).
func New(opts Options) *Client {
	authorizer := docker.NewDockerAuthorizer(docker.WithAuthCreds(dockerCreds))
	hosts := docker.ConfigureDefaultRegistries(
		docker.WithAuthorizer(authorizer),
		docker.WithPlainHTTP(func(host string) (bool, error) {
			return opts.PlainHTTP || IsLoopback(host), nil
		}),
	)
	return &Client{resolver: docker.NewResolver(docker.ResolverOptions{Hosts: hosts})}
}

func dockerCreds(host string) (string, string, error) {
	cfg, err := dockerconfig.Load(dockerconfig.Dir())
	if err != nil {
		return "", "", nil // no usable config: anonymous access
	}
	if host == "registry-1.docker.io" {
		host = "https://index.docker.io/v1/"
	}
	ac, err := cfg.GetAuthConfig(host)
	if err != nil {
		return "", "", fmt.Errorf("docker credentials for %s: %w", host, err)
	}
	if ac.IdentityToken != "" {
		return "", ac.IdentityToken, nil
	}
	return ac.Username, ac.Password, nil
}

// IsLoopback reports whether host (with or without a port) names this machine.
func IsLoopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Image is an image index (or a single manifest) with its attestations.
type Image struct {
	Ref          string
	Descriptor   ocispec.Descriptor // of the index, or of the manifest
	Index        *ocispec.Index     // nil for a single-manifest image
	Manifests    []Manifest         // image manifests, attestation manifests excluded
	Attestations []Attestation
}

// Manifest is one platform's image manifest.
type Manifest struct {
	Descriptor ocispec.Descriptor
	Platform   ocispec.Platform
	Manifest   ocispec.Manifest
	Config     ocispec.Image
}

// Attestation is one BuildKit attestation manifest and its in-toto layers.
type Attestation struct {
	Descriptor ocispec.Descriptor
	Subject    digest.Digest // the image manifest it is about
	Manifest   ocispec.Manifest
	Statements []Statement
}

// Statement is one in-toto statement layer of an attestation manifest.
type Statement struct {
	Descriptor    ocispec.Descriptor
	PredicateType string
	Data          []byte // the raw in-toto Statement JSON
}

// ForManifest returns the attestation whose subject is dgst.
func (img *Image) ForManifest(dgst digest.Digest) (*Attestation, bool) {
	for i := range img.Attestations {
		if img.Attestations[i].Subject == dgst {
			return &img.Attestations[i], true
		}
	}
	return nil, false
}

// Statement returns the first statement with the predicate type.
func (a *Attestation) Statement(predicateType string) (*Statement, bool) {
	for i := range a.Statements {
		if a.Statements[i].PredicateType == predicateType {
			return &a.Statements[i], true
		}
	}
	return nil, false
}

// maxManifest bounds what is read into memory for a manifest or statement.
const maxManifest = 256 << 20

// Read resolves ref and reads its index, image manifests and configs, and
// every attestation manifest with its statement layers.
func (c *Client) Read(ctx context.Context, ref string) (*Image, error) {
	name, desc, err := c.resolver.Resolve(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	fetcher, err := c.resolver.Fetcher(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("fetcher for %s: %w", name, err)
	}
	img := &Image{Ref: ref, Descriptor: desc}
	switch desc.MediaType {
	case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
		var idx ocispec.Index
		if err := fetchJSON(ctx, fetcher, desc, &idx); err != nil {
			return nil, fmt.Errorf("reading index of %s: %w", ref, err)
		}
		img.Index = &idx
		platformSeen := map[string]digest.Digest{}
		for _, d := range idx.Manifests {
			if d.Annotations[AnnotationReferenceType] == ReferenceTypeAttestation {
				// An entry that says it is an attestation but that a
				// platform matcher could pick would be an image nobody
				// verifies: BuildKit marks attestations unknown/unknown.
				// One with no platform is matched by containerd on its
				// config's OS and architecture, so it must say unknown too.
				if d.Platform == nil {
					return nil, fmt.Errorf("%s: attestation manifest %s names no platform (BuildKit marks attestations unknown/unknown): a client could match it on its config and pull it as an image", ref, d.Digest)
				}
				if d.Platform.OS != "unknown" || d.Platform.Architecture != "unknown" {
					return nil, fmt.Errorf("%s: attestation manifest %s claims platform %s: a client could pull it as an image", ref, d.Digest, platforms.Format(*d.Platform))
				}
				a, err := readAttestation(ctx, fetcher, d)
				if err != nil {
					return nil, fmt.Errorf("%s: attestation manifest %s: %w", ref, d.Digest, err)
				}
				img.Attestations = append(img.Attestations, *a)
				continue
			}
			switch d.MediaType {
			case ocispec.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
			default:
				return nil, fmt.Errorf("%s: index entry %s has media type %q, which is neither an image nor an attestation manifest", ref, d.Digest, d.MediaType)
			}
			m, err := readManifest(ctx, fetcher, d)
			if err != nil {
				return nil, fmt.Errorf("%s: manifest %s: %w", ref, d.Digest, err)
			}
			// Two images for one platform: a client takes the first, so
			// the other could hide behind a verified one.
			p := platforms.Format(m.Platform)
			if other, ok := platformSeen[p]; ok {
				return nil, fmt.Errorf("%s: two image manifests for %s (%s and %s)", ref, p, other, d.Digest)
			}
			platformSeen[p] = d.Digest
			img.Manifests = append(img.Manifests, *m)
		}
	case ocispec.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
		m, err := readManifest(ctx, fetcher, desc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		img.Manifests = append(img.Manifests, *m)
	default:
		return nil, fmt.Errorf("%s: unsupported media type %q", ref, desc.MediaType)
	}
	return img, nil
}

func readManifest(ctx context.Context, f remotes.Fetcher, d ocispec.Descriptor) (*Manifest, error) {
	m := &Manifest{Descriptor: d}
	if err := fetchJSON(ctx, f, d, &m.Manifest); err != nil {
		return nil, err
	}
	if err := fetchJSON(ctx, f, m.Manifest.Config, &m.Config); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	switch {
	case d.Platform != nil:
		m.Platform = *d.Platform
	default:
		m.Platform = ocispec.Platform{OS: m.Config.OS, Architecture: m.Config.Architecture, Variant: m.Config.Variant}
	}
	m.Platform = platforms.Normalize(m.Platform)
	return m, nil
}

func readAttestation(ctx context.Context, f remotes.Fetcher, d ocispec.Descriptor) (*Attestation, error) {
	a := &Attestation{Descriptor: d}
	if s := d.Annotations[AnnotationReferenceDigest]; s != "" {
		dg, err := digest.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("bad %s annotation %q: %w", AnnotationReferenceDigest, s, err)
		}
		a.Subject = dg
	}
	if err := fetchJSON(ctx, f, d, &a.Manifest); err != nil {
		return nil, err
	}
	for _, l := range a.Manifest.Layers {
		if l.MediaType != MediaTypeInToto {
			return nil, fmt.Errorf("layer %s has media type %q: an attestation manifest holds only in-toto statements", l.Digest, l.MediaType)
		}
		data, err := FetchBytes(ctx, f, l)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		a.Statements = append(a.Statements, Statement{Descriptor: l, PredicateType: l.Annotations[AnnotationPredicateType], Data: data})
	}
	return a, nil
}

func fetchJSON(ctx context.Context, f remotes.Fetcher, d ocispec.Descriptor, into any) error {
	data, err := FetchBytes(ctx, f, d)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, into); err != nil {
		return fmt.Errorf("decoding %s (%s): %w", d.Digest, d.MediaType, err)
	}
	return nil
}

// FetchBytes reads a small blob whole and checks its digest and size.
func FetchBytes(ctx context.Context, f remotes.Fetcher, d ocispec.Descriptor) ([]byte, error) {
	if d.Size > maxManifest {
		return nil, fmt.Errorf("blob %s is %d bytes, more than the %d this reads into memory", d.Digest, d.Size, maxManifest)
	}
	rc, err := f.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", d.Digest, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.Digest, err)
	}
	if int64(len(data)) != d.Size || digest.FromBytes(data) != d.Digest {
		return nil, fmt.Errorf("blob %s: content does not match its descriptor (size %d, digest %s)", d.Digest, len(data), digest.FromBytes(data))
	}
	return data, nil
}

// OpenBlob streams a blob of the repository ref names (for layers). The
// stream fails at its end when the content is not what the descriptor
// says (digest and size): a reader must consume it to the end before it
// trusts what it read.
func (c *Client) OpenBlob(ctx context.Context, ref string, d ocispec.Descriptor) (io.ReadCloser, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q: %w", d.Digest, err)
	}
	f, err := c.resolver.Fetcher(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("fetcher for %s: %w", ref, err)
	}
	rc, err := f.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetching %s from %s: %w", d.Digest, ref, err)
	}
	return &checkedBlob{rc: rc, d: d, v: d.Digest.Verifier()}, nil
}

// checkedBlob checks a blob's size and digest as it is read.
type checkedBlob struct {
	rc io.ReadCloser
	d  ocispec.Descriptor
	v  digest.Verifier
	n  int64
}

func (b *checkedBlob) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if b.n > b.d.Size {
		return n, fmt.Errorf("blob %s: more than its %d bytes", b.d.Digest, b.d.Size)
	}
	b.v.Write(p[:n])
	if err == io.EOF {
		if b.n != b.d.Size {
			return n, fmt.Errorf("blob %s: %d bytes, its descriptor says %d", b.d.Digest, b.n, b.d.Size)
		}
		if !b.v.Verified() {
			return n, fmt.Errorf("blob %s: content does not match its digest", b.d.Digest)
		}
	}
	return n, err
}

func (b *checkedBlob) Close() error { return b.rc.Close() }

// PlatformLayers returns the layers of ref's image for platform (ref is
// normally pinned by digest, so every byte read is checked against it).
func (c *Client) PlatformLayers(ctx context.Context, ref, platform string) ([]ocispec.Descriptor, error) {
	img, err := c.Read(ctx, ref)
	if err != nil {
		return nil, err
	}
	for _, m := range img.Manifests {
		if platforms.Format(m.Platform) == platform || img.Index == nil {
			return m.Manifest.Layers, nil
		}
	}
	return nil, fmt.Errorf("%s has no %s image", ref, platform)
}

// Push writes one blob or manifest to the repository ref names; ref's tag
// (if any) is set when d is a manifest or index. Existing content is fine.
func (c *Client) Push(ctx context.Context, ref string, d ocispec.Descriptor, data []byte) error {
	p, err := c.resolver.Pusher(ctx, ref)
	if err != nil {
		return fmt.Errorf("pusher for %s: %w", ref, err)
	}
	w, err := p.Push(ctx, d)
	if err != nil {
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			return nil
		}
		return fmt.Errorf("pushing %s to %s: %w", d.Digest, ref, err)
	}
	defer w.Close()
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("writing %s to %s: %w", d.Digest, ref, err)
	}
	if err := w.Commit(ctx, d.Size, d.Digest); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
		return fmt.Errorf("committing %s to %s: %w", d.Digest, ref, err)
	}
	return nil
}
