package queue_test

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/queue"
)

func TestNewEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		kind, id    string
		key         string
		payload     string
		maxAttempts int
		maxPayload  int
		wantKey     string
		wantPayload string
		wantErr     string // substring; "" means success
		wantIs      error
	}{
		{name: "compacts JSON", kind: "charge", id: "J1", payload: "{ \"amount\" : 42,\n \"currency\": \"EUR\" }",
			wantKey: "J1", wantPayload: `{"amount":42,"currency":"EUR"}`},
		{name: "key defaults to id", kind: "charge", id: "J1", payload: `{}`, wantKey: "J1", wantPayload: `{}`},
		{name: "explicit key", kind: "charge", id: "J1", key: "order-42", payload: `[1, 2]`, wantKey: "order-42", wantPayload: `[1,2]`},
		{name: "empty payload is null", kind: "charge", id: "J1", payload: "", wantKey: "J1", wantPayload: `null`},
		{name: "blank payload is null", kind: "charge", id: "J1", payload: " \n\t", wantKey: "J1", wantPayload: `null`},
		{name: "max attempts kept", kind: "charge", id: "J1", payload: `1`, maxAttempts: queue.MaxAttemptsLimit, wantKey: "J1", wantPayload: `1`},
		{name: "payload at the bound", kind: "charge", id: "J1", payload: `"abcdef"`, maxPayload: 8, wantKey: "J1", wantPayload: `"abcdef"`},
		{name: "invalid JSON", kind: "charge", id: "J1", payload: `{"amount":`, wantErr: "not valid JSON"},
		{name: "not JSON at all", kind: "charge", id: "J1", payload: `not json`, wantErr: "not valid JSON"},
		{name: "oversize", kind: "charge", id: "J1", payload: `"abcdefg"`, maxPayload: 8, wantErr: "9 bytes", wantIs: queue.ErrPayloadTooLarge},
		{name: "oversize default bound", kind: "charge", id: "J1", payload: `"` + strings.Repeat("x", queue.DefaultMaxPayload) + `"`, wantIs: queue.ErrPayloadTooLarge, wantErr: "too large"},
		{name: "negative max attempts", kind: "charge", id: "J1", payload: `1`, maxAttempts: -1, wantErr: "max attempts"},
		{name: "max attempts over limit", kind: "charge", id: "J1", payload: `1`, maxAttempts: queue.MaxAttemptsLimit + 1, wantErr: "max attempts"},
		{name: "bad kind", kind: "Charge", id: "J1", payload: `1`, wantErr: "kind"},
		{name: "bad id", kind: "charge", id: "J.1", payload: `1`, wantErr: "job id"},
		{name: "bad key", kind: "charge", id: "J1", key: "a\nb", payload: `1`, wantErr: "idempotency key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, err := queue.NewEnvelope(tt.kind, tt.id, tt.key, []byte(tt.payload), tt.maxAttempts, tt.maxPayload)
			if tt.wantErr != "" || tt.wantIs != nil {
				require.Error(t, err)
				require.Contains(t, err.Error(), tt.wantErr)
				if tt.wantIs != nil {
					require.ErrorIs(t, err, tt.wantIs)
				} else {
					require.NotErrorIs(t, err, queue.ErrPayloadTooLarge)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.kind, env.Kind)
			require.Equal(t, tt.id, env.ID)
			require.Equal(t, tt.wantKey, env.Key)
			require.Equal(t, tt.wantPayload, string(env.Payload))
			require.Equal(t, tt.maxAttempts, env.MaxAttempts)
		})
	}
}

func TestPayloadHash(t *testing.T) {
	t.Parallel()
	a, err := queue.NewEnvelope("charge", "J1", "", []byte(`{ "a": 1 }`), 0, 0)
	require.NoError(t, err)
	b, err := queue.NewEnvelope("charge", "J2", "", []byte(`{"a":1}`), 0, 0)
	require.NoError(t, err)
	c, err := queue.NewEnvelope("charge", "J3", "", []byte(`{"a":2}`), 0, 0)
	require.NoError(t, err)
	want := sha256.Sum256([]byte(`{"a":1}`))
	require.Equal(t, want[:], a.PayloadHash(), "the hash is of the compact payload")
	require.Equal(t, a.PayloadHash(), b.PayloadHash(), "formatting does not change the hash")
	require.NotEqual(t, a.PayloadHash(), c.PayloadHash())
}

func TestMsgDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	enqueued := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.FixedZone("CET", 3600))
	streamTime := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		ns         string
		env        queue.Envelope
		wantHeader map[string]string // "" value: header must be absent
	}{
		{
			name: "defaults",
			ns:   "levee",
			env:  queue.Envelope{ID: "J1", Kind: "charge", Key: "J1", Payload: []byte(`{"amount":42}`), EnqueuedAt: enqueued},
			wantHeader: map[string]string{
				queue.HeaderMsgID: "J1", queue.HeaderKey: "", queue.HeaderMaxAttempts: "",
				queue.HeaderEnqueuedAt: "2025-03-04T04:06:07.891011121Z",
			},
		},
		{
			name: "key and max attempts",
			ns:   "other_ns",
			env:  queue.Envelope{ID: "J2", Kind: "send-email", Key: "order 42", Payload: []byte(`null`), MaxAttempts: 7, EnqueuedAt: enqueued},
			wantHeader: map[string]string{
				queue.HeaderMsgID: "J2", queue.HeaderKey: "order 42", queue.HeaderMaxAttempts: "7",
				queue.HeaderEnqueuedAt: "2025-03-04T04:06:07.891011121Z",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n, err := queue.NewNames(tt.ns)
			require.NoError(t, err)
			m := n.Msg(tt.env)
			require.Equal(t, n.JobSubject(tt.env.Kind, tt.env.ID), m.Subject)
			require.Equal(t, string(tt.env.Payload), string(m.Data))
			for h, want := range tt.wantHeader {
				if want == "" {
					require.NotContains(t, m.Header, h, "header %s must be absent", h)
				} else {
					require.Equal(t, want, m.Header.Get(h), "header %s", h)
				}
			}

			got, err := n.Decode(m.Subject, m.Header, m.Data, streamTime, 0)
			require.NoError(t, err)
			require.Equal(t, tt.env.ID, got.ID)
			require.Equal(t, tt.env.Kind, got.Kind)
			require.Equal(t, tt.env.Key, got.Key)
			require.Equal(t, string(tt.env.Payload), string(got.Payload))
			require.Equal(t, tt.env.MaxAttempts, got.MaxAttempts)
			require.True(t, tt.env.EnqueuedAt.Equal(got.EnqueuedAt), "enqueued at %s, decoded %s", tt.env.EnqueuedAt, got.EnqueuedAt)
		})
	}
}

func TestMsgStampsEnqueuedAtWhenZero(t *testing.T) {
	t.Parallel()
	n, err := queue.NewNames("levee")
	require.NoError(t, err)
	before := time.Now()
	m := n.Msg(queue.Envelope{ID: "J1", Kind: "charge", Key: "J1", Payload: []byte(`1`)})
	after := time.Now()
	at, err := time.Parse(time.RFC3339Nano, m.Header.Get(queue.HeaderEnqueuedAt))
	require.NoError(t, err)
	require.False(t, at.Before(before.Truncate(time.Microsecond)) || at.After(after), "stamped %s, want within [%s, %s]", at, before, after)
}

func TestDecodeWithoutHeaders(t *testing.T) {
	t.Parallel()
	n, err := queue.NewNames("levee")
	require.NoError(t, err)
	streamTime := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, hdr := range []nats.Header{nil, {}} {
		env, err := n.Decode("levee.jobs.charge.J1", hdr, []byte(` {"a" : 1} `), streamTime, 0)
		require.NoError(t, err)
		require.Equal(t, queue.Envelope{
			ID: "J1", Kind: "charge", Key: "J1", Payload: []byte(`{"a":1}`), EnqueuedAt: streamTime,
		}, env, "a plain `nats pub` job: key defaults to the id, time to the stream's")
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	n, err := queue.NewNames("levee")
	require.NoError(t, err)
	hdr := func(kv ...string) nats.Header {
		h := nats.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name       string
		subject    string
		hdr        nats.Header
		data       string
		maxPayload int
		wantKind   string // "" when the subject cannot name a job
		wantID     string
		wantErr    string
		wantIs     error
	}{
		{name: "other namespace", subject: "other.jobs.charge.J1", data: `1`, wantErr: "not under levee.jobs.>"},
		{name: "dlq subject", subject: "levee.dlq.charge.J1", data: `1`, wantErr: "not under"},
		{name: "no id", subject: "levee.jobs.charge", data: `1`, wantErr: "<kind>.<id>"},
		{name: "extra token", subject: "levee.jobs.charge.J1.x", data: `1`, wantErr: "<kind>.<id>"},
		{name: "bad kind", subject: "levee.jobs.Charge.J1", data: `1`, wantKind: "Charge", wantID: "J1", wantErr: "kind"},
		{name: "bad max attempts", subject: "levee.jobs.charge.J1", hdr: hdr(queue.HeaderMaxAttempts, "lots"), data: `1`,
			wantKind: "charge", wantID: "J1", wantErr: queue.HeaderMaxAttempts},
		{name: "zero max attempts", subject: "levee.jobs.charge.J1", hdr: hdr(queue.HeaderMaxAttempts, "0"), data: `1`,
			wantKind: "charge", wantID: "J1", wantErr: queue.HeaderMaxAttempts},
		{name: "max attempts over limit", subject: "levee.jobs.charge.J1", hdr: hdr(queue.HeaderMaxAttempts, "1001"), data: `1`,
			wantKind: "charge", wantID: "J1", wantErr: queue.HeaderMaxAttempts},
		{name: "bad enqueued at", subject: "levee.jobs.charge.J1", hdr: hdr(queue.HeaderEnqueuedAt, "yesterday"), data: `1`,
			wantKind: "charge", wantID: "J1", wantErr: queue.HeaderEnqueuedAt},
		{name: "bad key", subject: "levee.jobs.charge.J1", hdr: hdr(queue.HeaderKey, strings.Repeat("k", queue.MaxKeyLen+1)), data: `1`,
			wantKind: "charge", wantID: "J1", wantErr: queue.HeaderKey},
		{name: "invalid JSON", subject: "levee.jobs.charge.J1", hdr: hdr(queue.HeaderKey, "order-42"), data: `not json`,
			wantKind: "charge", wantID: "J1", wantErr: "not valid JSON"},
		{name: "oversize", subject: "levee.jobs.charge.J1", data: `"` + strings.Repeat("x", 100) + `"`, maxPayload: 64,
			wantKind: "charge", wantID: "J1", wantErr: "102 bytes", wantIs: queue.ErrPayloadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env, err := n.Decode(tt.subject, tt.hdr, []byte(tt.data), time.Now(), tt.maxPayload)
			require.Error(t, err)
			require.ErrorIs(t, err, queue.ErrMalformed)
			require.Contains(t, err.Error(), tt.wantErr)
			if tt.wantIs != nil {
				require.ErrorIs(t, err, tt.wantIs)
			}
			require.Equal(t, tt.wantKind, env.Kind)
			require.Equal(t, tt.wantID, env.ID)
			if tt.wantID != "" {
				require.NotEmpty(t, env.Key, "a malformed job still has a key, so it can be dead-lettered under its name")
			}
		})
	}
}

func TestDecodeKeepsKeyOfMalformedPayload(t *testing.T) {
	t.Parallel()
	n, err := queue.NewNames("levee")
	require.NoError(t, err)
	h := nats.Header{}
	h.Set(queue.HeaderKey, "order-42")
	env, err := n.Decode("levee.jobs.charge.J1", h, []byte(`{`), time.Now(), 0)
	require.ErrorIs(t, err, queue.ErrMalformed)
	require.Equal(t, "order-42", env.Key)
	require.Nil(t, env.Payload, "the malformed body is not passed on as a payload")
}

// A delivered message whose Levee-Key header is not valid UTF-8 cannot be a job: the ledger
// could not store its key (design rule 28). It decodes as malformed, under its id as the key,
// so it is dead-lettered without touching the key.
func TestDecodeRefusesKeyNotUTF8(t *testing.T) {
	t.Parallel()
	n, err := queue.NewNames("levee")
	require.NoError(t, err)
	h := nats.Header{}
	h.Set(queue.HeaderKey, "order-\xff\xfe42")
	env, err := n.Decode("levee.jobs.charge.J1", h, []byte(`{"a":1}`), time.Now(), 0)
	require.ErrorIs(t, err, queue.ErrMalformed)
	require.ErrorContains(t, err, "invalid idempotency key: not valid UTF-8")
	require.Equal(t, "J1", env.Key, "the unstorable key is not passed on")
	require.Equal(t, "J1", env.ID)
	require.Equal(t, "charge", env.Kind)
}
