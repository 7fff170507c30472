// Package daemon runs buildtraced: it loads the probe, follows the
// containers of tagged build steps, and serves their signed traces on a
// loopback HTTP API until its context ends.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/buildtrace/buildtrace/bpf"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/tracer/probe"
	"github.com/buildtrace/buildtrace/tracer/server"
	"github.com/buildtrace/buildtrace/tracer/store"
)

// Config is the daemon's configuration, normally from flags.
type Config struct {
	Listen string
	// AlsoListen are more addresses to serve the same API on (--listen
	// given again): a docker bridge gateway, for builders on the bridge.
	AlsoListen       []string
	AllowNonLoopback bool
	Key              string // signer reference: PEM file or KMS URI
	State            string // directory of the embedded store
	MaxWait          time.Duration
	CgroupRoot       string
	Retention        time.Duration
	Version          string
	Logger           *slog.Logger
	// EvidenceRetention and EvidenceMaxBytes bound the sealed builds kept
	// as evidence for later cached steps.
	EvidenceRetention time.Duration
	EvidenceMaxBytes  int64
	// AdminSocket is the unix socket on which root can read any build's
	// trace; default <State>/admin.sock.
	AdminSocket string
	// SyscallHookAlways keeps the syscall hook attached from start to
	// stop, instead of only while traced containers can run.
	SyscallHookAlways bool
}

// ParseFlags fills a Config from command-line arguments.
func ParseFlags(name string, args []string) (Config, slog.Level, error) {
	var c Config
	var level string
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c.Listen = tracerapi.DefaultAddr
	fs.Var(&listenFlag{c: &c}, "listen", "`address` to serve the API on (loopback only unless --allow-non-loopback); repeat to serve on more addresses (default "+tracerapi.DefaultAddr+")")
	fs.BoolVar(&c.AllowNonLoopback, "allow-non-loopback", false, "allow --listen on a non-loopback address (the API has no authentication)")
	fs.StringVar(&c.Key, "key", "", "signing key: PEM private key `file` or KMS URI (required)")
	fs.StringVar(&c.State, "state", "/var/lib/buildtrace", "`directory` of the trace store")
	fs.DurationVar(&c.MaxWait, "max-wait", 2*time.Minute, "upper bound on how long a request waits for running steps")
	fs.StringVar(&c.CgroupRoot, "cgroup-root", probe.DefaultCgroupRoot, "cgroup2 mount `directory`")
	fs.DurationVar(&c.Retention, "retention", store.DefaultRetention, "how long a build's steps are kept after its last step ended")
	fs.DurationVar(&c.EvidenceRetention, "evidence-retention", store.DefaultEvidenceRetention, "how long a sealed build is kept as evidence for later builds' cached steps")
	fs.Int64Var(&c.EvidenceMaxBytes, "evidence-max-bytes", store.DefaultEvidenceMaxBytes, "at most this many `bytes` of sealed builds are kept as evidence (the oldest are evicted)")
	fs.StringVar(&c.AdminSocket, "admin-socket", "", "unix socket `path` on which root can read any build's trace (default <state>/admin.sock)")
	hook := fs.String("syscall-hook", "on-demand", "`when` the system call hook is attached: on-demand (while traced containers can run; the rest of the host pays nothing between builds) or always")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return c, 0, err
	}
	switch *hook {
	case "on-demand":
	case "always":
		c.SyscallHookAlways = true
	default:
		return c, 0, fmt.Errorf("--syscall-hook %q: want on-demand or always", *hook)
	}
	if fs.NArg() > 0 {
		return c, 0, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.Key == "" {
		return c, 0, errors.New("--key is required")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return c, 0, fmt.Errorf("--log-level: %w", err)
	}
	if c.MaxWait <= 0 {
		return c, 0, errors.New("--max-wait must be positive")
	}
	return c, lv, nil
}

// listenFlag is --listen: the first replaces the default, later ones add.
type listenFlag struct {
	c   *Config
	set bool
}

func (f *listenFlag) String() string {
	if f == nil || f.c == nil {
		return ""
	}
	return strings.Join(append([]string{f.c.Listen}, f.c.AlsoListen...), ",")
}

func (f *listenFlag) Set(v string) error {
	if !f.set {
		f.c.Listen, f.set = v, true
		return nil
	}
	f.c.AlsoListen = append(f.c.AlsoListen, v)
	return nil
}

// CheckListen refuses an address that is not loopback unless allowed: the
// API serves build details to anyone who can reach it.
func CheckListen(addr string, allowNonLoopback bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", addr, err)
	}
	if allowNonLoopback {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--listen %q is not a loopback address; the API is unauthenticated, pass --allow-non-loopback to serve it anyway", addr)
	}
	return nil
}

// Run runs the daemon until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Retention <= 0 {
		cfg.Retention = store.DefaultRetention
	}
	addrs := append([]string{cfg.Listen}, cfg.AlsoListen...)
	for _, a := range addrs {
		if err := CheckListen(a, cfg.AllowNonLoopback); err != nil {
			return err
		}
	}
	if err := probe.Check(cfg.CgroupRoot); err != nil {
		return fmt.Errorf("this kernel cannot run the probe: %w", err)
	}
	signer, err := sign.LoadSigner(ctx, cfg.Key)
	if err != nil {
		return err
	}
	st, err := store.Open(cfg.State)
	if err != nil {
		return err
	}
	defer st.Close()
	expire(st, cfg.Retention, log)

	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", a, err)
		}
		lns = append(lns, ln)
	}

	p, err := probe.Load(ctx, probe.Options{CgroupRoot: cfg.CgroupRoot, SyscallsOnDemand: !cfg.SyscallHookAlways, Logger: log})
	if err != nil {
		return err
	}
	defer p.Close()
	// On the clock of event times, as the plans' arrival is (probe.Now).
	since := p.Now().UTC()

	host, _ := os.Hostname()
	srv := server.New(server.Config{
		Source:     p,
		Store:      st,
		Signer:     signer,
		Logger:     log,
		Tracer:     trace.Tracer{Name: "buildtraced", Version: cfg.Version, Host: host, Kernel: kernel(), BPFObjects: bpf.ObjectDigest(), Since: since},
		MaxWait:    cfg.MaxWait,
		CgroupRoot: cfg.CgroupRoot,
	})
	// After Load, so that a container either is found here or its mkdir
	// is seen; those the probe replays are known as pre-existing.
	if err := scan(cfg.CgroupRoot, srv, log); err != nil {
		log.Warn("scanning running containers", "err", err)
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx, srv.Handle) }()
	go func() {
		if err := p.Cgroups(runCtx, srv.Early); err != nil && runCtx.Err() == nil {
			log.Warn("reading cgroup creations ahead of events", "err", err)
		}
	}()

	// A trace request may wait up to MaxWait before answering, and a blob
	// PUT reads for up to BlobReadTimeout: the whole-request timeouts
	// must outlast both. ReadTimeout too: when it fires during a waiting
	// handler, net/http cancels the request's context.
	reqTimeout := max(cfg.MaxWait, server.BlobReadTimeout) + time.Minute
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       reqTimeout,
		WriteTimeout:      reqTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	httpErr := make(chan error, len(lns)+1)
	for _, ln := range lns {
		go func() { httpErr <- hs.Serve(ln) }()
	}
	if cfg.AdminSocket == "" {
		cfg.AdminSocket = filepath.Join(cfg.State, "admin.sock")
	}
	aln, err := listenAdmin(cfg.AdminSocket)
	if err != nil {
		return err
	}
	as := adminServer(srv.AdminHandler(), cfg.MaxWait)
	go func() { httpErr <- as.Serve(aln) }()
	defer as.Close()
	var listening []string
	for _, ln := range lns {
		listening = append(listening, ln.Addr().String())
	}
	log.Info("buildtraced started", "listen", strings.Join(listening, ","), "key", signer.KeyID(), "state", cfg.State, "cgroupRoot", cfg.CgroupRoot)

	if cfg.EvidenceRetention <= 0 {
		cfg.EvidenceRetention = store.DefaultEvidenceRetention
	}
	if cfg.EvidenceMaxBytes <= 0 {
		cfg.EvidenceMaxBytes = store.DefaultEvidenceMaxBytes
	}
	srv.ExpireEvidence(cfg.EvidenceRetention, cfg.EvidenceMaxBytes)
	ticker := time.NewTicker(time.Hour)
	defer ticker.Stop()
	var result error
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			break loop
		case err := <-runErr:
			result = fmt.Errorf("probe stopped: %w", err)
			runErr = nil
			break loop
		case err := <-httpErr:
			result = fmt.Errorf("serving API: %w", err)
			break loop
		case <-ticker.C:
			expire(st, cfg.Retention, log)
			srv.ExpireEvidence(cfg.EvidenceRetention, cfg.EvidenceMaxBytes)
		}
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hs.Shutdown(shutCtx)
	stopRun()
	if runErr != nil {
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) && result == nil {
			result = fmt.Errorf("probe stopped: %w", err)
		}
	}
	// Steps that ended are sealed into the store before it closes; steps
	// still running are lost with the process.
	srv.WaitSeals()
	return result
}

func expire(st *store.Store, retention time.Duration, log *slog.Logger) {
	n, err := st.Expire(time.Now().Add(-retention))
	if err != nil {
		log.Error("expiring old builds", "err", err)
	} else if n > 0 {
		log.Info("expired old builds", "count", n)
	}
}

func kernel() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
}
