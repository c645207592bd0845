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
// fast path returns b itself when it is valid UTF-8 and valid JSON with nothing jsonb refuses
// (a \u0000 escape, a lone surrogate escape, a number beyond numeric's range), checked in one
// pass (jsonAsIs). Otherwise JSON is decoded (numbers kept as written) and encoded again with
// its strings made storable: \u0000 and invalid bytes become U+FFFD, the decoder already maps
// lone surrogates to U+FFFD, and a number numeric cannot hold becomes a JSON string of its
// text. Anything that is not JSON at all is stored as a JSON string of its text, made
// storable.
func StorableJSON(b []byte) []byte {
	if jsonAsIs(b) {
		return b
	}
	return reencodeJSON(b)
}

// storableResult is StorableJSON as the string the finish statement sends.
func storableResult(b []byte) string {
	if jsonAsIs(b) {
		return string(b)
	}
	return string(reencodeJSON(b))
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
	case json.Number:
		if !numberStorable(string(v)) {
			return string(v)
		}
		return v
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
