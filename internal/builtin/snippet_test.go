package builtin

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// A refused response's body goes into the attempt's error, which the ledger stores as text:
// the snippet is cut on a character boundary and is valid UTF-8 without NUL (design rule 28).
func TestSnippet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, want string
	}{
		{"short", "not found", "not found"},
		{"one line", "a\n  b\r\n\tc ", "a b c"},
		{"exactly 200", strings.Repeat("x", 200), strings.Repeat("x", 200)},
		{"cut at 200", strings.Repeat("x", 250), strings.Repeat("x", 200) + "…"},
		// "é" is two bytes; at 199 the byte limit falls inside it.
		{"cut inside a character", strings.Repeat("x", 199) + "éé", strings.Repeat("x", 199) + "…"},
		{"cut inside a 4-byte character", strings.Repeat("x", 198) + "😀", strings.Repeat("x", 198) + "…"},
		{"NUL", "bad\x00request", "bad\uFFFDrequest"},
		{"not UTF-8", "bad \xff\xfe body", "bad \uFFFD\uFFFD body"},
		{"binary cut", strings.Repeat("\xff", 300), strings.Repeat("\uFFFD", 66) + "…"},
	} {
		got := snippet([]byte(tc.body))
		require.Equal(t, tc.want, got, tc.name)
		require.True(t, utf8.ValidString(got), tc.name)
		require.NotContains(t, got, "\x00", tc.name)
		require.LessOrEqual(t, len(got), 200+len("…"), tc.name)
	}
}

// A 2xx body becomes the job's result, stored as jsonb: whatever the body, the result is valid
// UTF-8 JSON without a \u0000 escape (design rule 28).
func TestResultBodyIsStorable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		truncated  bool
		want       string
	}{
		{"JSON", ` {"ok":true} `, false, `{"ok":true}`},
		{"text", "hello", false, `"hello"`},
		{"binary with NUL", "\x89PNG\x00\x00\xff", false, `"` + "\uFFFDPNG\uFFFD\uFFFD\uFFFD" + `"`},
		{"JSON with a NUL escape", `{"body":"a\u0000b"}`, false, `{"body":"a` + "\uFFFD" + `b"}`},
		{"JSON with a lone surrogate", `["\udc00"]`, false, `["` + "\uFFFD" + `"]`},
		{"JSON not UTF-8", "{\"a\":\"\xff\"}", false, `{"a":"` + "\uFFFD" + `"}`},
		{"truncated", `{"a":"b`, true, `"{\"a\":\"b"`},
	} {
		got := resultBody([]byte(tc.body), tc.truncated)
		require.Equal(t, tc.want, string(got), tc.name)
		require.True(t, utf8.Valid(got) && json.Valid(got), tc.name)
		require.NotContains(t, string(got), `\u0000`, tc.name)
	}
}
