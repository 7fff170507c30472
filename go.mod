module github.com/buildtrace/buildtrace

go 1.26.8

require github.com/secure-systems-lab/go-securesystemslib v0.11.1

require (
	cel.dev/cel-go v0.33.2 // indirect
	github.com/cilium/ebpf v0.22.0 // indirect
	github.com/containerd/containerd/v2 v2.4.2 // indirect
	github.com/moby/buildkit v0.34.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	github.com/sigstore/sigstore v1.10.11 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	go.yaml.in/yaml/v2 v2.4.4 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/sync v0.23.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	sigs.k8s.io/yaml v1.6.0 // indirect
)

tool github.com/cilium/ebpf/cmd/bpf2go
