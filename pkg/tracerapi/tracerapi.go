// Package tracerapi is the loopback HTTP API between buildtraced and its
// callers (the frontend, the CLI, tests). It carries signed traces; the
// payload schema is package trace.
package tracerapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// DefaultAddr is where buildtraced listens unless told otherwise.
const DefaultAddr = "127.0.0.1:7390"

// TracePath is the route of a build's trace; the caller must name the
// build trace ID, there is no listing.
const TracePath = "/v1/builds/"

// UnattributedPath+<step id> lists, on the admin socket, the sealed
// containers of a step whose build could not be decided.
const UnattributedPath = "/v1/unattributed/"

// Unattributed returns the sealed containers of a step whose build could
// not be decided (admin socket).
func (c *Client) Unattributed(ctx context.Context, stepID string) ([]trace.Step, error) {
	u := neturl.URL{Scheme: "http", Host: c.host(), Path: UnattributedPath + stepID}
	var out []trace.Step
	if err := c.get(ctx, u.String(), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// HealthPath answers whether the tracer is up and since when.
const HealthPath = "/v1/health"

// BlobPath is where a caller hands over content for BuildKit to fetch with
// an HTTP source (PUT, then GET BlobPath+<sha256 hex>): an attestation too
// large to travel inline in an LLB definition. Blobs are kept for minutes.
const BlobPath = "/v1/blobs/"

// PlanSuffix and SealSuffix follow TracePath+<trace id>. Only the build's
// own frontend may call them:
//
//	POST /v1/builds/{id}/plan  body trace.PlanPart, before the part's steps run
//	POST /v1/builds/{id}/seal  body SealRequest, answer TraceResponse
//
// GET TracePath+<trace id> answers on the admin socket only.
const (
	PlanSuffix = "/plan"
	SealSuffix = "/seal"
)

// SealRequest asks for the signed trace once the frontend is done.
type SealRequest struct {
	// Wait is how long the tracer may wait for steps still running or
	// being sealed (a Go duration).
	Wait string `json:"wait"`
	// Results maps each image platform to the plan part that produced it.
	Results map[string]string `json:"results"`
	// EvidenceFrom names images whose runtime-trace attestations may hold
	// the signed runs of steps BuildKit served from a shared cache.
	EvidenceFrom []string `json:"evidenceFrom,omitempty"`
	// Plan holds the parts of solves that have no step (no ExecOp: the
	// Dockerfile's own source, say). Nothing of theirs runs in a container,
	// so they come with the seal rather than each before its solve: the
	// tracer then identifies its caller once for them all. The tracer
	// refuses a part with steps here.
	Plan []trace.PlanPart `json:"plan,omitempty"`
}

// TraceResponse is the body of GET /v1/builds/{traceID}?wait=DURATION.
// Envelope's payload is a JSON trace.Build of type trace.PayloadType.
type TraceResponse struct {
	Envelope *dsse.Envelope `json:"envelope"`
}

// Health is the body of GET /v1/health.
type Health struct {
	Version string    `json:"version"`
	Since   time.Time `json:"since"`
	KeyID   string    `json:"keyID,omitempty"`
	// Evidence says what the tracer holds as evidence for cached steps and
	// what it last evicted (retention or disk bound).
	Evidence *EvidenceHealth `json:"evidence,omitempty"`
	// Ringbuf is the kernel-to-tracer events ring: its size and the most
	// bytes it has held unread since the tracer started.
	Ringbuf *RingbufHealth `json:"ringbuf,omitempty"`
	// SyscallHook says whether the system call hook is attached: only
	// while traced containers can run (every syscall on the host is
	// slower while it is).
	SyscallHook *SyscallHookHealth `json:"syscallHook,omitempty"`
}

// RingbufHealth is the events ring's state.
type RingbufHealth struct {
	Size      uint64 `json:"size"`      // bytes
	HighWater uint64 `json:"highWater"` // bytes pending at most, record headers included
}

// SyscallHookHealth is the system call hook's state.
type SyscallHookHealth struct {
	Attached bool      `json:"attached"`
	OnDemand bool      `json:"onDemand"`        // false: attached for the tracer's lifetime
	Since    time.Time `json:"since,omitempty"` // last attached
	Attaches uint64    `json:"attaches"`        // since the tracer started
	Holds    int       `json:"holds"`           // builds whose plan keeps it attached
	Error    string    `json:"error,omitempty"` // the last attach or detach error
}

// EvidenceHealth is the evidence store's state.
type EvidenceHealth struct {
	Retention       string    `json:"retention"`
	MaxBytes        int64     `json:"maxBytes"`
	HeldBuilds      int       `json:"heldBuilds"`
	HeldBytes       int64     `json:"heldBytes"`
	EvictedBuilds   int       `json:"evictedBuilds"` // in all, since start
	EvictedBytes    int64     `json:"evictedBytes"`
	LastEviction    time.Time `json:"lastEviction,omitempty"`
	LastEvictionErr string    `json:"lastEvictionError,omitempty"`
}

// ErrorResponse is the body of any non-200 answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Client calls a buildtraced.
type Client struct {
	Addr string // host:port, or unix:<path> for the admin socket
	HTTP *http.Client
	// Auth signs plan, seal and blob requests: a frontend's (auth.go).
	Auth *Auth
}

// AdminClient returns a client of the tracer's admin socket (root only).
func AdminClient(socket string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{Addr: "unix:" + socket, HTTP: &http.Client{Transport: tr}}
}

// host is the URL host: a placeholder for a unix socket.
func (c *Client) host() string {
	if strings.HasPrefix(c.Addr, "unix:") {
		return "buildtraced"
	}
	return c.Addr
}

// ValidTraceID reports whether id is a W3C trace ID: 32 lowercase hex
// characters, not all zero.
func ValidTraceID(id string) bool {
	if len(id) != 32 || id == strings.Repeat("0", 32) {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// Trace fetches the signed trace of one build, letting the tracer wait up
// to wait for steps that started but are not finished.
func (c *Client) Trace(ctx context.Context, traceID string, wait time.Duration) (*dsse.Envelope, error) {
	if !ValidTraceID(traceID) {
		return nil, fmt.Errorf("invalid build trace ID %q: want 32 lowercase hex characters", traceID)
	}
	u := neturl.URL{Scheme: "http", Host: c.host(), Path: TracePath + traceID, RawQuery: neturl.Values{"wait": {wait.String()}}.Encode()}
	var resp TraceResponse
	if err := c.get(ctx, u.String(), &resp); err != nil {
		return nil, err
	}
	if resp.Envelope == nil {
		return nil, fmt.Errorf("tracer at %s returned no envelope for build %s", c.Addr, traceID)
	}
	return resp.Envelope, nil
}

// PutBlob hands data to the tracer and returns the URL BuildKit can fetch
// it from and its digest ("sha256:<hex>").
func (c *Client) PutBlob(ctx context.Context, data []byte) (url string, digest string, err error) {
	sum := sha256.Sum256(data)
	name := hex.EncodeToString(sum[:])
	u := (&neturl.URL{Scheme: "http", Host: c.host(), Path: BlobPath + name}).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(data))
	if err != nil {
		return "", "", err
	}
	if c.Auth != nil {
		c.Auth.signSum(req, name) // the tracer checks the content against the name
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		return "", "", fmt.Errorf("tracer at %s: %w", c.Addr, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		var e ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return "", "", fmt.Errorf("tracer at %s: storing blob: %s: %s", c.Addr, res.Status, e.Error)
		}
		return "", "", fmt.Errorf("tracer at %s: storing blob: %s", c.Addr, res.Status)
	}
	return u, "sha256:" + name, nil
}

// PutPlan registers one part of the build plan before its steps run.
func (c *Client) PutPlan(ctx context.Context, traceID string, part trace.PlanPart) error {
	if !ValidTraceID(traceID) {
		return fmt.Errorf("invalid build trace ID %q", traceID)
	}
	u := neturl.URL{Scheme: "http", Host: c.host(), Path: TracePath + traceID + PlanSuffix}
	return c.post(ctx, u.String(), part, nil)
}

// Seal asks for the signed trace of the caller's build, done.
func (c *Client) Seal(ctx context.Context, traceID string, wait time.Duration, results map[string]string, evidenceFrom ...string) (*dsse.Envelope, error) {
	return c.SealWith(ctx, traceID, SealRequest{Wait: wait.String(), Results: results, EvidenceFrom: evidenceFrom})
}

// SealWith is Seal with a whole request (Wait, Results, EvidenceFrom, and
// the plan parts of solves that have no step).
func (c *Client) SealWith(ctx context.Context, traceID string, req SealRequest) (*dsse.Envelope, error) {
	if !ValidTraceID(traceID) {
		return nil, fmt.Errorf("invalid build trace ID %q", traceID)
	}
	u := neturl.URL{Scheme: "http", Host: c.host(), Path: TracePath + traceID + SealSuffix}
	var resp TraceResponse
	if err := c.post(ctx, u.String(), req, &resp); err != nil {
		return nil, err
	}
	if resp.Envelope == nil {
		return nil, fmt.Errorf("tracer at %s returned no envelope for build %s", c.Addr, traceID)
	}
	return resp.Envelope, nil
}

func (c *Client) post(ctx context.Context, u string, body, into any) error {
	dt, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(dt))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Auth != nil {
		c.Auth.sign(req, dt)
	}
	return c.do(req, into)
}

// Health asks whether the tracer is up.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	u := neturl.URL{Scheme: "http", Host: c.host(), Path: HealthPath}
	var h Health
	if err := c.get(ctx, u.String(), &h); err != nil {
		return nil, err
	}
	return &h, nil
}

func (c *Client) get(ctx context.Context, u string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	return c.do(req, into)
}

func (c *Client) do(req *http.Request, into any) error {
	res, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("tracer at %s: %w", c.Addr, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("tracer at %s: reading answer: %w", c.Addr, err)
	}
	if res.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("tracer at %s: %s: %s", c.Addr, res.Status, e.Error)
		}
		return fmt.Errorf("tracer at %s: %s", c.Addr, res.Status)
	}
	if into == nil {
		return nil
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("tracer at %s: decoding answer: %w", c.Addr, err)
	}
	return nil
}

// ErrUnreachable is wrapped by callers that could not reach the tracer.
var ErrUnreachable = errors.New("tracer unreachable")
