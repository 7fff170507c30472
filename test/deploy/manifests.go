// Package deploy checks the Kubernetes manifests in deploy/kubernetes
// against what buildtraced and buildkitd need (docs/deploy.md): every YAML
// document decodes strictly into its Kubernetes type, the kustomization names
// exactly the files there are, and the tracer's and the builder's pods share
// the host namespaces and mounts the tracer relies on.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	bkconfig "github.com/moby/buildkit/cmd/buildkitd/config"
	"github.com/pelletier/go-toml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/buildtrace/buildtrace/tracer/daemon"
)

// What the manifests are expected to name.
const (
	TracerName     = "buildtraced"
	TracerImage    = "127.0.0.1:5000/buildtrace/tracer:dev"
	BuildkitdName  = "buildkitd"
	BuildkitdImage = "moby/buildkit:v0.34.2"
	healthPath     = "/v1/health"
)

// Kustomization is the part of kustomization.yaml these manifests use. It
// is decoded strictly: a field not listed here fails the test, so that a
// new kustomize feature is looked at before it is relied on.
type Kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// Object is one decoded YAML document.
type Object struct {
	File string // relative to the manifest directory
	Kind string // apiVersion/kind
	Name string
	Obj  any // *appsv1.DaemonSet, *corev1.ConfigMap, ...
}

// Set is a manifest directory, decoded.
type Set struct {
	Kustomization Kustomization
	Objects       []Object
}

// kinds maps apiVersion/kind to a constructor of its Go type. A kind not
// here is refused.
var kinds = map[string]func() any{
	"v1/Namespace":        func() any { return new(corev1.Namespace) },
	"v1/ServiceAccount":   func() any { return new(corev1.ServiceAccount) },
	"v1/Service":          func() any { return new(corev1.Service) },
	"v1/ConfigMap":        func() any { return new(corev1.ConfigMap) },
	"v1/Secret":           func() any { return new(corev1.Secret) },
	"apps/v1/DaemonSet":   func() any { return new(appsv1.DaemonSet) },
	"apps/v1/StatefulSet": func() any { return new(appsv1.StatefulSet) },
	"apps/v1/Deployment":  func() any { return new(appsv1.Deployment) },
}

// Load reads dir/kustomization.yaml and every resource it names. Every
// .yaml/.yml file under dir must be named; every name must exist.
func Load(dir string) (*Set, error) {
	s := &Set{}
	kdata, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	if err := decodeStrict(kdata, &s.Kustomization); err != nil {
		return nil, fmt.Errorf("kustomization.yaml: %w", err)
	}
	if s.Kustomization.APIVersion != "kustomize.config.k8s.io/v1beta1" || s.Kustomization.Kind != "Kustomization" {
		return nil, fmt.Errorf("kustomization.yaml: apiVersion/kind %s/%s", s.Kustomization.APIVersion, s.Kustomization.Kind)
	}
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel != "kustomization.yaml" {
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var errs []error
	listed := map[string]bool{}
	for _, r := range s.Kustomization.Resources {
		clean := path.Clean(r)
		if listed[clean] {
			errs = append(errs, fmt.Errorf("kustomization.yaml names %s twice", r))
		}
		listed[clean] = true
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(clean)))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("kustomization.yaml names %s: %w", r, err))
			continue
		case fi.IsDir():
			errs = append(errs, fmt.Errorf("kustomization.yaml names directory %s: only files are checked here", r))
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(clean)))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs, err := DecodeFile(clean, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.Objects = append(s.Objects, objs...)
	}
	for _, f := range files {
		if !listed[f] {
			errs = append(errs, fmt.Errorf("%s is not named in kustomization.yaml resources", f))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// DecodeFile decodes every document of a YAML file into its Kubernetes type.
func DecodeFile(name string, data []byte) ([]Object, error) {
	var out []Object
	for i, doc := range splitDocuments(data) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", name, i+1, err)
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
			continue // comments only
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", name, i+1, err)
		}
		kind := head.APIVersion + "/" + head.Kind
		mk, ok := kinds[kind]
		if !ok {
			return nil, fmt.Errorf("%s document %d: unknown kind %q", name, i+1, kind)
		}
		obj := mk()
		if err := decodeJSONStrict(js, obj); err != nil {
			return nil, fmt.Errorf("%s document %d (%s %s): %w", name, i+1, kind, head.Metadata.Name, err)
		}
		if head.Metadata.Name == "" {
			return nil, fmt.Errorf("%s document %d: %s without metadata.name", name, i+1, kind)
		}
		out = append(out, Object{File: name, Kind: kind, Name: head.Metadata.Name, Obj: obj})
	}
	return out, nil
}

// splitDocuments splits a YAML stream at "---" lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for line := range bytes.Lines(data) {
		if t := bytes.TrimRight(line, " \t\r\n"); bytes.Equal(t, []byte("---")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}

func decodeStrict(yml []byte, v any) error {
	js, err := yaml.YAMLToJSON(yml)
	if err != nil {
		return err
	}
	return decodeJSONStrict(js, v)
}

// decodeJSONStrict decodes as the API server does with strict field
// validation: field names are case-sensitive ("hostPid" is not hostPID),
// and unknown or duplicate fields are errors.
func decodeJSONStrict(js []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(js, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// Get returns the one object of type T named name.
func Get[T any](s *Set, name string) (*T, error) {
	var found []*T
	for _, o := range s.Objects {
		if v, ok := o.Obj.(*T); ok && o.Name == name {
			found = append(found, v)
		}
	}
	var zero T
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no %T named %q", zero, name)
	case 1:
		return found[0], nil
	default:
		return nil, fmt.Errorf("%d objects %T named %q", len(found), zero, name)
	}
}

// Replace returns a copy of s with the object of obj's type and name
// replaced by obj (for tests of the checks).
func (s *Set) Replace(name string, obj any) *Set {
	c := &Set{Kustomization: s.Kustomization, Objects: slices.Clone(s.Objects)}
	for i, o := range c.Objects {
		if o.Name == name && fmt.Sprintf("%T", o.Obj) == fmt.Sprintf("%T", obj) {
			c.Objects[i].Obj = obj
		}
	}
	return c
}

// Check returns every way in which the set fails what the tracer and the
// builder need, or nil.
func Check(s *Set) error {
	var errs []error
	if s.Kustomization.Namespace == "" {
		errs = append(errs, errors.New("kustomization.yaml: no namespace"))
	}
	state, err := CheckBuildkitd(s)
	if err != nil {
		errs = append(errs, err)
	}
	if err := CheckTracer(s, state); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckTracer checks the buildtraced DaemonSet. buildkitState is the host
// directory buildkitd keeps its state in ("" if unknown).
func CheckTracer(s *Set, buildkitState string) error {
	ds, err := Get[appsv1.DaemonSet](s, TracerName)
	if err != nil {
		return err
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("DaemonSet %s: "+format, append([]any{TracerName}, args...)...))
	}
	pod := &ds.Spec.Template.Spec
	if !pod.HostPID {
		fail("hostPID must be true: the tracer reads the frontend's and the steps' /proc entries by host PID")
	}
	if !pod.HostNetwork {
		fail("hostNetwork must be true: the frontend reaches the tracer on the node's loopback, and the tracer finds its socket in its own /proc/net/tcp")
	}
	if pod.NodeSelector["kubernetes.io/os"] != "linux" {
		fail("nodeSelector kubernetes.io/os must be linux")
	}
	if !slices.ContainsFunc(pod.Tolerations, func(t corev1.Toleration) bool {
		return t.Key == "" && t.Operator == corev1.TolerationOpExists && t.Effect == ""
	}) {
		fail("no toleration of every taint (operator: Exists): a node without its tracer runs unmonitored builds")
	}
	if err := checkServiceAccount(s, pod); err != nil {
		fail("%v", err)
	}
	c := container(pod, TracerName)
	if c == nil {
		fail("no container %q", TracerName)
		return errors.Join(errs...)
	}
	if err := checkImage(s, c.Image, TracerImage); err != nil {
		fail("%v", err)
	}
	if !privileged(c) {
		fail("container must be privileged (eBPF, other processes' /proc, overlay directories)")
	}
	if len(c.Command) != 0 {
		fail("command %q overrides the image's entrypoint (buildtraced)", c.Command)
	}
	cfg, _, err := daemon.ParseFlags("buildtraced", c.Args)
	if err != nil {
		fail("args %q: %v", c.Args, err)
		return errors.Join(errs...)
	}
	if cfg.AllowNonLoopback {
		fail("--allow-non-loopback: with hostNetwork the unauthenticated API would be on the node's addresses")
	}
	if err := daemon.CheckListen(cfg.Listen, false); err != nil {
		fail("%v", err)
	}
	_, listenPort, _ := net.SplitHostPort(cfg.Listen)

	// The signing key.
	if strings.Contains(cfg.Key, "://") {
		for _, v := range []string{"VAULT_ADDR", "VAULT_TOKEN"} {
			if env(c, v) == nil {
				fail("--key %s without %s in the environment", cfg.Key, v)
			}
		}
	} else {
		m, v := mountAt(pod, c, path.Dir(cfg.Key))
		switch {
		case m == nil:
			fail("--key %s: no volume is mounted at %s", cfg.Key, path.Dir(cfg.Key))
		case v == nil || v.Secret == nil:
			fail("--key %s: %s is not a Secret volume", cfg.Key, path.Dir(cfg.Key))
		case !m.ReadOnly:
			fail("--key %s: the key's volume must be mounted read-only", cfg.Key)
		case len(v.Secret.Items) > 0 && !slices.ContainsFunc(v.Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == path.Base(cfg.Key) }):
			fail("--key %s: Secret %s's items do not make a file %s", cfg.Key, v.Secret.SecretName, path.Base(cfg.Key))
		case v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o077 != 0:
			fail("--key %s: the Secret volume's defaultMode must be owner-only (kubelet's default is 0644)", cfg.Key)
		}
	}

	// Host directories.
	type want struct {
		what, mountPath, hostPath string
		readOnly                  bool
		propagation               corev1.MountPropagationMode
	}
	wants := []want{
		{"cgroup hierarchy", "/sys/fs/cgroup", "/sys/fs/cgroup", true, ""},
		{"kernel BTF", "/sys/kernel/btf", "/sys/kernel/btf", true, ""},
		{"BPF file system", "/sys/fs/bpf", "/sys/fs/bpf", false, ""},
		{"trace store (--state)", cfg.State, "", false, ""},
	}
	if buildkitState != "" {
		// The overlay options and bundle paths name buildkitd's paths:
		// the same path on the node and in both pods.
		wants = append(wants, want{"buildkitd's state", buildkitState, buildkitState, true, corev1.MountPropagationHostToContainer})
	}
	for _, w := range wants {
		m, v := mountAt(pod, c, w.mountPath)
		if m == nil {
			fail("%s: nothing is mounted at %s", w.what, w.mountPath)
			continue
		}
		if v == nil || v.HostPath == nil {
			fail("%s: %s is not a hostPath volume", w.what, w.mountPath)
			continue
		}
		if w.hostPath != "" && path.Clean(v.HostPath.Path) != w.hostPath {
			fail("%s: %s mounts host path %s, want %s", w.what, w.mountPath, v.HostPath.Path, w.hostPath)
		}
		if m.ReadOnly != w.readOnly {
			fail("%s: %s readOnly is %v, want %v", w.what, w.mountPath, m.ReadOnly, w.readOnly)
		}
		if w.propagation != "" && (m.MountPropagation == nil || *m.MountPropagation != w.propagation) {
			fail("%s: %s needs mountPropagation %s: buildkitd's container root mounts must appear in the tracer's mount table", w.what, w.mountPath, w.propagation)
		}
	}
	if cfg.CgroupRoot != "/sys/fs/cgroup" && !strings.HasPrefix(cfg.CgroupRoot, "/sys/fs/cgroup/") {
		fail("--cgroup-root %s is not under the mounted /sys/fs/cgroup", cfg.CgroupRoot)
	}

	// Probes: the listener is on the node's loopback.
	for name, p := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
		if p == nil {
			if name != "startupProbe" {
				fail("no %s", name)
			}
			continue
		}
		if err := checkTracerProbe(p, listenPort); err != nil {
			fail("%s: %v", name, err)
		}
	}
	if err := checkResources(c, true); err != nil {
		fail("%v", err)
	}
	return errors.Join(errs...)
}

// checkTracerProbe checks that a probe can reach a loopback-only listener
// of a host-network pod.
func checkTracerProbe(p *corev1.Probe, port string) error {
	switch {
	case p.HTTPGet != nil:
		h := p.HTTPGet
		if h.Path != healthPath {
			return fmt.Errorf("httpGet path %q, want %s", h.Path, healthPath)
		}
		if h.Port.String() != port {
			return fmt.Errorf("httpGet port %s, the tracer listens on %s", h.Port.String(), port)
		}
		if !loopback(h.Host) {
			return fmt.Errorf("httpGet host %q: without a loopback host the probe goes to the node IP, where the tracer does not listen", h.Host)
		}
	case p.TCPSocket != nil:
		if p.TCPSocket.Port.String() != port || !loopback(p.TCPSocket.Host) {
			return fmt.Errorf("tcpSocket %s:%s does not reach the tracer's loopback listener", p.TCPSocket.Host, p.TCPSocket.Port.String())
		}
	case p.Exec != nil:
		if len(p.Exec.Command) == 0 {
			return errors.New("exec probe without a command")
		}
	default:
		return errors.New("no httpGet, tcpSocket or exec action")
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// CheckBuildkitd checks the buildkitd StatefulSet, its Service and its
// configuration, and returns the host directory of its state.
func CheckBuildkitd(s *Set) (string, error) {
	sts, err := Get[appsv1.StatefulSet](s, BuildkitdName)
	if err != nil {
		return "", err
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("StatefulSet %s: "+format, append([]any{BuildkitdName}, args...)...))
	}
	pod := &sts.Spec.Template.Spec
	if !pod.HostNetwork {
		fail("hostNetwork must be true: build containers share buildkitd's network namespace and reach the tracer on the node's loopback")
	}
	if pod.HostPID {
		fail("hostPID must be false: buildkitd does not need the node's processes")
	}
	if pod.NodeSelector["kubernetes.io/os"] != "linux" {
		fail("nodeSelector kubernetes.io/os must be linux")
	}
	if err := checkServiceAccount(s, pod); err != nil {
		fail("%v", err)
	}
	c := container(pod, BuildkitdName)
	if c == nil {
		fail("no container %q", BuildkitdName)
		return "", errors.Join(errs...)
	}
	if err := checkImage(s, c.Image, BuildkitdImage); err != nil {
		fail("%v", err)
	}
	if !privileged(c) {
		fail("container must be privileged (runc worker, overlay mounts, the node's cgroup namespace)")
	}
	if len(c.Command) == 0 || path.Base(c.Command[0]) != "buildkitd" {
		fail("command %q: run buildkitd itself, not the image's entrypoint, which moves it into a new cgroup and mount namespace", c.Command)
	}
	if e := env(c, "BUILDKIT_SETUP_CGROUPV2_ROOT"); e == nil {
		fail("BUILDKIT_SETUP_CGROUPV2_ROOT is not set: the image sets it to 1")
	} else if b, err := strconv.ParseBool(e.Value); err != nil || b {
		fail("BUILDKIT_SETUP_CGROUPV2_ROOT=%q must be false", e.Value)
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		fail("liveness and readiness probes must be set")
	}
	if err := checkResources(c, false); err != nil {
		fail("%v", err)
	}

	// The Service for the gRPC port.
	if svc, err := Get[corev1.Service](s, sts.Spec.ServiceName); err != nil {
		fail("serviceName: %v", err)
	} else {
		for k, v := range svc.Spec.Selector {
			if sts.Spec.Template.Labels[k] != v {
				fail("Service %s selects %s=%s, which the pod does not carry", svc.Name, k, v)
			}
		}
		if len(svc.Spec.Selector) == 0 {
			fail("Service %s has no selector", svc.Name)
		}
		for _, p := range svc.Spec.Ports {
			if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
				return cp.ContainerPort == p.TargetPort.IntVal || (p.TargetPort.StrVal != "" && cp.Name == p.TargetPort.StrVal)
			}) {
				fail("Service %s port %d targets %s, which the container does not declare", svc.Name, p.Port, p.TargetPort.String())
			}
		}
	}

	// The configuration file.
	cfgPath := flagValue(c.Args, "config")
	if cfgPath == "" {
		fail("no --config")
		return "", errors.Join(errs...)
	}
	cfg, err := buildkitdConfig(s, pod, c, cfgPath)
	if err != nil {
		fail("%v", err)
		return "", errors.Join(errs...)
	}
	if err := CheckBuildkitdConfig(cfg); err != nil {
		fail("%v", err)
	}
	for _, a := range cfg.GRPC.Address {
		if !strings.HasPrefix(a, "tcp://") {
			continue
		}
		t := cfg.GRPC.TLS
		if t.Cert == "" || t.Key == "" || t.CA == "" {
			fail("grpc address %s without mutual TLS (cert, key and ca): with hostNetwork it is open on the node's addresses", a)
			continue
		}
		for _, f := range []string{t.Cert, t.Key, t.CA} {
			if m, v := mountAt(pod, c, path.Dir(f)); m == nil || v == nil || v.Secret == nil {
				fail("TLS file %s is not in a mounted Secret", f)
			}
		}
	}

	// The state directory: the same host path, propagated to the node.
	m, v := mountAt(pod, c, cfg.Root)
	switch {
	case m == nil:
		fail("nothing is mounted at the root %s", cfg.Root)
	case v == nil || v.HostPath == nil:
		fail("the root %s is not a hostPath volume: the tracer reads the executor's mounts and bundles there", cfg.Root)
	case path.Clean(v.HostPath.Path) != path.Clean(cfg.Root):
		fail("the root %s mounts host path %s: the overlay options name %s, which must be the same path on the node", cfg.Root, v.HostPath.Path, cfg.Root)
	case m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional:
		fail("the root %s needs mountPropagation Bidirectional: container root mounts must reach the node's mount namespace", cfg.Root)
	case m.ReadOnly:
		fail("the root %s is mounted read-only", cfg.Root)
	default:
		return path.Clean(v.HostPath.Path), errors.Join(errs...)
	}
	return "", errors.Join(errs...)
}

// CheckBuildkitdConfig checks what the tracer needs of buildkitd.toml.
func CheckBuildkitdConfig(cfg *bkconfig.Config) error {
	var errs []error
	oci := cfg.Workers.OCI
	if oci.Enabled != nil && !*oci.Enabled {
		errs = append(errs, errors.New("buildkitd.toml: worker.oci is disabled"))
	}
	if c := cfg.Workers.Containerd.Enabled; c != nil && *c {
		errs = append(errs, errors.New("buildkitd.toml: worker.containerd is enabled: its containers are not runc bundles under buildkitd's root"))
	}
	if oci.Snapshotter != "overlayfs" {
		errs = append(errs, fmt.Errorf("buildkitd.toml: worker.oci.snapshotter %q, want overlayfs (the tracer diffs overlay upper directories)", oci.Snapshotter))
	}
	if oci.NetworkConfig.Mode != "host" {
		errs = append(errs, fmt.Errorf("buildkitd.toml: worker.oci.networkMode %q, want host (the frontend reaches the tracer on loopback)", oci.NetworkConfig.Mode))
	}
	if oci.DefaultCgroupParent != "" {
		errs = append(errs, fmt.Errorf("buildkitd.toml: worker.oci.defaultCgroupParent %q: the tracer expects containers at /buildkit/<id> and /buildtrace/<step>/buildkit/<id>", oci.DefaultCgroupParent))
	}
	if cfg.Root == "" {
		errs = append(errs, errors.New("buildkitd.toml: no root"))
	}
	return errors.Join(errs...)
}

// buildkitdConfig reads the configuration file from the ConfigMap mounted
// at its directory, strictly (an unknown key fails, where buildkitd would
// ignore it).
func buildkitdConfig(s *Set, pod *corev1.PodSpec, c *corev1.Container, file string) (*bkconfig.Config, error) {
	m, v := mountAt(pod, c, path.Dir(file))
	if m == nil || v == nil || v.ConfigMap == nil {
		return nil, fmt.Errorf("--config %s: no ConfigMap is mounted at %s", file, path.Dir(file))
	}
	key := path.Base(file)
	for _, it := range v.ConfigMap.Items {
		if it.Path == key {
			key = it.Key
		}
	}
	cm, err := Get[corev1.ConfigMap](s, v.ConfigMap.Name)
	if err != nil {
		return nil, fmt.Errorf("--config %s: %w", file, err)
	}
	data, ok := cm.Data[key]
	if !ok {
		return nil, fmt.Errorf("--config %s: ConfigMap %s has no key %s", file, cm.Name, key)
	}
	return ParseBuildkitdConfig(data)
}

// ParseBuildkitdConfig decodes buildkitd.toml with buildkitd's own types.
func ParseBuildkitdConfig(data string) (*bkconfig.Config, error) {
	var cfg bkconfig.Config
	dec := toml.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		if se, ok := errors.AsType[*toml.StrictMissingError](err); ok {
			return nil, fmt.Errorf("buildkitd.toml: keys buildkitd does not know:\n%s", se.String())
		}
		return nil, fmt.Errorf("buildkitd.toml: %w", err)
	}
	return &cfg, nil
}

func container(pod *corev1.PodSpec, name string) *corev1.Container {
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	return nil
}

func privileged(c *corev1.Container) bool {
	return c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
}

func env(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// mountAt returns the container's mount at dir and its volume.
func mountAt(pod *corev1.PodSpec, c *corev1.Container, dir string) (*corev1.VolumeMount, *corev1.Volume) {
	dir = path.Clean(dir)
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if path.Clean(m.MountPath) != dir {
			continue
		}
		for j := range pod.Volumes {
			if pod.Volumes[j].Name == m.Name {
				return m, &pod.Volumes[j]
			}
		}
		return m, nil
	}
	return nil, nil
}

func checkServiceAccount(s *Set, pod *corev1.PodSpec) error {
	if pod.ServiceAccountName == "" {
		return errors.New("no serviceAccountName")
	}
	_, err := Get[corev1.ServiceAccount](s, pod.ServiceAccountName)
	return err
}

// checkImage checks the image and that kustomization.yaml's images can
// override it.
func checkImage(s *Set, image, want string) error {
	if image != want {
		return fmt.Errorf("image %q, want %q", image, want)
	}
	repo := image
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		repo = image[:i]
	}
	for _, im := range s.Kustomization.Images {
		if im.Name == repo {
			return nil
		}
	}
	return fmt.Errorf("kustomization.yaml images has no entry for %s", repo)
}

func checkResources(c *corev1.Container, memoryLimit bool) error {
	var errs []error
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
			errs = append(errs, fmt.Errorf("no %s request", r))
		}
	}
	if memoryLimit {
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
			errs = append(errs, errors.New("no memory limit"))
		}
	}
	return errors.Join(errs...)
}

// flagValue returns the value of --name=V or --name V.
func flagValue(args []string, name string) string {
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
