// Package sign wraps payloads in DSSE envelopes signed with sigstore
// signers: a PEM key file, or a KMS key named by URI.
package sign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// kmsSchemes are the KMS providers compiled into this binary. Any other
// "scheme://" reference is refused rather than handed to sigstore's
// plugin fallback, which would execute a program found on PATH.
var kmsSchemes = []string{hashivault.ReferenceScheme}

// Signer signs DSSE envelopes.
type Signer struct {
	sv    signature.SignerVerifier
	keyID string
	ref   string
}

// Verifier checks DSSE envelopes.
type Verifier struct {
	v     signature.Verifier
	keyID string
	ref   string
}

// KeyID is "sha256:" + hex of the DER (PKIX) public key.
func (s *Signer) KeyID() string { return s.keyID }

// Verifier returns a verifier of what s signs.
func (s *Signer) Verifier() *Verifier { return &Verifier{v: s.sv, keyID: s.keyID, ref: s.ref} }

// KeyID is "sha256:" + hex of the DER (PKIX) public key.
func (v *Verifier) KeyID() string { return v.keyID }

// GenerateKeyPair writes a new ECDSA P-256 key pair as PEM: the private key
// as PKCS#8 ("PRIVATE KEY", mode 0600), the public key as PKIX
// ("PUBLIC KEY"). Existing files are never overwritten.
func GenerateKeyPair(privPath, pubPath string) error {
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("refusing to overwrite existing key file %s", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("checking key file %s: %w", p, err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating ECDSA P-256 key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encoding public key: %w", err)
	}
	if err := writeNew(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		os.Remove(privPath) // do not leave half a key pair behind
		return err
	}
	return nil
}

// writeNew creates path exclusively (O_EXCL), so a file that appeared
// after the check above is not overwritten either.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("refusing to overwrite existing key file %s", path)
		}
		return fmt.Errorf("creating key file %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing key file %s: %w", path, err)
	}
	return nil
}

// LoadSigner loads a signer from ref: a PEM private key file (PKCS#8,
// SEC 1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"; not encrypted), or a
// KMS URI such as hashivault://<key>.
func LoadSigner(ctx context.Context, ref string) (*Signer, error) {
	if isKMS(ref) {
		sv, id, err := loadKMS(ctx, ref)
		if err != nil {
			return nil, err
		}
		return &Signer{sv: sv, keyID: id, ref: ref}, nil
	}
	block, err := readPEM(ref)
	if err != nil {
		return nil, err
	}
	var key crypto.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
		return nil, fmt.Errorf("private key file %s is encrypted (PEM type %q); encrypted keys are not supported, use an unencrypted PKCS#8 key or a KMS URI", ref, block.Type)
	case "PUBLIC KEY":
		return nil, fmt.Errorf("key file %s holds a public key, a private key is needed to sign", ref)
	default:
		return nil, fmt.Errorf("key file %s: unsupported PEM type %q for a private key", ref, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key in %s: %w", ref, err)
	}
	if k, ok := key.(*ecdsa.PrivateKey); ok && k.Curve != elliptic.P256() && k.Curve != elliptic.P384() && k.Curve != elliptic.P521() {
		return nil, fmt.Errorf("private key in %s: unsupported ECDSA curve %s", ref, k.Curve.Params().Name)
	}
	sv, err := signature.LoadSignerVerifier(key, hashFor(key))
	if err != nil {
		return nil, fmt.Errorf("private key in %s: %w", ref, err)
	}
	pub, err := sv.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("private key in %s: %w", ref, err)
	}
	id, err := keyID(pub)
	if err != nil {
		return nil, fmt.Errorf("private key in %s: %w", ref, err)
	}
	return &Signer{sv: sv, keyID: id, ref: ref}, nil
}

// LoadVerifier loads a verifier from ref: a PEM public key file (PKIX
// "PUBLIC KEY"), or a KMS URI such as hashivault://<key>.
func LoadVerifier(ctx context.Context, ref string) (*Verifier, error) {
	if isKMS(ref) {
		sv, id, err := loadKMS(ctx, ref)
		if err != nil {
			return nil, err
		}
		return &Verifier{v: sv, keyID: id, ref: ref}, nil
	}
	block, err := readPEM(ref)
	if err != nil {
		return nil, err
	}
	var pub crypto.PublicKey
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing public key in %s: %w", ref, err)
		}
	case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("key file %s holds a private key (PEM type %q); give the public key to verify", ref, block.Type)
	default:
		return nil, fmt.Errorf("key file %s: unsupported PEM type %q for a public key, want \"PUBLIC KEY\"", ref, block.Type)
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("public key in %s: unsupported key type %T", ref, pub)
	}
	v, err := signature.LoadVerifier(pub, hashFor(pub))
	if err != nil {
		return nil, fmt.Errorf("public key in %s: %w", ref, err)
	}
	id, err := keyID(pub)
	if err != nil {
		return nil, fmt.Errorf("public key in %s: %w", ref, err)
	}
	return &Verifier{v: v, keyID: id, ref: ref}, nil
}

// Sign returns a DSSE envelope over payload with one signature by s.
func Sign(ctx context.Context, s *Signer, payloadType string, payload []byte) (*dsse.Envelope, error) {
	es, err := dsse.NewEnvelopeSigner(dsseSigner{s})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(ctx, payloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("signing with %s: %w", s.ref, err)
	}
	return env, nil
}

// Verify checks that env carries payloadType and a valid signature by v
// over its PAE encoding, and returns the exact signed payload bytes.
func Verify(ctx context.Context, v *Verifier, env *dsse.Envelope, payloadType string) ([]byte, error) {
	if env == nil {
		return nil, errors.New("verifying envelope: no envelope")
	}
	if env.PayloadType != payloadType {
		return nil, fmt.Errorf("verifying envelope: payload type is %q, want %q", env.PayloadType, payloadType)
	}
	ev, err := dsse.NewEnvelopeVerifier(dsseVerifier{v})
	if err != nil {
		return nil, err
	}
	_, payload, err := ev.VerifyAndDecode(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("verifying envelope with key %s (%s): %w", v.keyID, v.ref, err)
	}
	return payload, nil
}

// dsseSigner adapts a Signer to dsse.Signer.
type dsseSigner struct{ s *Signer }

func (d dsseSigner) Sign(ctx context.Context, data []byte) ([]byte, error) {
	return d.s.sv.SignMessage(bytes.NewReader(data), options.WithContext(ctx))
}

func (d dsseSigner) KeyID() (string, error) { return d.s.keyID, nil }

// dsseVerifier adapts a Verifier to dsse.Verifier.
type dsseVerifier struct{ v *Verifier }

func (d dsseVerifier) Verify(ctx context.Context, data, sig []byte) error {
	return d.v.v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(data), options.WithContext(ctx))
}

func (d dsseVerifier) KeyID() (string, error) { return d.v.keyID, nil }

func (d dsseVerifier) Public() crypto.PublicKey {
	pub, _ := d.v.v.PublicKey()
	return pub
}

func isKMS(ref string) bool { return strings.Contains(ref, "://") }

// loadKMS opens a KMS key and returns it with its key ID.
func loadKMS(ctx context.Context, ref string) (signature.SignerVerifier, string, error) {
	scheme, _, _ := strings.Cut(ref, "://")
	if !slices.ContainsFunc(kmsSchemes, func(s string) bool { return strings.HasPrefix(ref, s) }) {
		return nil, "", fmt.Errorf("loading KMS key %s: KMS provider %q not compiled in (available: %s)", ref, scheme, strings.Join(kmsSchemes, ", "))
	}
	sv, err := kms.Get(ctx, ref, crypto.SHA256)
	if err != nil {
		return nil, "", fmt.Errorf("loading KMS key %s: %w", ref, err)
	}
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, "", fmt.Errorf("reading public key of KMS key %s: %w", ref, err)
	}
	id, err := keyID(pub)
	if err != nil {
		return nil, "", fmt.Errorf("KMS key %s: %w", ref, err)
	}
	return sv, id, nil
}

func readPEM(path string) (*pem.Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("key file %s is not PEM encoded", path)
	}
	if _, encrypted := block.Headers["DEK-Info"]; encrypted {
		return nil, fmt.Errorf("key file %s is encrypted (legacy PEM encryption); encrypted keys are not supported", path)
	}
	return block, nil
}

// hashFor picks the digest sigstore's loaders expect for each key type.
func hashFor(key any) crypto.Hash {
	var pub any = key
	if s, ok := key.(crypto.Signer); ok {
		pub = s.Public()
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return crypto.Hash(0) // pure Ed25519 signs the message itself
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P384():
			return crypto.SHA384
		case elliptic.P521():
			return crypto.SHA512
		}
	}
	return crypto.SHA256
}

func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
