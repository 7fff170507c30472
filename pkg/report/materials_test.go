package report

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// materialTrace is testTrace whose run downloaded n files, the first by
// wget with a URL from its argv, the others without one.
func materialTrace(t *testing.T, n int) []Trace {
	ts := testTrace(t)
	run := &ts[0].Build.Steps[0]
	for i := range n {
		m := trace.Material{Path: fmt.Sprintf("/app/f%02d", i), SHA256: strings.Repeat("ab", 32), Size: 2048, PID: 11, Binary: "/bin/busybox",
			Argv: []string{"wget", "-O", "/app/x", "http://127.0.0.1:5000/v2/"}, Endpoint: trace.MaterialEndpoint{Protocol: "tcp", IP: "127.0.0.1", Port: 5000, Hostname: "registry.test"}}
		if i == 0 {
			m.Path = "/app/registry.json"
			m.URL = &trace.MaterialURL{Scheme: "http", Host: "127.0.0.1", Port: 5000, Path: "/v2/", Method: "GET"}
		}
		run.Materials = append(run.Materials, m)
	}
	return ts
}

func TestTextMaterials(t *testing.T) {
	var buf bytes.Buffer
	if err := Text(&buf, materialTrace(t, TopMaterials+2)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	want := "  downloaded (7 files):\n    /app/registry.json (sha256 abababababab, 2.0 KiB) from 127.0.0.1:5000 (registry.test) by /bin/busybox (wget) pid 11 — GET http://127.0.0.1:5000/v2/\n" +
		"    /app/f01 (sha256 abababababab, 2.0 KiB) from 127.0.0.1:5000 (registry.test) by /bin/busybox (wget) pid 11\n"
	if !strings.Contains(out, want) {
		t.Errorf("missing %q in:\n%s", want, out)
	}
	if !strings.Contains(out, "    … and 2 more (--full lists all)\n  files:") || strings.Contains(out, "/app/f06") {
		t.Errorf("the summary does not cap the downloaded files at %d:\n%s", TopMaterials, out)
	}
	buf.Reset()
	if err := TextWith(&buf, materialTrace(t, TopMaterials+2), Options{Full: true}); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "/app/f06 (sha256") || strings.Contains(out, "more (--full") {
		t.Errorf("--full does not list every downloaded file:\n%s", out)
	}
	// A run without materials has no section.
	buf.Reset()
	if err := Text(&buf, testTrace(t)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "downloaded") {
		t.Errorf("a run without materials has a downloaded section:\n%s", buf.String())
	}
}

func TestMarkdownAndHTMLMaterials(t *testing.T) {
	ts := materialTrace(t, 1)
	ts[0].Build.Steps[0].MaterialsTruncated = true
	var buf bytes.Buffer
	if err := Markdown(&buf, ts, Options{}); err != nil {
		t.Fatal(err)
	}
	want := "**Downloaded** (1 file, list capped by the tracer)\n\n| file | sha256 | size | from | by | URL (from the command line) |\n|---|---|---:|---|---|---|\n" +
		"| /app/registry.json | abababababab | 2.0 KiB | 127.0.0.1:5000 \\(registry.test\\) | /bin/busybox \\(wget\\) pid 11 | GET http\\://127.0.0.1:5000/v2/ |\n"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("markdown lacks %q:\n%s", want, buf.String())
	}
	buf.Reset()
	if err := HTML(&buf, ts); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<h4>Downloaded (1 file, list capped by the tracer)</h4>", "<td class=\"mono\">/app/registry.json</td>", "GET http://127.0.0.1:5000/v2/", "127.0.0.1:5000 (registry.test)"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
}

// TestMaterialsEscaped: a material's path, argv and hostname carry
// control characters; no view prints them.
func TestMaterialsEscaped(t *testing.T) {
	ts := materialTrace(t, 1)
	m := &ts[0].Build.Steps[0].Materials[0]
	m.Path = "/app/a\x1b[2Kb\rc"
	m.Argv[0] = "\x1b]0;title\x07"
	m.Endpoint.Hostname = "evil\u202etxt.exe"
	m.URL.Path = "/\u009b2J"
	for name, render := range map[string]func(*bytes.Buffer) error{
		"text":     func(b *bytes.Buffer) error { return TextWith(b, ts, Options{Full: true}) },
		"markdown": func(b *bytes.Buffer) error { return Markdown(b, ts, Options{Full: true}) },
		"html":     func(b *bytes.Buffer) error { return HTML(b, ts) },
	} {
		var buf bytes.Buffer
		if err := render(&buf); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"\x1b", "\r", "\x07", "\u202e", "\u009b"} {
			if strings.Contains(buf.String(), bad) {
				t.Errorf("%s output contains %q", name, bad)
			}
		}
		want := `2Kb\rc`
		if name == "markdown" {
			want = `2Kb\\rc`
		}
		if !strings.Contains(buf.String(), want) {
			t.Errorf("%s output lacks the escaped path", name)
		}
	}
}
