package idempotency

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/levee-dev/levee/internal/queue"
)

// This file is the ledger's boundary (design rule 28): nothing a worker hands the ledger can
// make a statement fail, and so fail the other rows of its batch. Postgres refuses text that
// is not valid UTF-8 or holds a NUL byte, and jsonb refuses a \u0000 escape and a lone
// surrogate escape, so every text argument of every statement passes StorableText and every
// result passes StorableJSON on its way in. Names that find rows (kinds, keys, job ids) are
// never rewritten into another name that could find another row: a request whose name cannot
// be stored is answered without the statement (Claim's Invalid, Finish's and Heartbeat's
// "not applied"), and a lookup by such a name finds nothing.

// replacement stands for each byte of text that cannot be stored.
const replacement = "\uFFFD"

// storable reports whether Postgres stores s as text as it is: valid UTF-8 without NUL.
func storable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 {
			return false
		}
		if c >= utf8.RuneSelf {
			// Not ASCII: the rest needs the full check.
			return utf8.ValidString(s[i:]) && strings.IndexByte(s[i:], 0) < 0
		}
	}
	return true
}

// StorableText returns s as the ledger stores text (design rule 28): valid UTF-8 without NUL,
// each invalid byte and each NUL replaced by U+FFFD. A storable s is returned as it is, with
// no allocation.
func StorableText(s string) string {
	if storable(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		c := s[i]
		if c == 0 {
			b.WriteString(replacement)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b.WriteByte(c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString(replacement)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// storableText is StorableText cut to at most n bytes on a character boundary (Truncate).
func storableText(s string, n int) string { return Truncate(StorableText(s), n) }

// storableName reports whether s can name a row as it is: storable text of 1 to n bytes.
func storableName(s string, n int) bool { return s != "" && len(s) <= n && storable(s) }

// storableID returns the job id the ledger stores for id: id itself when it is storable,
// else its stand-in queue.BoundedID(id) ("malformed-" and a hash), the same wherever the
// ledger meets that id, so a job recorded under its stand-in is found again under it.
func storableID(id string) string {
	if storableName(id, queue.MaxIDLen) {
		return id
	}
	return queue.BoundedID(id)
}

// storableKey returns the key the ledger stores for a record whose key cannot be stored as
// it is: storable text cut to queue.MaxKeyLen bytes.
func storableKey(key string) string { return storableText(key, queue.MaxKeyLen) }

// storableKind is kind as the ledger stores it in a record (see AddRecords).
func storableKind(kind string) string {
	if storableName(kind, queue.MaxKeyLen) {
		return kind
	}
	return storableKey(kind)
}

// invalidClaim says why the ledger cannot store the claim req, or "" when it can: its kind,
// key and job id (and the job it falls back from) must be storable text within queue.MaxKeyLen
// and queue.MaxIDLen bytes, and its payload hash present.
func invalidClaim(req ClaimRequest) string {
	switch {
	case !storableName(req.Kind, queue.MaxKeyLen):
		return fmt.Sprintf("the kind is not 1 to %d bytes of valid UTF-8 without NUL", queue.MaxKeyLen)
	case !storableName(req.Key, queue.MaxKeyLen):
		return fmt.Sprintf("the key is not 1 to %d bytes of valid UTF-8 without NUL", queue.MaxKeyLen)
	case !storableName(req.JobID, queue.MaxIDLen):
		return fmt.Sprintf("the job id is not 1 to %d bytes of valid UTF-8 without NUL", queue.MaxIDLen)
	case req.FallbackOf != "" && !storableName(req.FallbackOf, queue.MaxIDLen):
		return fmt.Sprintf("the id of the job it falls back from is not 1 to %d bytes of valid UTF-8 without NUL", queue.MaxIDLen)
	case len(req.PayloadHash) == 0:
		return "no payload hash"
	}
	return ""
}

// texts holds the nullable text arguments of one statement, made storable, in one
// allocation: a batch of 64 outcomes costs one slice, not a string header per field.
type texts struct{ buf []string }

func newTexts(n int) *texts { return &texts{buf: make([]string, 0, n)} }

// add keeps s and returns a pointer to it (SQL NULL for nil). A full buffer grows; pointers
// already handed out keep pointing at their strings.
func (t *texts) add(s string) *string {
	t.buf = append(t.buf, s)
	return &t.buf[len(t.buf)-1]
}

// text is StorableText of s, or nil (SQL NULL) when s is empty.
func (t *texts) text(s string) *string {
	if s == "" {
		return nil
	}
	return t.add(StorableText(s))
}

// StorableJSON returns b as the ledger stores a job's result in jsonb (design rule 28). The
// fast path returns b itself when it is valid UTF-8 and valid JSON with no escape jsonb
// refuses (\u0000, a lone surrogate). Otherwise JSON is decoded (numbers kept as written) and
// encoded again with its strings made storable: \u0000 and invalid bytes become U+FFFD, and
// the decoder already maps lone surrogates to U+FFFD. Anything that is not JSON at all is
// stored as a JSON string of its text, made storable.
func StorableJSON(b []byte) []byte {
	if storableJSONAsIs(b) {
		return b
	}
	return reencodeJSON(b)
}

// storableResult is StorableJSON as the string the finish statement sends.
func storableResult(b []byte) string {
	if storableJSONAsIs(b) {
		return string(b)
	}
	return string(reencodeJSON(b))
}

// storableJSONAsIs is StorableJSON's fast path: one pass for UTF-8, a search for escapes, and
// the JSON scanner, with no allocation.
func storableJSONAsIs(b []byte) bool {
	return utf8.Valid(b) && !refusedEscape(b) && json.Valid(b)
}

// refusedEscape reports whether b may hold an escape that jsonb refuses: \u0000, or a
// surrogate escape that is not a high one followed by a low one. It may say yes for text that
// only looks like one (an escaped backslash before "u0000"); the slow path then finds the
// same JSON.
func refusedEscape(b []byte) bool {
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(`\u`))
		if j < 0 {
			return false
		}
		i += j + 2
		if i+4 > len(b) {
			return false // not JSON: json.Valid says so
		}
		h := b[i : i+4]
		switch {
		case string(h) == "0000":
			return true
		case lowSurrogate(h):
			return true
		case highSurrogate(h):
			if i+10 > len(b) || b[i+4] != '\\' || b[i+5] != 'u' || !lowSurrogate(b[i+6:i+10]) {
				return true
			}
			i += 10
		default:
			i += 4
		}
	}
}

// highSurrogate and lowSurrogate tell the four hex digits of a \u escape in D800-DBFF and
// DC00-DFFF.
func highSurrogate(h []byte) bool {
	return (h[0] == 'd' || h[0] == 'D') && strings.IndexByte("89abAB", h[1]) >= 0
}

func lowSurrogate(h []byte) bool {
	return (h[0] == 'd' || h[0] == 'D') && strings.IndexByte("cdefCDEF", h[1]) >= 0
}

// reencodeJSON is StorableJSON's slow path.
func reencodeJSON(b []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	if err == nil {
		// One value and nothing after it but white space.
		if _, err = dec.Token(); errors.Is(err, io.EOF) {
			err = nil
		} else if err == nil {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		// Not JSON: a JSON string of its text.
		v = string(b)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cleanJSON(v)); err != nil {
		// Unreachable for decoded values; store the text rather than fail the batch.
		buf.Reset()
		_ = enc.Encode(StorableText(string(b)))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// cleanJSON makes every string of a decoded JSON value storable, map keys included.
func cleanJSON(v any) any {
	switch v := v.(type) {
	case string:
		return StorableText(v)
	case []any:
		for i, e := range v {
			v[i] = cleanJSON(e)
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[StorableText(k)] = cleanJSON(e)
		}
		return out
	}
	return v
}
