package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const manifestDir = "../../deploy/kubernetes"

func load(t *testing.T) *Set {
	t.Helper()
	s, err := Load(manifestDir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestManifests is the check itself: the manifests in deploy/kubernetes
// decode strictly and give the tracer what it needs.
func TestManifests(t *testing.T) {
	s := load(t)
	if err := Check(s); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range s.Objects {
		kinds[o.Kind]++
	}
	for _, k := range []string{"v1/Namespace", "v1/ServiceAccount", "v1/ConfigMap", "v1/Service", "apps/v1/DaemonSet", "apps/v1/StatefulSet"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in the manifests", k)
		}
	}
}

// The parts the checks look at, fetched from a fresh copy of the manifests.
func tracer(t *testing.T) (*Set, *appsv1.DaemonSet, *corev1.Container) {
	s := load(t)
	ds, err := Get[appsv1.DaemonSet](s, TracerName)
	if err != nil {
		t.Fatal(err)
	}
	ds = ds.DeepCopy()
	return s, ds, container(&ds.Spec.Template.Spec, TracerName)
}

func builder(t *testing.T) (*Set, *appsv1.StatefulSet, *corev1.Container) {
	s := load(t)
	sts, err := Get[appsv1.StatefulSet](s, BuildkitdName)
	if err != nil {
		t.Fatal(err)
	}
	sts = sts.DeepCopy()
	return s, sts, container(&sts.Spec.Template.Spec, BuildkitdName)
}

func mount(t *testing.T, c *corev1.Container, path string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == path {
			return &c.VolumeMounts[i]
		}
	}
	t.Fatalf("no mount at %s", path)
	return nil
}

// TestCheckRefuses mutates one thing at a time and expects Check to name it.
func TestCheckRefuses(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T) *Set
		want   string
	}{
		{"tracer without hostPID", func(t *testing.T) *Set {
			s, ds, _ := tracer(t)
			ds.Spec.Template.Spec.HostPID = false
			return s.Replace(TracerName, ds)
		}, "hostPID must be true"},
		{"tracer without hostNetwork", func(t *testing.T) *Set {
			s, ds, _ := tracer(t)
			ds.Spec.Template.Spec.HostNetwork = false
			return s.Replace(TracerName, ds)
		}, "hostNetwork must be true"},
		{"tracer not privileged", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			c.SecurityContext.Privileged = nil
			return s.Replace(TracerName, ds)
		}, "must be privileged"},
		{"tracer without tolerations", func(t *testing.T) *Set {
			s, ds, _ := tracer(t)
			ds.Spec.Template.Spec.Tolerations = nil
			return s.Replace(TracerName, ds)
		}, "toleration"},
		{"--key elsewhere than the Secret", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			for i, a := range c.Args {
				if strings.HasPrefix(a, "--key=") {
					c.Args[i] = "--key=/etc/buildtrace/tracer.key"
				}
			}
			return s.Replace(TracerName, ds)
		}, "no volume is mounted at /etc/buildtrace"},
		{"key readable by all", func(t *testing.T) *Set {
			s, ds, _ := tracer(t)
			for _, v := range ds.Spec.Template.Spec.Volumes {
				if v.Secret != nil {
					v.Secret.DefaultMode = nil
				}
			}
			return s.Replace(TracerName, ds)
		}, "defaultMode must be owner-only"},
		{"KMS key without Vault environment", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			for i, a := range c.Args {
				if strings.HasPrefix(a, "--key=") {
					c.Args[i] = "--key=hashivault://buildtrace"
				}
			}
			return s.Replace(TracerName, ds)
		}, "without VAULT_ADDR"},
		{"unknown tracer flag", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			c.Args = append(c.Args, "--no-such-flag")
			return s.Replace(TracerName, ds)
		}, "no-such-flag"},
		{"listen on all addresses", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			c.Args = append(c.Args, "--listen=0.0.0.0:7390", "--allow-non-loopback")
			return s.Replace(TracerName, ds)
		}, "--allow-non-loopback"},
		{"cgroup mount writable", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			mount(t, c, "/sys/fs/cgroup").ReadOnly = false
			return s.Replace(TracerName, ds)
		}, "/sys/fs/cgroup readOnly is false"},
		{"no BTF mount", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			mount(t, c, "/sys/kernel/btf").MountPath = "/btf"
			return s.Replace(TracerName, ds)
		}, "kernel BTF: nothing is mounted"},
		{"buildkit state without propagation", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			mount(t, c, "/var/lib/buildkit").MountPropagation = nil
			return s.Replace(TracerName, ds)
		}, "needs mountPropagation HostToContainer"},
		{"tracer probe to the pod IP", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			c.LivenessProbe.HTTPGet.Host = ""
			return s.Replace(TracerName, ds)
		}, "where the tracer does not listen"},
		{"tracer probe on another port", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			c.ReadinessProbe.HTTPGet.Port = intstr.FromInt32(8080)
			return s.Replace(TracerName, ds)
		}, "the tracer listens on 7390"},
		{"no readiness probe", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			c.ReadinessProbe = nil
			return s.Replace(TracerName, ds)
		}, "no readinessProbe"},
		{"no memory request", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			delete(c.Resources.Requests, corev1.ResourceMemory)
			return s.Replace(TracerName, ds)
		}, "no memory request"},
		{"another tracer image", func(t *testing.T) *Set {
			s, ds, c := tracer(t)
			c.Image = "buildtrace/tracer:latest"
			return s.Replace(TracerName, ds)
		}, "want \"127.0.0.1:5000/buildtrace/tracer:dev\""},
		{"builder not privileged", func(t *testing.T) *Set {
			s, sts, c := builder(t)
			c.SecurityContext.Privileged = nil
			return s.Replace(BuildkitdName, sts)
		}, "must be privileged"},
		{"builder state without Bidirectional", func(t *testing.T) *Set {
			s, sts, c := builder(t)
			hc := corev1.MountPropagationHostToContainer
			mount(t, c, "/var/lib/buildkit").MountPropagation = &hc
			return s.Replace(BuildkitdName, sts)
		}, "needs mountPropagation Bidirectional"},
		{"builder state on another host path", func(t *testing.T) *Set {
			s, sts, _ := builder(t)
			for _, v := range sts.Spec.Template.Spec.Volumes {
				if v.HostPath != nil {
					v.HostPath.Path = "/srv/buildkit"
				}
			}
			return s.Replace(BuildkitdName, sts)
		}, "mounts host path /srv/buildkit"},
		{"builder through the image entrypoint", func(t *testing.T) *Set {
			s, sts, c := builder(t)
			c.Command = nil
			return s.Replace(BuildkitdName, sts)
		}, "not the image's entrypoint"},
		{"builder without hostNetwork", func(t *testing.T) *Set {
			s, sts, _ := builder(t)
			sts.Spec.Template.Spec.HostNetwork = false
			return s.Replace(BuildkitdName, sts)
		}, "hostNetwork must be true"},
		{"builder resources", func(t *testing.T) *Set {
			s, sts, c := builder(t)
			c.Resources.Requests[corev1.ResourceCPU] = resource.Quantity{}
			return s.Replace(BuildkitdName, sts)
		}, "no cpu request"},
		{"bridge network in buildkitd.toml", func(t *testing.T) *Set {
			s := load(t)
			cm, err := Get[corev1.ConfigMap](s, "buildkitd-config")
			if err != nil {
				t.Fatal(err)
			}
			cm = cm.DeepCopy()
			cm.Data["buildkitd.toml"] = strings.Replace(cm.Data["buildkitd.toml"], `networkMode = "host"`, `networkMode = "cni"`, 1)
			return s.Replace(cm.Name, cm)
		}, `networkMode "cni", want host`},
		{"TCP without TLS in buildkitd.toml", func(t *testing.T) *Set {
			s := load(t)
			cm, err := Get[corev1.ConfigMap](s, "buildkitd-config")
			if err != nil {
				t.Fatal(err)
			}
			cm = cm.DeepCopy()
			cm.Data["buildkitd.toml"] = strings.Replace(cm.Data["buildkitd.toml"], `ca = "/etc/buildkit-tls/ca.crt"`, ``, 1)
			return s.Replace(cm.Name, cm)
		}, "without mutual TLS"},
		{"unknown key in buildkitd.toml", func(t *testing.T) *Set {
			s := load(t)
			cm, err := Get[corev1.ConfigMap](s, "buildkitd-config")
			if err != nil {
				t.Fatal(err)
			}
			cm = cm.DeepCopy()
			cm.Data["buildkitd.toml"] = strings.Replace(cm.Data["buildkitd.toml"], `networkMode = "host"`, `netMode = "host"`, 1)
			return s.Replace(cm.Name, cm)
		}, "netMode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.mutate(t))
			if err == nil {
				t.Fatal("Check accepted it")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error does not say %q:\n%v", tt.want, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestDecodeStrict: a misspelt field, an unknown kind and a document
// without a name are refused.
func TestDecodeStrict(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      hostPid: true\n",
		"unknown kind":  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n",
		"no name":       "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
		"wrong type":    "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      hostPID: \"yes\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeFile("x.yaml", []byte("# first\n---\n"+doc)); err == nil {
				t.Fatal("decoded")
			}
		})
	}
	objs, err := DecodeFile("x.yaml", []byte("# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: b\n"))
	if err != nil || len(objs) != 2 || objs[1].Name != "b" {
		t.Fatalf("got %v, %v", objs, err)
	}
}

// TestKustomizationLists: a YAML file the kustomization does not name, and
// a name without a file, are refused.
func TestKustomizationLists(t *testing.T) {
	copyDir := func(t *testing.T) string {
		dir := t.TempDir()
		ents, err := os.ReadDir(manifestDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			data, err := os.ReadFile(filepath.Join(manifestDir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	t.Run("unnamed file", func(t *testing.T) {
		dir := copyDir(t)
		if err := os.WriteFile(filepath.Join(dir, "extra.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "extra.yaml is not named") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		dir := copyDir(t)
		if err := os.Remove(filepath.Join(dir, "buildkitd-service.yaml")); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "buildkitd-service.yaml") {
			t.Fatalf("got %v", err)
		}
	})
}

// TestKustomizeBuild renders the kustomization with kubectl's kustomize,
// when kubectl is installed, and checks what would be applied.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	s := load(t)
	out, err := exec.Command(kubectl, "kustomize", manifestDir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	objs, err := DecodeFile("kustomize output", out)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(s.Objects) {
		t.Fatalf("kustomize rendered %d objects, the files hold %d", len(objs), len(s.Objects))
	}
	rendered := &Set{Kustomization: s.Kustomization, Objects: objs}
	if err := Check(rendered); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		m, ok := o.Obj.(interface {
			GetNamespace() string
			GetLabels() map[string]string
		})
		if !ok {
			t.Fatalf("%s %s has no object metadata", o.Kind, o.Name)
		}
		if o.Kind != "v1/Namespace" && m.GetNamespace() != s.Kustomization.Namespace {
			t.Errorf("%s %s is in namespace %q, want %q", o.Kind, o.Name, m.GetNamespace(), s.Kustomization.Namespace)
		}
		if m.GetLabels()["app.kubernetes.io/part-of"] != "buildtrace" {
			t.Errorf("%s %s lacks the part-of label", o.Kind, o.Name)
		}
	}
}
