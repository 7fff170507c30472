package tracerapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// A frontend signs each request with a key of its own, which it hands the
// tracer through the kernel rather than the network: a sealed memfd named
// KeyMemfdName, which the tracer reads from the process it identified as
// the frontend (/proc/<pid>/fd). The loopback network is not private to
// the frontend: a build step with CAP_NET_RAW on the host's network can
// read it and write segments into another process's connection, so the
// socket the tracer finds at the other end of a connection does not prove
// who wrote the bytes. The key does.
const (
	// AuthHeader carries "<counter> <hex HMAC-SHA256>" (RequestMAC).
	AuthHeader = "Buildtrace-Auth"
	// BodyHeader carries the hex SHA-256 of the request body.
	BodyHeader = "Buildtrace-Body-Sha256"
	// KeyMemfdName names the frontend's memfd holding its request key.
	KeyMemfdName = "buildtrace-request-key"
	// KeyLen is the key's length in bytes.
	KeyLen = 32
)

// RequestMAC is the MAC of one request: its method, path, body digest and
// counter, which must grow from request to request (no replay).
func RequestMAC(key []byte, method, path, bodySum string, counter uint64) []byte {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "buildtrace request v1\n%s\n%s\n%s\n%d\n", method, path, bodySum, counter)
	return m.Sum(nil)
}

// NonceRoot derives the build's step-nonce secret from the request key
// (steptag.StepNonce), so that step nonces never travel on the network.
func NonceRoot(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("buildtrace step nonces v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// ParseAuth reads an AuthHeader value.
func ParseAuth(v string) (counter uint64, mac []byte, err error) {
	c, m, ok := strings.Cut(v, " ")
	if !ok {
		return 0, nil, errors.New("want \"<counter> <hex mac>\"")
	}
	if counter, err = strconv.ParseUint(c, 10, 64); err != nil {
		return 0, nil, fmt.Errorf("counter: %w", err)
	}
	if mac, err = hex.DecodeString(m); err != nil || len(mac) != sha256.Size {
		return 0, nil, errors.New("mac: want 64 hex characters")
	}
	return counter, mac, nil
}

// ValidBodySum reports whether v is a hex SHA-256.
func ValidBodySum(v string) bool {
	if len(v) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(v)
	return err == nil && strings.ToLower(v) == v
}

// Auth signs a frontend's requests.
type Auth struct {
	key     []byte
	mu      sync.Mutex
	counter uint64
}

// NewAuth signs with key (KeyLen bytes).
func NewAuth(key []byte) *Auth { return &Auth{key: key} }

// sign sets the body digest and MAC headers on req.
func (a *Auth) sign(req *http.Request, body []byte) {
	sum := sha256.Sum256(body)
	a.signSum(req, hex.EncodeToString(sum[:]))
}

func (a *Auth) signSum(req *http.Request, bodySum string) {
	a.mu.Lock()
	a.counter++
	n := a.counter
	a.mu.Unlock()
	req.Header.Set(BodyHeader, bodySum)
	req.Header.Set(AuthHeader, strconv.FormatUint(n, 10)+" "+hex.EncodeToString(RequestMAC(a.key, req.Method, req.URL.Path, bodySum, n)))
}
