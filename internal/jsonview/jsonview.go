// Package jsonview indents JSON for people to read (the dashboard's job page, `enqueue dlq
// show`) within bounds: json.Indent's output grows with the square of the nesting (an 8 KB
// payload of nested arrays became a 16 MB page), so nesting past a depth is shown compact, and
// the text stops at a size with a note of what was left out.
package jsonview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// The bounds of what Indent writes.
const (
	// MaxDepth is the nesting indented; deeper values are written compact.
	MaxDepth = 16
	// MaxBytes bounds the text written, before the note of what was cut.
	MaxBytes = 256 << 10
)

// Indent writes raw indented, each line after the first starting with prefix, one indent per
// level up to MaxDepth, and at most MaxBytes of it. Text that is not JSON is returned as it
// is, cut at MaxBytes.
func Indent(raw []byte, prefix, indent string) string {
	if !json.Valid(raw) {
		return cut(string(raw), len(raw))
	}
	var b strings.Builder
	depth, inString, escaped := 0, false, false
	newline := func(d int) {
		b.WriteByte('\n')
		b.WriteString(prefix)
		b.WriteString(strings.Repeat(indent, d))
	}
	for i := 0; i < len(raw); i++ {
		if b.Len() > MaxBytes {
			return cut(b.String(), len(raw)-i+b.Len())
		}
		c := raw[i]
		if inString {
			b.WriteByte(c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			inString = true
			b.WriteByte(c)
		case '{', '[':
			b.WriteByte(c)
			depth++
			if next := nextSignificant(raw, i+1); next == '}' || next == ']' {
				continue // an empty object or array stays on its line
			}
			if depth <= MaxDepth {
				newline(depth)
			}
		case '}', ']':
			if prev := lastSignificant(raw, i); prev != '{' && prev != '[' && depth <= MaxDepth {
				newline(depth - 1)
			}
			depth--
			b.WriteByte(c)
		case ',':
			b.WriteByte(c)
			if depth <= MaxDepth {
				newline(depth)
			}
		case ':':
			b.WriteByte(c)
			if depth <= MaxDepth {
				b.WriteByte(' ')
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// cut returns s within MaxBytes, with a note of how much of the total was left out.
func cut(s string, total int) string {
	if len(s) <= MaxBytes {
		return s
	}
	return fmt.Sprintf("%s\n… (%d of %d bytes not shown)", s[:MaxBytes], total-MaxBytes, total)
}

func nextSignificant(raw []byte, i int) byte {
	for ; i < len(raw); i++ {
		if c := raw[i]; !bytes.ContainsRune([]byte(" \t\r\n"), rune(c)) {
			return c
		}
	}
	return 0
}

func lastSignificant(raw []byte, i int) byte {
	for i--; i >= 0; i-- {
		if c := raw[i]; !bytes.ContainsRune([]byte(" \t\r\n"), rune(c)) {
			return c
		}
	}
	return 0
}

// sensitiveHeader reports whether a header's value is a credential: Authorization, Cookie and
// the like, and any name that says key, token, secret or password.
func sensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return true
	}
	for _, w := range []string{"key", "token", "secret", "password", "passwd", "auth", "session", "signature"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// RedactHeaders returns raw with the values of its credential headers replaced by "xxxxx",
// when raw is an object with a "headers" object (an http kind's payload); anything else is
// returned as it is.
func RedactHeaders(raw []byte) []byte {
	var doc map[string]json.RawMessage
	if json.Unmarshal(raw, &doc) != nil || doc["headers"] == nil {
		return raw
	}
	var headers map[string]json.RawMessage
	if json.Unmarshal(doc["headers"], &headers) != nil {
		return raw
	}
	changed := false
	for name := range headers {
		if sensitiveHeader(name) {
			headers[name] = json.RawMessage(`"xxxxx"`)
			changed = true
		}
	}
	if !changed {
		return raw
	}
	h, err := json.Marshal(headers)
	if err != nil {
		return raw
	}
	doc["headers"] = h
	out, err := json.Marshal(doc)
	if err != nil {
		return raw
	}
	return out
}
