package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func blobFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dir, BlobDir))
	must(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestHostileIDs: trace, step and container IDs come from build clients.
// None of them names a path: what is stored lands under blobs/ with a
// random name, is read back by its IDs, and nothing appears elsewhere.
func TestHostileIDs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "state")
	s, err := Open(dir)
	must(t, err)
	defer s.Close()
	now := time.Now()
	hostile := []string{"../../escape", "/etc/passwd", "..", "a/../../../b", "x\x00y", "../" + BlobDir + "/../" + IndexFile}
	for i, id := range hostile {
		st := trace.Step{StepID: hostile[(i+1)%len(hostile)], ContainerID: hostile[(i+2)%len(hostile)], Cgroup: id}
		must(t, s.Put(id, st, now))
		must(t, s.PutEvidence(id, []byte(`{"payload":"`+id+`"}`), []RunRef{{StepID: st.StepID, DiffDigest: "sha256:" + id, ContainerID: st.ContainerID}}, now))
	}
	for i, id := range hostile {
		got, err := s.Steps(id)
		must(t, err)
		// (IDs with a "/" share key prefixes: more steps may come back.)
		if !slices.ContainsFunc(got, func(st trace.Step) bool { return st.Cgroup == id }) {
			t.Errorf("steps of %q = %+v", id, got)
		}
		refs, envs, err := s.Evidence(hostile[(i+1)%len(hostile)], 8)
		must(t, err)
		found := false
		for j, r := range refs {
			found = found || r.BuildTraceID == id && string(envs[j]) == `{"payload":"`+id+`"}`
		}
		if !found {
			t.Errorf("evidence of build %q not found: %+v", id, refs)
		}
	}
	// Nothing but the state directory under root; under it, the index and
	// blobs named by the store.
	if es, _ := os.ReadDir(root); len(es) != 1 {
		t.Errorf("files outside the state directory: %v", es)
	}
	es, err := os.ReadDir(dir)
	must(t, err)
	for _, e := range es {
		if e.Name() != IndexFile && e.Name() != BlobDir {
			t.Errorf("unexpected file in the state directory: %s", e.Name())
		}
	}
	names := blobFiles(t, dir)
	if len(names) != 2*len(hostile) {
		t.Errorf("%d blobs, want %d", len(names), 2*len(hostile))
	}
	for _, n := range names {
		if !validBlobName(n) {
			t.Errorf("blob name %q", n)
		}
	}
}

// TestForgedBlobName: a name in the index that is not a blob name is
// refused, not followed.
func TestForgedBlobName(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	must(t, err)
	defer s.Close()
	for _, name := range []string{"../" + IndexFile, "/etc/passwd", "..", "0123456789abcdef0123456789abcde/"} {
		v, _ := json.Marshal(blobRef{Blob: name, Size: 1})
		must(t, s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(stepsBucket).Put(stepKey("t", "s", "c"), v) }))
		if _, err := s.Steps("t"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("index naming %q: err = %v, want ErrCorrupt", name, err)
		}
	}
}

// TestPermissions: other local users read nothing.
func TestPermissions(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o755))
	// A blob directory left too open is closed.
	must(t, os.Mkdir(filepath.Join(dir, BlobDir), 0o755))
	s, err := Open(dir)
	must(t, err)
	defer s.Close()
	must(t, s.Put("t", trace.Step{StepID: "s", ContainerID: "c"}, time.Now()))
	must(t, s.PutEvidence("t", []byte(`{}`), []RunRef{{StepID: "s", DiffDigest: "d"}}, time.Now()))
	check := func(p string, want os.FileMode) {
		t.Helper()
		fi, err := os.Lstat(p)
		must(t, err)
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	check(filepath.Join(dir, BlobDir), 0o700)
	check(filepath.Join(dir, IndexFile), 0o600)
	for _, n := range blobFiles(t, dir) {
		check(filepath.Join(dir, BlobDir, n), 0o600)
	}
	// A symlink where the blob directory should be is refused.
	dir2 := t.TempDir()
	must(t, os.Symlink(t.TempDir(), filepath.Join(dir2, BlobDir)))
	if s2, err := Open(dir2); err == nil {
		s2.Close()
		t.Error("Open followed a symlinked blob directory")
	}
}

// TestCrashLeftovers: a blob without an index entry (a crash between the
// file and the commit) is removed at Open; an index entry without its
// blob, or with a changed one, is an error, never another value.
func TestCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	must(t, err)
	now := time.Now()
	must(t, s.Put("t1", trace.Step{StepID: "s", ContainerID: "c1"}, now))
	must(t, s.Put("t2", trace.Step{StepID: "s", ContainerID: "c2"}, now))
	must(t, s.PutEvidence("t1", []byte(`{"e":1}`), []RunRef{{StepID: "s", DiffDigest: "d1"}}, now))
	must(t, s.PutEvidence("t2", []byte(`{"e":2}`), []RunRef{{StepID: "s", DiffDigest: "d2"}}, now.Add(time.Second)))
	// Orphans: a written blob never indexed, a stray file.
	orphan, err := s.writeBlob([]byte("never indexed"), true)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, BlobDir, "junk"), nil, 0o600))
	must(t, s.Close())
	s, err = Open(dir)
	must(t, err)
	defer s.Close()
	if names := blobFiles(t, dir); len(names) != 4 {
		t.Errorf("after reopen: %d blobs (%v), want the 4 indexed (orphan %s)", len(names), names, orphan.Blob)
	}

	ref := func(traceID string) blobRef {
		var r blobRef
		must(t, s.db.View(func(tx *bolt.Tx) error {
			return json.Unmarshal(tx.Bucket(stepsBucket).Get(stepKey(traceID, "s", "c"+traceID[1:])), &r)
		}))
		return r
	}
	// A missing step file: the build's steps are an error, not fewer steps.
	must(t, os.Remove(filepath.Join(dir, BlobDir, ref("t1").Blob)))
	if got, err := s.Steps("t1"); !errors.Is(err, ErrMissing) {
		t.Errorf("steps with a missing blob = %+v, %v; want ErrMissing", got, err)
	}
	// A changed file (same size): corrupt.
	p := filepath.Join(dir, BlobDir, ref("t2").Blob)
	dt, err := os.ReadFile(p)
	must(t, err)
	dt[len(dt)-2] ^= 1
	must(t, os.WriteFile(p, dt, 0o600))
	if got, err := s.Steps("t2"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("steps with a changed blob = %+v, %v; want ErrCorrupt", got, err)
	}
	// A missing envelope is left out and said, the other one served.
	var env envelopeRef
	must(t, s.db.View(func(tx *bolt.Tx) error { return json.Unmarshal(tx.Bucket(envelopesBucket).Get([]byte("t2")), &env) }))
	must(t, os.Remove(filepath.Join(dir, BlobDir, env.Blob)))
	refs, envs, err := s.Evidence("s", 4)
	if !errors.Is(err, ErrMissing) || len(refs) != 1 || refs[0].BuildTraceID != "t1" || string(envs[0]) != `{"e":1}` {
		t.Errorf("evidence with a missing envelope = %+v %q %v", refs, envs, err)
	}
}

// TestExpiryRemovesFiles: expiry deletes the files of what it expires.
func TestExpiryRemovesFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	must(t, err)
	defer s.Close()
	old, now := time.Now().Add(-30*24*time.Hour), time.Now()
	must(t, s.Put("old", trace.Step{StepID: "s", ContainerID: "c"}, old))
	must(t, s.Put("new", trace.Step{StepID: "s", ContainerID: "c"}, now))
	// Re-stored: the replaced file goes at once.
	must(t, s.Put("new", trace.Step{StepID: "s", ContainerID: "c", Cgroup: "/again"}, now))
	must(t, s.PutEvidence("old", []byte(`{"old":1}`), []RunRef{{StepID: "s", DiffDigest: "d1"}}, old))
	must(t, s.PutEvidence("new", []byte(`{"new":1}`), []RunRef{{StepID: "s", DiffDigest: "d2"}}, now))
	if n := len(blobFiles(t, dir)); n != 4 {
		t.Fatalf("%d blobs, want 4", n)
	}
	if n, err := s.Expire(now.Add(-DefaultRetention)); err != nil || n != 1 {
		t.Fatalf("expire = %d, %v", n, err)
	}
	ev, err := s.ExpireEvidence(now.Add(-DefaultEvidenceRetention+time.Hour), 1<<20)
	if err != nil || ev.Builds != 1 || ev.Bytes != int64(len(`{"old":1}`)) || ev.HeldBytes != int64(len(`{"new":1}`)) {
		t.Fatalf("expire evidence = %+v, %v", ev, err)
	}
	if n := len(blobFiles(t, dir)); n != 2 {
		t.Errorf("%d blobs after expiry, want 2", n)
	}
	if got, err := s.Steps("new"); err != nil || len(got) != 1 || got[0].Cgroup != "/again" {
		t.Errorf("kept step = %+v, %v", got, err)
	}
}

// TestMigrateLegacy: a store of the earlier layout (values inside
// traces.db) is read into the index and blobs at Open, and removed.
func TestMigrateLegacy(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, legacyFile)
	db, err := bolt.Open(legacy, 0o600, nil)
	must(t, err)
	sealed := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	step, _ := json.Marshal(trace.Step{StepID: "s1", ContainerID: "c1", Cgroup: "/legacy"})
	env, _ := json.Marshal(struct {
		Sealed   time.Time       `json:"sealed"`
		Envelope json.RawMessage `json:"envelope"`
	}{sealed, json.RawMessage(`{"payload":"legacy"}`)})
	run, _ := json.Marshal(RunRef{StepID: "s1", DiffDigest: "sha256:a", BuildTraceID: "b1", ContainerID: "c1", Sealed: sealed})
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(time.Now().UnixNano()))
	must(t, db.Update(func(tx *bolt.Tx) error {
		for bucket, kv := range map[string][2][]byte{
			"steps":     {[]byte("b1/s1/c1"), step},
			"builds":    {[]byte("b1"), ts[:]},
			"envelopes": {[]byte("b1"), env},
			"runs":      {[]byte("s1/sha256:a"), run},
		} {
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			if err := b.Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	}))
	must(t, db.Close())

	for range 2 { // migrated, then reopened as it is
		s, err := Open(dir)
		must(t, err)
		if _, err := os.Stat(legacy); err == nil {
			t.Error("the legacy store is still there")
		}
		got, err := s.Steps("b1")
		if err != nil || len(got) != 1 || got[0].Cgroup != "/legacy" {
			t.Errorf("migrated steps = %+v, %v", got, err)
		}
		refs, envs, err := s.Evidence("s1", 4)
		if err != nil || len(refs) != 1 || refs[0].BuildTraceID != "b1" || string(envs[0]) != `{"payload":"legacy"}` {
			t.Errorf("migrated evidence = %+v %q %v", refs, envs, err)
		}
		if n := len(blobFiles(t, dir)); n != 2 {
			t.Errorf("%d blobs, want 2", n)
		}
		must(t, s.Close())
	}
}

// TestExpiryDuringReads: a build expired while it is being read is read
// whole or not at all, never as a missing file.
func TestExpiryDuringReads(t *testing.T) {
	s, err := Open(t.TempDir())
	must(t, err)
	defer s.Close()
	old := time.Now().Add(-30 * 24 * time.Hour)
	stop := make(chan struct{})
	errs := make(chan error, 2)
	go func() {
		defer func() { errs <- nil }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Put("x", trace.Step{StepID: "s", ContainerID: fmt.Sprint(i % 3)}, old); err != nil {
				errs <- err
				return
			}
			if _, err := s.Expire(time.Now()); err != nil {
				errs <- err
				return
			}
		}
	}()
	// Readers for a while: the window (between an index entry and its
	// file) is short.
	readErr := make(chan error, 4)
	for range 4 {
		go func() {
			var err error
			for end := time.Now().Add(2 * time.Second); err == nil && time.Now().Before(end); {
				_, err = s.Steps("x")
			}
			readErr <- err
		}()
	}
	for range 4 {
		if err := <-readErr; err != nil {
			close(stop)
			t.Fatalf("reading a build being expired: %v", err)
		}
	}
	close(stop)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}
