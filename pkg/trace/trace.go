// Package trace holds what the tracer observed of one build: the payload the
// tracer signs (inside a DSSE envelope) and the frontend embeds in the
// runtime-trace attestation. Field names are part of the published format
// (docs/trace-format.md); change them only with a new Version.
package trace

import (
	"strconv"
	"strings"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// PayloadType is the DSSE payload type of a signed Build.
const PayloadType = "application/vnd.buildtrace.trace.v1+json"

// Version names this schema inside the payload.
const Version = "https://buildtrace.dev/trace/v2"

// Build is every step the tracer saw run under one build trace ID.
type Build struct {
	Version      string    `json:"version"`
	BuildTraceID string    `json:"buildTraceID"` // the W3C trace ID from TRACEPARENT
	Tracer       Tracer    `json:"tracer"`
	GeneratedAt  time.Time `json:"generatedAt"`
	Steps        []Step    `json:"steps"`
	// Pending lists steps that started but were not sealed before the
	// request's wait ran out; a build with pending steps is incomplete.
	Pending []string `json:"pending,omitempty"`
	// Sealed is true when the build's frontend said it was done and every
	// step the tracer saw start had ended and was sealed. A verifier
	// refuses an unsealed trace: it may lack what came after.
	Sealed bool `json:"sealed"`
	// Requester is who asked for this trace. Only a build's own frontend
	// gets a trace that verifies; the tracer names it here so a policy can
	// require a given frontend executable.
	Requester Requester `json:"requester"`
	// Plan is what the frontend told the tracer, before the steps ran,
	// that the build would do: signed with what was observed, so a
	// verifier never takes a step list, instruction or layer order from
	// unsigned text.
	Plan []PlanPart `json:"plan"`
	// Results names, per image platform, the plan part whose result
	// became that platform's image.
	Results map[string]string `json:"results,omitempty"`
	// Evidence holds, for planned steps that did not run in this build
	// (BuildKit served them from its cache), the signed envelope of an
	// earlier build in which the step ran, and which container of it. A
	// step may have several candidates (runs with different diffs); the
	// verifier takes the one whose diff is the image's layer.
	Evidence []Evidence `json:"evidence,omitempty"`
}

// EvidenceEnvelopes returns the envelope of each build the evidence names,
// by build trace ID.
func (b *Build) EvidenceEnvelopes() map[string]*dsse.Envelope {
	out := map[string]*dsse.Envelope{}
	for _, e := range b.Evidence {
		if e.Envelope != nil && out[e.BuildTraceID] == nil {
			out[e.BuildTraceID] = e.Envelope
		}
	}
	return out
}

// Evidence points at a run of a step in an earlier build's signed trace.
type Evidence struct {
	StepID       string `json:"stepID"`
	BuildTraceID string `json:"buildTraceID"`
	ContainerID  string `json:"containerID"`
	// Envelope is that build's DSSE envelope, verbatim (payload: a
	// Build). Its own signature is what proves the run. It is carried by
	// the first entry of each build only; later entries of the same build
	// leave it out.
	Envelope *dsse.Envelope `json:"envelope,omitempty"`
}

// Requester kinds.
const (
	// RequesterFrontend is a build's frontend: the init process of a
	// BuildKit container (not a step) whose bundle carries the build's
	// TRACEPARENT.
	RequesterFrontend = "frontend"
	// RequesterAdmin is root on the tracer's host, through the admin
	// socket. Its traces are for debugging and never verify.
	RequesterAdmin = "admin"
)

// Requester identifies the caller that a trace was signed for.
type Requester struct {
	Kind string `json:"kind"`
	// PID is the caller's process as the host sees it.
	PID uint32 `json:"pid,omitempty"`
	// ContainerID is the BuildKit container the frontend ran in.
	ContainerID string `json:"containerID,omitempty"`
	// Executable is the path of the caller's executable inside its
	// container, and ExecutableDigest its content's "sha256:<hex>".
	Executable       string `json:"executable,omitempty"`
	ExecutableDigest string `json:"executableDigest,omitempty"`
}

// PlanPart is one LLB solve of the frontend: for one platform, the steps
// (every ExecOp, any stage) and the chain of ops that make the layers of
// its result, bottom first, above the base image.
type PlanPart struct {
	// ID names the part: the digest of the solve's result op.
	ID       string     `json:"id"`
	Platform string     `json:"platform"`
	Base     *BaseImage `json:"base,omitempty"` // nil: FROM scratch
	Layers   []LayerOp  `json:"layers"`
	Steps    []PlanStep `json:"steps"`
	Received time.Time  `json:"received"` // when the tracer got it
	// Witness marks the part of a witness run: a step the frontend runs on
	// a platform's finished result, with no use but to be traced on top of
	// every layer of that image. Its signed lower digests bind the layers
	// no traced RUN ran on (COPY/ADD after the last RUN). Nil for every
	// other part.
	Witness *Witness `json:"witness,omitempty"`
}

// Witness says which result a witness part's step ran on.
type Witness struct {
	// Platform is the image platform whose result the step ran on.
	Platform string `json:"platform"`
	// Of is the ID of the plan part whose result is the step's root file
	// system (Build.Results[Platform] when that result became the image).
	Of string `json:"of"`
	// StepID is the witness step: the top op of the part's layers.
	StepID string `json:"stepID"`
}

// Witnesses returns the witness parts of the result part of (ID) for
// platform.
func Witnesses(parts []PlanPart, platform, of string) []*PlanPart {
	var out []*PlanPart
	for i := range parts {
		if w := parts[i].Witness; w != nil && w.Platform == platform && w.Of == of {
			out = append(out, &parts[i])
		}
	}
	return out
}

// FirstReceived is when the tracer received the first of parts (zero when
// there is none): the start of the build the parts plan.
func FirstReceived(parts []PlanPart) time.Time {
	var t time.Time
	for _, p := range parts {
		if t.IsZero() || p.Received.Before(t) {
			t = p.Received
		}
	}
	return t
}

// BaseImage is the image a result is built on, pinned by digest.
type BaseImage struct {
	Ref    string `json:"ref"`    // as the LLB names it, with @sha256:...
	Digest string `json:"digest"` // the pinned manifest or index digest
}

// Layer op kinds.
const (
	LayerRun   = "run"   // an ExecOp: a traced step
	LayerFile  = "file"  // a FileOp (COPY, ADD, WORKDIR): made by BuildKit, not traced
	LayerMerge = "merge" // a MergeOp boundary (COPY --link)
	LayerOther = "other" // an op whose layers buildtrace cannot account for
)

// LayerOp is one op in the chain of a result's root file system.
type LayerOp struct {
	Kind     string `json:"kind"`
	OpDigest string `json:"opDigest"`
	StepID   string `json:"stepID,omitempty"` // LayerRun
	Name     string `json:"name,omitempty"`   // BuildKit's vertex name
	// Locations are the op's Dockerfile lines (COPY, ADD, RUN...).
	Locations []Location `json:"locations,omitempty"`
}

// PlanStep is one ExecOp (RUN) of a plan part.
type PlanStep struct {
	StepID      string     `json:"stepID"`
	OpDigest    string     `json:"opDigest"`
	Name        string     `json:"name,omitempty"`
	Instruction string     `json:"instruction,omitempty"`
	Stage       string     `json:"stage,omitempty"`
	Platform    string     `json:"platform,omitempty"`
	Args        []string   `json:"args,omitempty"` // the ExecOp's argv
	Locations   []Location `json:"locations,omitempty"`
	// SecretEnv and SecretFiles name the step's secrets (RUN
	// --mount=type=secret): environment variable names and mount paths,
	// never values. The tracer reads the values from the container's bundle
	// and redacts them from everything it stores.
	SecretEnv   []string `json:"secretEnv,omitempty"`
	SecretFiles []string `json:"secretFiles,omitempty"`
	// Nonce is the step's nonce, which the frontend put into the step's
	// container (NO_PROXY=buildtrace-<nonce>.invalid). The frontend does
	// not send it: the tracer derives every step's nonce from the
	// frontend's request key (tracerapi.NonceRoot) and never reads this
	// field; one a request carries is dropped before the plan is signed.
	Nonce string `json:"nonce,omitempty"`
}

// Location is a line range of a source file (the Dockerfile).
type Location struct {
	File      string `json:"file"`
	StartLine int    `json:"startLine"`
	EndLine   int    `json:"endLine"`
}

// Tracer identifies the monitor.
type Tracer struct {
	Name    string `json:"name"` // "buildtraced"
	Version string `json:"version"`
	Host    string `json:"host"`
	Kernel  string `json:"kernel"`
	// BPFObjects is the digest of the loaded eBPF object file.
	BPFObjects string `json:"bpfObjects"`
	// Since is when the tracer started following cgroups. A step of a build
	// that began after Since and is absent from Steps did not run.
	Since time.Time `json:"since"`
}

// Step is one run of one tagged ExecOp (one runc container).
type Step struct {
	StepID      string        `json:"stepID"`
	ContainerID string        `json:"containerID"`
	Cgroup      string        `json:"cgroup"`
	Start       time.Time     `json:"start"`
	End         time.Time     `json:"end"`
	Processes   []Process     `json:"processes"`
	Files       []FileOp      `json:"files,omitempty"`
	Reads       Reads         `json:"reads"`
	Network     []Destination `json:"network,omitempty"`
	DNS         []DNSQuery    `json:"dns,omitempty"`
	Resources   Resources     `json:"resources"`
	Diff        Diff          `json:"diff"`
	// Lowers are the diff digests of the container's lower overlay
	// layers, top first: the snapshots of every op below this step, base
	// image included. They bind COPY layers and the base to what the step
	// ran on. An entry is empty when it could not be computed.
	Lowers       []string     `json:"lowers,omitempty"`
	Completeness Completeness `json:"completeness"`
	// Redactions counts the places where a secret's value (a --secret the
	// step mounted) was replaced with RedactedSecret before the step was
	// stored.
	Redactions int `json:"redactions,omitempty"`
	// Attribution says how the step's build was decided: AttributionBundle
	// (the container's OCI bundle) or AttributionNone (it could not be;
	// the tracer stores the step under its step ID only).
	Attribution string `json:"attribution,omitempty"`
	// Materials are the files of Diff that a process wrote after it had
	// received data from a remote endpoint: what the step downloaded.
	// Sorted by path, pid, endpoint; capped at MaxMaterials.
	Materials []Material `json:"materials,omitempty"`
	// MaterialsTruncated is true when Materials was capped. Nothing was
	// lost to the tracer: the files, processes and destinations are all
	// in the step.
	MaterialsTruncated bool `json:"materialsTruncated,omitempty"`
}

// RedactedSecret replaces a secret's value wherever it would be stored.
const RedactedSecret = "[REDACTED-SECRET]"

// ReasonNoDiff starts the completeness reason of a step whose diff could
// not be computed; the diff's error, which may quote paths, follows.
const ReasonNoDiff = "no file-system diff: "

// Step attributions.
const (
	AttributionBundle = "bundle"
	AttributionNone   = "unattributed"
)

// Process is one process (thread group) of a step. A process that forked
// and never exec'd keeps its parent's binary and Argv and has Exec false.
type Process struct {
	PID    uint32 `json:"pid"` // as the host sees it
	PPID   uint32 `json:"ppid"`
	Exec   bool   `json:"exec"`
	Binary string `json:"binary,omitempty"` // file executed, as the container sees it
	// Filename is the name execve was given when it differs from Binary
	// (a symlink such as /bin/sh, or /proc/self/exe).
	Filename      string   `json:"filename,omitempty"`
	Argv          []string `json:"argv,omitempty"`
	ArgvTruncated bool     `json:"argvTruncated,omitempty"`
	// UID and GID are the effective IDs the process's image runs with
	// (a setuid or setgid file's owner); RealUID and RealGID are the real
	// ones, set only when they differ.
	UID      uint32     `json:"uid"`
	GID      uint32     `json:"gid"`
	RealUID  *uint32    `json:"realUid,omitempty"`
	RealGID  *uint32    `json:"realGid,omitempty"`
	Cwd      string     `json:"cwd,omitempty"`
	Start    time.Time  `json:"start"`
	End      *time.Time `json:"end,omitempty"`
	ExitCode *int       `json:"exitCode,omitempty"`
	Signal   int        `json:"signal,omitempty"`
	// Execs holds earlier images when a process exec'd more than once.
	Execs []Exec `json:"execs,omitempty"`
	// BinaryAnonymous marks a Binary that is no path but the name of a
	// file outside any directory ("memfd:<name>" for memfd_create): what
	// ran cannot be found in the file system.
	BinaryAnonymous bool `json:"binaryAnonymous,omitempty"`
	// Adopted marks a process already running when the tracer began
	// following its step (a tracer restart): Argv, PPID, UID and GID come
	// from /proc, Start is its start time, and its earlier execs, files
	// and network activity were not seen.
	Adopted bool `json:"adopted,omitempty"`
}

// Exec is one earlier execve of a process that exec'd again.
type Exec struct {
	Binary        string    `json:"binary"`
	Filename      string    `json:"filename,omitempty"`
	Argv          []string  `json:"argv,omitempty"`
	ArgvTruncated bool      `json:"argvTruncated,omitempty"`
	Time          time.Time `json:"time"`
	// BinaryAnonymous: as Process.BinaryAnonymous.
	BinaryAnonymous bool `json:"binaryAnonymous,omitempty"`
}

// File operation names.
const (
	OpCreate   = "create"
	OpWrite    = "write" // opened for writing
	OpTruncate = "truncate"
	OpUnlink   = "unlink"
	OpRename   = "rename"
	OpChmod    = "chmod"
	OpChown    = "chown"
	OpLink     = "link"
	OpSymlink  = "symlink"
	OpMkdir    = "mkdir"
	OpRmdir    = "rmdir"
	// OpExchange is renameat2(RENAME_EXCHANGE): Path and Target swapped
	// contents, so both changed.
	OpExchange = "exchange"
	// OpMknod is mknod/mknodat: a regular file, FIFO, socket or device
	// node; Mode holds the permission bits.
	OpMknod = "mknod"
	// OpSetxattr and OpRemovexattr change an extended attribute (e.g.
	// security.capability); Target is the attribute's name.
	OpSetxattr    = "setxattr"
	OpRemovexattr = "removexattr"
)

// FileOp is one successful file-changing system call.
type FileOp struct {
	Op     string    `json:"op"`
	Path   string    `json:"path"`             // as the container sees it
	Target string    `json:"target,omitempty"` // rename/link destination, symlink target, xattr name
	Mode   *uint32   `json:"mode,omitempty"`
	UID    *int64    `json:"uid,omitempty"`
	GID    *int64    `json:"gid,omitempty"`
	PID    uint32    `json:"pid"`
	Time   time.Time `json:"time"`
}

// Reads summarises files opened read-only.
type Reads struct {
	Paths     []string `json:"paths,omitempty"` // distinct, sorted, capped
	Distinct  int      `json:"distinct"`        // distinct paths seen, including those over the cap
	Truncated bool     `json:"truncated,omitempty"`
}

// Destination is one remote endpoint a step sent to.
type Destination struct {
	Protocol      string    `json:"protocol"` // "tcp", "udp", "icmp", "icmpv6", "raw" (a raw IP socket), ...
	IP            string    `json:"ip"`
	Port          uint16    `json:"port"`
	Hostname      string    `json:"hostname,omitempty"` // from a DNS answer to a question the step sent
	Op            string    `json:"op"`                 // first way it was reached: connect, sendto, sendmsg, foreign (ForeignSocket), traffic (packets only)
	PIDs          []uint32  `json:"pids"`               // processes that reached it
	Count         int       `json:"count"`
	BytesSent     uint64    `json:"bytesSent"`
	BytesReceived uint64    `json:"bytesReceived"`
	First         time.Time `json:"first"`
	// Failed counts the attempts (connect) that failed, included in
	// Count; Error names the errno of the last one (ECONNREFUSED, ...).
	Failed int    `json:"failed,omitempty"`
	Error  string `json:"error,omitempty"`
	// HostnameUnconfirmed is a name only an unconfirmed DNS answer gave
	// for this address (see DNSQuery.Unconfirmed); never trust it.
	HostnameUnconfirmed string `json:"hostnameUnconfirmed,omitempty"`
	// ForeignSocket: the step reached it through a socket made outside
	// its container (another local user's, passed to it; or inherited),
	// whose packets are charged to whoever made it: BytesSent and
	// BytesReceived do not count them, and the step is incomplete.
	ForeignSocket bool `json:"foreignSocket,omitempty"`
}

// DNSQuery is one DNS question a step asked on port 53 and what came back.
type DNSQuery struct {
	PID     uint32   `json:"pid"`
	Server  string   `json:"server"` // ip:port
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Answers []string `json:"answers,omitempty"`
	// Unconfirmed marks an answer the step received that matches no
	// question it sent (message ID, question and the server it was sent
	// to): anything could have sent it. Its addresses are in
	// UnconfirmedAnswers, never in Answers. Every answer of a step that
	// sent on a raw or ICMP socket, opened an AF_PACKET socket or used
	// io_uring is unconfirmed: it could have forged its resolver's answer.
	Unconfirmed        bool     `json:"unconfirmed,omitempty"`
	UnconfirmedAnswers []string `json:"unconfirmedAnswers,omitempty"`
}

// Resources is what the step's processes used.
type Resources struct {
	WallNanos      int64  `json:"wallNanos"`
	CPUUserNanos   uint64 `json:"cpuUserNanos"`
	CPUSystemNanos uint64 `json:"cpuSystemNanos"`
	PeakRSSBytes   uint64 `json:"peakRSSBytes"` // largest single process
	ReadBytes      uint64 `json:"readBytes"`    // through read-like syscalls
	WriteBytes     uint64 `json:"writeBytes"`   // through write-like syscalls
	Processes      int    `json:"processes"`
}

// Change kinds in a Diff.
const (
	ChangeCreated  = "created"
	ChangeModified = "modified"
	ChangeDeleted  = "deleted"
)

// Diff is the step's net effect on the container's root file system, read
// from the overlay upper directory when the step ended.
type Diff struct {
	// Digest is "sha256:<hex>" over the normalised diff
	// (docs/diff-digest.md); a verifier recomputes it from the layer tar.
	Digest    string       `json:"digest"`
	Changes   []FileChange `json:"changes,omitempty"`
	Truncated bool         `json:"truncated,omitempty"` // Changes capped; Digest still covers all
	Error     string       `json:"error,omitempty"`     // why there is no digest
}

// FileChange is one path in the diff.
type FileChange struct {
	Change     string `json:"change"` // created, modified, deleted
	Path       string `json:"path"`
	Type       string `json:"type,omitempty"` // file, dir, symlink, char, block, fifo, socket
	Mode       uint32 `json:"mode,omitempty"` // permission bits incl. setuid/setgid/sticky
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	Size       int64  `json:"size,omitempty"`
	SHA256     string `json:"sha256,omitempty"`
	LinkTarget string `json:"linkTarget,omitempty"`
}

// Completeness says whether the tracer lost anything of this step.
type Completeness struct {
	Complete bool `json:"complete"`
	// FollowedFromStart is true when the step's cgroup was tracked before
	// its first exec.
	FollowedFromStart bool   `json:"followedFromStart"`
	EventsEmitted     uint64 `json:"eventsEmitted"`
	EventsDropped     uint64 `json:"eventsDropped"`   // ring buffer was full
	EventsTruncated   uint64 `json:"eventsTruncated"` // a path or argv was cut
	// Unobserved counts activity the hooks see only as a count, for
	// example io_uring submissions.
	Unobserved map[string]uint64 `json:"unobserved,omitempty"`
	Reasons    []string          `json:"reasons,omitempty"`
}

// MaxMaterials caps Step.Materials; MaxMaterialArgv caps Material.Argv.
const (
	MaxMaterials    = 10000
	MaxMaterialArgv = 16
)

// Material is a downloaded artifact: a regular file of the step's diff
// that a process created, opened for writing or truncated (or that a
// rename or link put at Path from a file it wrote), no earlier than it
// first reached Endpoint, which sent data (bytes received) or accepted a
// TCP connection. One per file, process and endpoint.
type Material struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256,omitempty"` // as in the diff
	Size   int64  `json:"size,omitempty"`
	// PID, Binary and Argv are the writing process, as it was when it
	// wrote (the image it had exec'd by then). Argv holds at most
	// MaxMaterialArgv arguments; ArgvTruncated says it or the process's
	// own argv was cut.
	PID           uint32           `json:"pid"`
	Binary        string           `json:"binary,omitempty"`
	Argv          []string         `json:"argv,omitempty"`
	ArgvTruncated bool             `json:"argvTruncated,omitempty"`
	Endpoint      MaterialEndpoint `json:"endpoint"`
	// URL is what the writer's argv says it fetched from Endpoint, when
	// exactly one http:// or https:// argument names Endpoint (its IP,
	// or a name the step's DNS answers gave for it, and its port). Not
	// from the traffic: the tracer does not read HTTP.
	URL *MaterialURL `json:"url,omitempty"`
}

// MaterialEndpoint is the remote endpoint a material came from.
type MaterialEndpoint struct {
	Protocol string `json:"protocol"` // tcp, udp
	IP       string `json:"ip"`
	Port     uint16 `json:"port"`
	Hostname string `json:"hostname,omitempty"` // confirmed DNS answer
}

// MaterialURL is a URL from the writing process's argv. User info, query
// and fragment are left out.
type MaterialURL struct {
	Scheme string `json:"scheme"` // http, https
	Host   string `json:"host"`   // as written, without the port
	Port   uint16 `json:"port"`   // as written, else the scheme's default
	Path   string `json:"path"`   // escaped; "/" when empty
	// Method is "GET" when the writer is wget or curl and its argv has no
	// option that sends data or sets the method; empty otherwise.
	Method string `json:"method,omitempty"`
}

// String is "scheme://host[:port]path": the URL without user info, query
// or fragment.
func (u MaterialURL) String() string {
	host := u.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	def := uint16(80)
	if u.Scheme == "https" {
		def = 443
	}
	if u.Port != 0 && u.Port != def {
		host += ":" + strconv.Itoa(int(u.Port))
	}
	return u.Scheme + "://" + host + u.Path
}
