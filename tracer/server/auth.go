package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/tracer/peer"
)

// counterWindow is how far behind the highest counter a frontend's request
// may still arrive: its requests can overtake each other (one solve per
// platform, in parallel), but none is taken twice.
const counterWindow = 1024

// counters are the request counters each frontend (by container) has used.
type counters struct {
	mu  sync.Mutex
	all map[string]*window
}

type window struct {
	max  uint64
	seen map[uint64]struct{}
	at   time.Time
}

// use records counter n of frontend container c, and reports false when
// it was used before or is too old to tell.
func (cs *counters) use(c string, n uint64, now time.Time) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.all == nil {
		cs.all = map[string]*window{}
	}
	if len(cs.all) > 4096 {
		for k, w := range cs.all {
			if now.Sub(w.at) > planTTL {
				delete(cs.all, k)
			}
		}
	}
	w := cs.all[c]
	if w == nil {
		w = &window{seen: map[uint64]struct{}{}}
		cs.all[c] = w
	}
	if _, dup := w.seen[n]; dup || n == 0 || w.max >= counterWindow && n <= w.max-counterWindow {
		return false
	}
	w.seen[n], w.at = struct{}{}, now
	if n > w.max {
		w.max = n
		for k := range w.seen {
			if w.max >= counterWindow && k <= w.max-counterWindow {
				delete(w.seen, k)
			}
		}
	}
	return true
}

// checkSigned checks that r carries a MAC made with fe's request key over
// its method, path, body digest and a counter fe has not used before
// (tracerapi.Auth), and returns the body digest it names. A request that
// fails was not written by the frontend, whatever socket it came on.
func (s *Server) checkSigned(w http.ResponseWriter, r *http.Request, fe *peer.Frontend) (string, bool) {
	n, mac, err := tracerapi.ParseAuth(r.Header.Get(tracerapi.AuthHeader))
	if err != nil {
		s.refuse(w, r, fe, "the request carries no valid %s header (%v)", tracerapi.AuthHeader, err)
		return "", false
	}
	sum := r.Header.Get(tracerapi.BodyHeader)
	if !tracerapi.ValidBodySum(sum) {
		s.refuse(w, r, fe, "the request carries no valid %s header", tracerapi.BodyHeader)
		return "", false
	}
	if !hmac.Equal(mac, tracerapi.RequestMAC(fe.RequestKey, r.Method, r.URL.Path, sum, n)) {
		s.refuse(w, r, fe, "the request is not signed with the frontend's key: someone else wrote it into the frontend's connection")
		return "", false
	}
	if !s.counters.use(fe.ContainerID, n, time.Now()) {
		s.refuse(w, r, fe, "request counter %d was used before: a replay", n)
		return "", false
	}
	return sum, true
}

// signedBody is checkSigned, then reads the body (at most limit bytes) and
// checks it against the digest the MAC covers.
func (s *Server) signedBody(w http.ResponseWriter, r *http.Request, fe *peer.Frontend, limit int64) ([]byte, bool) {
	sum, ok := s.checkSigned(w, r, fe)
	if !ok {
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the request body: %v", err)
		return nil, false
	}
	got := sha256.Sum256(body)
	if hex.EncodeToString(got[:]) != sum {
		s.refuse(w, r, fe, "the request body is not the one the frontend signed")
		return nil, false
	}
	return body, true
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, fe *peer.Frontend, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	writeError(w, http.StatusForbidden, "%v: %s", peer.ErrNotFrontend, msg)
	s.log.Warn("refused a request on a frontend's connection", "path", r.URL.Path, "remote", r.RemoteAddr, "container", fe.ContainerID, "err", msg)
}
