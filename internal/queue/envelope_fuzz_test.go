package queue_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee/internal/queue"
)

// fuzzMaxPayload is small so that the fuzzer reaches the size bound with short inputs.
const fuzzMaxPayload = 4096

// FuzzDecode feeds Decode what a worker reads from the stream: a subject, a raw NATS header
// block (decoded by nats.go, as a delivery would be) and a body. Decode must never panic; an
// error must wrap ErrMalformed and say in one line what was wrong; whatever decodes must
// encode (Msg) and decode again to the same job, with every header able to cross the wire.
func FuzzDecode(f *testing.F) {
	block := func(lines ...string) []byte {
		return []byte("NATS/1.0\r\n" + strings.Join(lines, "") + "\r\n")
	}
	for _, s := range []struct {
		subject string
		hdr     []byte
		data    string
	}{
		{"levee.jobs.charge.J1", nil, `{"amount":42}`},
		{"levee.jobs.charge.J1", block(), ""},
		{"levee.jobs.charge.J1", block("Levee-Key: order-42\r\n", "Levee-Max-Attempts: 7\r\n",
			"Levee-Enqueued-At: 2025-03-04T05:06:07.891011121+01:00\r\n", "Levee-Fallback-Of: J0\r\n"), " { \"a\" : [1, 2] } "},
		// Odd casing, duplicates, empty and padded values, odd numbers.
		{"levee.jobs.charge.J1", block("levee-key: lower\r\n", "LEVEE-KEY: upper\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Key: a\r\n", "Levee-Key: b\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Key:\r\n", "Levee-Max-Attempts: \r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Key: \t padded \t\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Max-Attempts: +0007\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Max-Attempts: 1000\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Max-Attempts: 99999999999999999999\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Max-Attempts: -1\r\n"), `1`},
		// Times at the edges of RFC 3339: years 0000 and 9999 with offsets, leap seconds.
		{"levee.jobs.charge.J1", block("Levee-Enqueued-At: 0000-01-01T00:00:00+01:00\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Enqueued-At: 9999-12-31T23:59:59-23:59\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Enqueued-At: 2016-12-31T23:59:60Z\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Enqueued-At: yesterday\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Fallback-Of: a.b\r\n"), `1`},
		// Control characters, NUL and invalid UTF-8 in headers.
		{"levee.jobs.charge.J1", block("Levee-Key: a\x00b\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Key: \xff\xfe\r\n"), `1`},
		{"levee.jobs.charge.J1", block("Levee-Key: " + strings.Repeat("k", queue.MaxKeyLen+1) + "\r\n"), `1`},
		{"levee.jobs.charge.J1", []byte("NATS/1.0 503\r\n\r\n"), `1`},
		{"levee.jobs.charge.J1", []byte("NATS/1.0\r\nno colon\r\n\r\n"), `1`},
		{"levee.jobs.charge.J1", []byte("HTTP/1.1\r\n\r\n"), `1`},
		// Bodies: empty, blank, nested, duplicate keys, invalid UTF-8, NUL, huge, not JSON.
		{"levee.jobs.charge.J1", nil, " \n\t"},
		{"levee.jobs.charge.J1", nil, strings.Repeat("[", 500) + strings.Repeat("]", 500)},
		{"levee.jobs.charge.J1", nil, `{"a":1,"a":2}`},
		{"levee.jobs.charge.J1", nil, "\"\xff\xfe\""},
		{"levee.jobs.charge.J1", nil, "\"a\x00b\""},
		{"levee.jobs.charge.J1", nil, `"` + strings.Repeat("x", fuzzMaxPayload) + `"`},
		{"levee.jobs.charge.J1", nil, "{\"a\":1}\x00"},
		{"levee.jobs.charge.J1", nil, `{"a":`},
		{"levee.jobs.charge.J1", nil, `1 2`},
		// Subjects: other namespace, missing or extra tokens, bad kind and id, wildcards.
		{"other.jobs.charge.J1", nil, `1`},
		{"levee.jobs.charge", nil, `1`},
		{"levee.jobs.charge.J1.x", nil, `1`},
		{"levee.jobs..J1", nil, `1`},
		{"levee.jobs.charge.", nil, `1`},
		{"levee.jobs.Charge.J1", nil, `1`},
		{"levee.jobs.*.>", nil, `1`},
		{"levee.jobs.charge.J\xff", nil, `1`},
		{"levee.jobs.charge." + strings.Repeat("J", queue.MaxIDLen+1), nil, `1`},
		{"", nil, ""},
	} {
		f.Add(s.subject, s.hdr, []byte(s.data))
	}
	n, err := queue.NewNames("levee")
	if err != nil {
		f.Fatal(err)
	}
	streamTime := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	f.Fuzz(func(t *testing.T, subject string, hdrBlock, data []byte) {
		var hdr nats.Header
		if len(hdrBlock) > 0 {
			h, err := nats.DecodeHeadersMsg(hdrBlock)
			if err != nil {
				return // not a header block a delivery could carry
			}
			hdr = h
		}
		env, err := n.Decode(subject, hdr, data, streamTime, fuzzMaxPayload)
		if err != nil {
			checkDecodeError(t, env, err)
			return
		}
		checkValidEnvelope(t, env)
		checkRoundTrip(t, n, env)
	})
}

// FuzzNewEnvelope checks the publishing side: whatever NewEnvelope accepts must travel through
// Msg and Decode unchanged; whatever it refuses gets a one-line error.
func FuzzNewEnvelope(f *testing.F) {
	f.Add("charge", "J1", "", []byte(`{"amount":42}`), 0)
	f.Add("charge", "J1", "order-42", []byte(" [1, 2] "), 1000)
	f.Add("send-email", "01HZX", "J1", []byte(""), 1)
	f.Add("charge", "J1", " order-42", []byte(`1`), 0)
	f.Add("charge", "J1", "order-42\t", []byte(`1`), 0)
	f.Add("charge", "J1", "a\r\nLevee-Key: b", []byte(`1`), 0)
	f.Add("charge", "J1", "\xff\xfe", []byte(`1`), 0)
	f.Add("charge", "J1", "ключ", []byte(`{"ключ":"значение"}`), 0)
	f.Add("charge", "J.1", "", []byte(`1`), 0)
	f.Add("Charge", "J1", "", []byte(`1`), 0)
	f.Add("charge", "J1", "", []byte(`{"a":1,"a":2}`), -1)
	f.Add("charge", "J1", "", []byte("\x00"), 1001)
	n, err := queue.NewNames("levee")
	if err != nil {
		f.Fatal(err)
	}
	enqueued := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC)
	f.Fuzz(func(t *testing.T, kind, id, key string, payload []byte, maxAttempts int) {
		env, err := queue.NewEnvelope(kind, id, key, payload, maxAttempts, fuzzMaxPayload)
		if err != nil {
			checkOneLine(t, err)
			return
		}
		env.EnqueuedAt = enqueued
		checkValidEnvelope(t, env)
		checkRoundTrip(t, n, env)
	})
}

func checkDecodeError(t *testing.T, env queue.Envelope, err error) {
	t.Helper()
	checkOneLine(t, err)
	if !errors.Is(err, queue.ErrMalformed) {
		t.Fatalf("Decode error %q does not wrap ErrMalformed", err)
	}
	msg := err.Error()
	names := []string{"subject", "kind", "job id", "payload", queue.HeaderKey, queue.HeaderMaxAttempts,
		queue.HeaderEnqueuedAt, queue.HeaderFallbackOf}
	if !containsAny(msg, names) {
		t.Fatalf("Decode error %q names neither the subject, a header nor the payload", msg)
	}
	if env.ID != "" && env.Key == "" {
		t.Fatalf("a malformed job with id %q has no key to be dead-lettered under", env.ID)
	}
}

func checkOneLine(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if strings.TrimSpace(msg) == "" || strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("error is not one non-empty line: %q", msg)
	}
}

func checkValidEnvelope(t *testing.T, env queue.Envelope) {
	t.Helper()
	if err := queue.ValidateKind(env.Kind); err != nil {
		t.Fatalf("accepted kind: %v", err)
	}
	if err := queue.ValidateID(env.ID); err != nil {
		t.Fatalf("accepted id: %v", err)
	}
	if err := queue.ValidateKey(env.Key); err != nil {
		t.Fatalf("accepted key: %v", err)
	}
	if !json.Valid(env.Payload) {
		t.Fatalf("accepted payload is not JSON: %q", env.Payload)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, env.Payload); err != nil || !bytes.Equal(compact.Bytes(), env.Payload) {
		t.Fatalf("accepted payload is not compact: %q", env.Payload)
	}
	if len(env.Payload) > fuzzMaxPayload {
		t.Fatalf("accepted payload of %d bytes, over the bound %d", len(env.Payload), fuzzMaxPayload)
	}
	if env.MaxAttempts < 0 || env.MaxAttempts > queue.MaxAttemptsLimit {
		t.Fatalf("accepted max attempts %d", env.MaxAttempts)
	}
}

// checkRoundTrip encodes env and decodes it again. The decode uses another stream time, so the
// enqueue time must come back from the header.
func checkRoundTrip(t *testing.T, n queue.Names, env queue.Envelope) {
	t.Helper()
	m := n.Msg(env)
	for k, vs := range m.Header {
		for _, v := range vs {
			// nats.go writes a header value trimmed of spaces and tabs at both ends, with CR and LF
			// replaced by spaces (writeHeaderValue); a value it would change arrives changed.
			if v != textproto.TrimString(v) || strings.ContainsAny(v, "\r\n") {
				t.Fatalf("header %s value %q does not survive the wire unchanged", k, v)
			}
		}
	}
	got, err := n.Decode(m.Subject, m.Header, m.Data, time.Unix(0, 0), fuzzMaxPayload)
	if err != nil {
		t.Fatalf("re-decode of %+v: %v", env, err)
	}
	if !got.EnqueuedAt.Equal(env.EnqueuedAt) {
		t.Fatalf("enqueued at %s, re-decoded %s", env.EnqueuedAt, got.EnqueuedAt)
	}
	got.EnqueuedAt, env.EnqueuedAt = time.Time{}, time.Time{}
	if got.ID != env.ID || got.Kind != env.Kind || got.Key != env.Key || got.MaxAttempts != env.MaxAttempts ||
		got.FallbackOf != env.FallbackOf || !bytes.Equal(got.Payload, env.Payload) {
		t.Fatalf("round trip changed the job:\n was %+v\n got %+v", env, got)
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
