package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a dead-letter copy, beside the job's own headers.
const (
	HeaderJobID         = "Levee-Job-Id"
	HeaderKind          = "Levee-Kind"
	HeaderReason        = "Levee-Reason"
	HeaderAttempts      = "Levee-Attempts"
	HeaderLastError     = "Levee-Last-Error"
	HeaderFirstFailedAt = "Levee-First-Failed-At"
	HeaderFailedAt      = "Levee-Failed-At"
	HeaderWorker        = "Levee-Worker"
)

// maxHeaderError bounds the error text carried in a DLQ header.
const maxHeaderError = 1024

// DeadInfo says why a job was dead-lettered.
type DeadInfo struct {
	Reason        string // short code: permanent_error, max_attempts, malformed, ...
	Attempts      int
	LastError     string
	FirstFailedAt time.Time
	FailedAt      time.Time
	Worker        string
}

// DLQMsgID is the Nats-Msg-Id of a job's dead-letter copy, so that copying it twice stores once.
func DLQMsgID(jobID string) string { return "dlq:" + jobID }

// DeadLetter copies a job to the dead-letter stream and waits for the stream's acknowledgement.
// raw is the message body as delivered (the payload, even if it was malformed); hdr are the
// original headers, kept on the copy. Copying the same job twice stores it once.
func (q *Queue) DeadLetter(ctx context.Context, env Envelope, raw []byte, hdr nats.Header, info DeadInfo) error {
	kind, id := env.Kind, env.ID
	if ValidateKind(kind) != nil || ValidateID(id) != nil {
		return fmt.Errorf("dead-letter: job has no valid kind and id (kind %q, id %q)", kind, id)
	}
	m := nats.NewMsg(q.names.DLQSubject(kind, id))
	m.Data = raw
	for k, vs := range hdr {
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
	failedAt := info.FailedAt
	if failedAt.IsZero() {
		failedAt = time.Now()
	}
	firstFailed := info.FirstFailedAt
	if firstFailed.IsZero() {
		firstFailed = failedAt
	}
	m.Header.Set(HeaderMsgID, DLQMsgID(id))
	m.Header.Set(HeaderJobID, id)
	m.Header.Set(HeaderKind, kind)
	m.Header.Set(HeaderKey, env.Key)
	m.Header.Set(HeaderReason, info.Reason)
	m.Header.Set(HeaderAttempts, strconv.Itoa(info.Attempts))
	if info.LastError != "" {
		m.Header.Set(HeaderLastError, headerSafe(info.LastError, maxHeaderError))
	}
	m.Header.Set(HeaderFirstFailedAt, firstFailed.UTC().Format(time.RFC3339Nano))
	m.Header.Set(HeaderFailedAt, failedAt.UTC().Format(time.RFC3339Nano))
	if info.Worker != "" {
		m.Header.Set(HeaderWorker, info.Worker)
	}
	if _, err := q.js.PublishMsg(ctx, m, jetstream.WithExpectStream(q.names.DLQStream())); err != nil {
		return fmt.Errorf("dead-letter job %s: %w", id, translate(err))
	}
	return nil
}

// DeadLettered reports whether job id of kind has a copy in the dead-letter stream.
func (q *Queue) DeadLettered(ctx context.Context, kind, id string) (bool, error) {
	stream, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return false, fmt.Errorf("look up stream %s: %w", q.names.DLQStream(), translate(err))
	}
	_, err = stream.GetLastMsgForSubject(ctx, q.names.DLQSubject(kind, id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, translate(err)
}

// DeadLetterEntry is one job in the dead-letter stream.
type DeadLetterEntry struct {
	JobID    string
	Kind     string
	Key      string
	Reason   string
	Attempts int
	Error    string
	Payload  []byte
	Sequence uint64
	Header   nats.Header
}

// GetDeadLetter returns the dead-letter copy of job id (any kind), or ErrNotFound.
func (q *Queue) GetDeadLetter(ctx context.Context, id string) (*DeadLetterEntry, error) {
	stream, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", q.names.DLQStream(), translate(err))
	}
	raw, err := stream.GetLastMsgForSubject(ctx, q.names.ns+".dlq.*."+id)
	if err != nil {
		return nil, translate(err)
	}
	attempts, _ := strconv.Atoi(raw.Header.Get(HeaderAttempts))
	return &DeadLetterEntry{
		JobID:    raw.Header.Get(HeaderJobID),
		Kind:     raw.Header.Get(HeaderKind),
		Key:      raw.Header.Get(HeaderKey),
		Reason:   raw.Header.Get(HeaderReason),
		Attempts: attempts,
		Error:    raw.Header.Get(HeaderLastError),
		Payload:  raw.Data,
		Sequence: raw.Sequence,
		Header:   raw.Header,
	}, nil
}

// headerSafe makes s fit in a header value: one line, at most n bytes.
func headerSafe(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r < ' ' {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		cut := n
		for cut > 0 && (s[cut]&0xC0) == 0x80 {
			cut--
		}
		s = s[:cut]
	}
	return s
}
