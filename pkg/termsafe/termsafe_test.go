package termsafe

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"plain /usr/bin/ls -la", "plain /usr/bin/ls -la"},
		{"héllo wörld — 日本語 🙂", "héllo wörld — 日本語 🙂"},
		{`C:\path\x1b`, `C:\path\x1b`},
		{"a\x1b[2K\x1b[1A PASS", `a\x1b[2K\x1b[1A PASS`},
		{"a\nb\rc\td", `a\nb\rc\td`},
		{"\x00\x07\x08\x1f\x7f", `\x00\x07\x08\x1f\x7f`},
		{"\x1b]0;title\x07", `\x1b]0;title\x07`},
		{"csi\u009b2J nel\u0085", `csi\u009b2J nel\u0085`},
		{"bad \xff\xfe utf8 \xc3", `bad \xff\xfe utf8 \xc3`},
		{"evil\u202egnp.exe", `evil\u202egnp.exe`},
		{"\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c", `\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c`},
		{"\u00a0nbsp and \u00ff", "\u00a0nbsp and \u00ff"}, // just past C1: printable
		{"\uFFFD stays", "\uFFFD stays"},                   // a real U+FFFD is valid UTF-8
	} {
		if got := String(c.in); got != c.want {
			t.Errorf("String(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestStrings(t *testing.T) {
	if Strings(nil) != nil {
		t.Error("Strings(nil) is not nil")
	}
	got := Strings([]string{"sh", "-c", "printf '\x1b]0;x\x07'"})
	if want := []string{"sh", "-c", `printf '\x1b]0;x\x07'`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Strings = %q, want %q", got, want)
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "ok", "a\x1b[2Kb\rc", "\xff\u009b\u202e\u2066", "\x1b]0;t\x07", "日本\xe6\x97"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		if !utf8.ValidString(out) {
			t.Fatalf("String(%q) = %q: not valid UTF-8", s, out)
		}
		for i := 0; i < len(out); i++ {
			if out[i] < 0x20 || out[i] == 0x7f {
				t.Fatalf("String(%q) = %q: byte %#x", s, out, out[i])
			}
		}
		for _, r := range out {
			if 0x80 <= r && r <= 0x9f || unicode.Is(unicode.Bidi_Control, r) {
				t.Fatalf("String(%q) = %q: rune %U", s, out, r)
			}
		}
		if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return needsEscape(r, utf8.RuneLen(r)) }) && out != s {
			t.Fatalf("String(%q) = %q: safe text changed", s, out)
		}
	})
}
