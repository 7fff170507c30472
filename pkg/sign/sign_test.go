package sign

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

const testType = "application/vnd.test+json"

func keyPair(t *testing.T) (priv, pub string) {
	t.Helper()
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "key.pem"), filepath.Join(dir, "key.pub")
	if err := GenerateKeyPair(priv, pub); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func load(t *testing.T, priv, pub string) (*Signer, *Verifier) {
	t.Helper()
	ctx := context.Background()
	s, err := LoadSigner(ctx, priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(ctx, pub)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	priv, pub := keyPair(t)
	fi, err := os.Stat(priv)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode = %o, want 600", fi.Mode().Perm())
	}
	s, v := load(t, priv, pub)
	if s.KeyID() != v.KeyID() || !strings.HasPrefix(s.KeyID(), "sha256:") || len(s.KeyID()) != len("sha256:")+64 {
		t.Fatalf("key IDs: signer %q verifier %q", s.KeyID(), v.KeyID())
	}
	payload := []byte(`{"hello":"world"}` + "\n")
	env, err := Sign(ctx, s, testType, payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(env.Signatures) != 1 || env.Signatures[0].KeyID != s.KeyID() {
		t.Fatalf("signatures = %+v", env.Signatures)
	}
	got, err := Verify(ctx, v, env, testType)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(payload) {
		t.Fatalf("payload = %q, want %q", got, payload)
	}
	// The key ID is stable across loads.
	s2, _ := load(t, priv, pub)
	if s2.KeyID() != s.KeyID() {
		t.Fatalf("key ID changed between loads")
	}
}

func TestVerifyFailures(t *testing.T) {
	ctx := context.Background()
	priv, pub := keyPair(t)
	s, v := load(t, priv, pub)
	env, err := Sign(ctx, s, testType, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("tampered payload", func(t *testing.T) {
		e := *env
		e.Payload = base64.StdEncoding.EncodeToString([]byte("payloaD"))
		if _, err := Verify(ctx, v, &e, testType); err == nil {
			t.Fatal("tampered payload verified")
		}
	})
	t.Run("tampered signature", func(t *testing.T) {
		e := *env
		sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
		sig[len(sig)-1] ^= 1
		e.Signatures = []dsse.Signature{{KeyID: env.Signatures[0].KeyID, Sig: base64.StdEncoding.EncodeToString(sig)}}
		if _, err := Verify(ctx, v, &e, testType); err == nil {
			t.Fatal("tampered signature verified")
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		_, otherPub := keyPair(t)
		ov, err := LoadVerifier(ctx, otherPub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(ctx, ov, env, testType); err == nil {
			t.Fatal("verified with the wrong key")
		}
	})
	t.Run("wrong payload type", func(t *testing.T) {
		if _, err := Verify(ctx, v, env, "application/other"); err == nil || !strings.Contains(err.Error(), "payload type") {
			t.Fatalf("err = %v, want payload type error", err)
		}
		// Changing the type inside the envelope breaks the PAE signature.
		e := *env
		e.PayloadType = "application/other"
		if _, err := Verify(ctx, v, &e, "application/other"); err == nil {
			t.Fatal("envelope with swapped payload type verified")
		}
	})
}

func TestGenerateRefusesOverwrite(t *testing.T) {
	priv, pub := keyPair(t)
	before, _ := os.ReadFile(priv)
	err := GenerateKeyPair(priv, pub)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("err = %v, want refusal", err)
	}
	dir := t.TempDir()
	newPriv := filepath.Join(dir, "new.pem")
	if err := GenerateKeyPair(newPriv, pub); err == nil {
		t.Fatal("overwrote existing public key")
	}
	if _, err := os.Stat(newPriv); !os.IsNotExist(err) {
		t.Fatalf("private key written although the public key path exists: %v", err)
	}
	after, _ := os.ReadFile(priv)
	if string(before) != string(after) {
		t.Fatal("private key changed")
	}
}

func TestLoadErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	priv, pub := keyPair(t)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notPEM := write("garbage", "not a key\n")
	encrypted := write("enc.pem", string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}})))
	k, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	p224 := write("p224.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	cert := write("cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})))

	for _, tc := range []struct {
		name, ref, want string
		signer          bool
	}{
		{"signer not PEM", notPEM, "not PEM encoded", true},
		{"verifier not PEM", notPEM, "not PEM encoded", false},
		{"encrypted", encrypted, "encrypted", true},
		{"public as private", pub, "holds a public key", true},
		{"private as public", priv, "holds a private key", false},
		{"unsupported curve", p224, "unsupported ECDSA curve", true},
		{"wrong PEM type", cert, `unsupported PEM type "CERTIFICATE"`, false},
		{"missing file", filepath.Join(dir, "nope"), "no such file", true},
		{"KMS not compiled in", "awskms:///alias/x", `KMS provider "awskms" not compiled in`, true},
		{"KMS not compiled in (verifier)", "gcpkms://projects/x", `KMS provider "gcpkms" not compiled in`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.signer {
				_, err = LoadSigner(ctx, tc.ref)
			} else {
				_, err = LoadVerifier(ctx, tc.ref)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.ref) {
				t.Fatalf("err = %v does not name %s", err, tc.ref)
			}
		})
	}
}
