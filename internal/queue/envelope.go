package queue

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers a job may carry. All are optional: the kind and id come from the subject, the key
// defaults to the id, max attempts to the kind's policy, and the enqueue time to the stream's
// timestamp.
const (
	HeaderMsgID       = "Nats-Msg-Id" // = job id, for JetStream's deduplication window
	HeaderKey         = "Levee-Key"
	HeaderMaxAttempts = "Levee-Max-Attempts"
	HeaderEnqueuedAt  = "Levee-Enqueued-At" // RFC 3339 with nanoseconds
	// HeaderFallbackOf marks a job published by a fallback: the id of the job it replaces.
	// Such a job never falls back again.
	HeaderFallbackOf = "Levee-Fallback-Of"
)

// DefaultMaxPayload is the default bound on a job's payload: 1 MiB.
const DefaultMaxPayload = 1 << 20

// MaxAttemptsLimit bounds the Levee-Max-Attempts header.
const MaxAttemptsLimit = 1000

// Envelope is a job as it travels through JetStream.
type Envelope struct {
	ID      string
	Kind    string
	Key     string          // idempotency key; defaults to ID
	Payload json.RawMessage // compact JSON
	// MaxAttempts overrides the kind's policy when > 0.
	MaxAttempts int
	EnqueuedAt  time.Time
	// FallbackOf is the id of the job this one replaces after that job's kind gave up on it.
	FallbackOf string
}

// ErrMalformed marks a message that cannot be a job. Such a message is dead-lettered with
// reason "malformed"; it is never retried.
var ErrMalformed = errors.New("malformed job")

// ErrPayloadTooLarge is returned (wrapped) for a payload over the configured bound.
var ErrPayloadTooLarge = errors.New("payload too large")

// NewEnvelope validates a job before publishing and returns it with its payload compacted and
// its key defaulted. maxPayload <= 0 means DefaultMaxPayload.
func NewEnvelope(kind, id, key string, payload []byte, maxAttempts, maxPayload int) (Envelope, error) {
	if err := ValidateKind(kind); err != nil {
		return Envelope{}, err
	}
	if err := ValidateID(id); err != nil {
		return Envelope{}, err
	}
	if key == "" {
		key = id
	}
	if err := ValidateKey(key); err != nil {
		return Envelope{}, err
	}
	if maxAttempts < 0 || maxAttempts > MaxAttemptsLimit {
		return Envelope{}, fmt.Errorf("invalid max attempts %d: use 1 to %d, or 0 for the kind's default", maxAttempts, MaxAttemptsLimit)
	}
	compact, err := compactPayload(payload, maxPayload)
	if err != nil {
		return Envelope{}, err
	}
	return Envelope{ID: id, Kind: kind, Key: key, Payload: compact, MaxAttempts: maxAttempts}, nil
}

func compactPayload(payload []byte, maxPayload int) (json.RawMessage, error) {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	if len(payload) > maxPayload {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d (raise --max-payload, or store the data elsewhere and send a reference)", ErrPayloadTooLarge, len(payload), maxPayload)
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return json.RawMessage("null"), nil
	}
	var buf bytes.Buffer
	buf.Grow(len(payload))
	if err := json.Compact(&buf, payload); err != nil {
		return nil, fmt.Errorf("payload is not valid JSON: %w", err)
	}
	return buf.Bytes(), nil
}

// PayloadHash is the hash the ledger stores to detect a key reused with another payload.
func (e Envelope) PayloadHash() []byte {
	sum := sha256.Sum256(e.Payload)
	return sum[:]
}

// Msg encodes the envelope as a NATS message on its subject.
func (n Names) Msg(e Envelope) *nats.Msg {
	m := nats.NewMsg(n.JobSubject(e.Kind, e.ID))
	m.Data = e.Payload
	m.Header.Set(HeaderMsgID, e.ID)
	if e.Key != e.ID {
		m.Header.Set(HeaderKey, e.Key)
	}
	if e.MaxAttempts > 0 {
		m.Header.Set(HeaderMaxAttempts, strconv.Itoa(e.MaxAttempts))
	}
	at := e.EnqueuedAt
	if at.IsZero() {
		at = time.Now()
	}
	m.Header.Set(HeaderEnqueuedAt, at.UTC().Format(time.RFC3339Nano))
	if e.FallbackOf != "" {
		m.Header.Set(HeaderFallbackOf, e.FallbackOf)
	}
	return m
}

// Decode reads a job from a stored message. streamTime is the message's stream timestamp, used
// when the Levee-Enqueued-At header is absent. The error wraps ErrMalformed for anything that
// cannot be a job; the returned envelope still carries whatever could be read (kind, id, key),
// so the message can be dead-lettered under its name.
func (n Names) Decode(subject string, hdr nats.Header, data []byte, streamTime time.Time, maxPayload int) (Envelope, error) {
	kind, id, err := n.parseJobSubject(subject)
	if err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	env := Envelope{ID: id, Kind: kind, Key: id, EnqueuedAt: streamTime}
	if err := ValidateKind(kind); err != nil {
		return env, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := ValidateID(id); err != nil {
		return env, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if k := hdr.Get(HeaderKey); k != "" {
		if err := ValidateKey(k); err != nil {
			return env, fmt.Errorf("%w: header %s: %w", ErrMalformed, HeaderKey, err)
		}
		env.Key = k
	}
	if v := hdr.Get(HeaderMaxAttempts); v != "" {
		ma, err := strconv.Atoi(v)
		if err != nil || ma < 1 || ma > MaxAttemptsLimit {
			return env, fmt.Errorf("%w: header %s is %q, want 1 to %d", ErrMalformed, HeaderMaxAttempts, v, MaxAttemptsLimit)
		}
		env.MaxAttempts = ma
	}
	if v := hdr.Get(HeaderEnqueuedAt); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return env, fmt.Errorf("%w: header %s is %q, want RFC 3339", ErrMalformed, HeaderEnqueuedAt, v)
		}
		// Msg writes the time in UTC, and an offset can carry 0000-01-01 or 9999-12-31 out of
		// the four-digit years RFC 3339 allows: such a job could not be re-published.
		if y := t.UTC().Year(); y < 0 || y > 9999 {
			return env, fmt.Errorf("%w: header %s is %q, want a time between years 0000 and 9999 in UTC", ErrMalformed, HeaderEnqueuedAt, v)
		}
		env.EnqueuedAt = t
	}
	if v := hdr.Get(HeaderFallbackOf); v != "" {
		if err := ValidateID(v); err != nil {
			return env, fmt.Errorf("%w: header %s: %w", ErrMalformed, HeaderFallbackOf, err)
		}
		env.FallbackOf = v
	}
	payload, err := compactPayload(data, maxPayload)
	if err != nil {
		return env, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	env.Payload = payload
	return env, nil
}
