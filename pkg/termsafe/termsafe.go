// Package termsafe makes untrusted text safe to print on a terminal: file
// names, argv and error strings from an attestation must not move the
// cursor, erase lines, set the window title or reorder what is shown.
package termsafe

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String returns s with every C0 control (U+0000–U+001F, including \n, \r,
// \t and ESC), DEL, C1 control (U+0080–U+009F), bidirectional control
// (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C) and invalid UTF-8
// byte replaced by a visible escape: \n, \r, \t, \x1b, \x7f, \u009b,
// \u202e, \xff. Printable text, backslashes included, is left as it is.
func String(s string) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if needsEscape(r, size) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case needsEscape(r, size):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Strings returns String of each element of ss (nil for nil), for an argv.
func Strings(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = String(s)
	}
	return out
}

func needsEscape(r rune, size int) bool {
	return r == utf8.RuneError && size == 1 ||
		r < 0x20 || 0x7f <= r && r <= 0x9f ||
		unicode.Is(unicode.Bidi_Control, r)
}
