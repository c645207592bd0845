package levee

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"time"

	"github.com/levee-dev/levee/internal/queue"
)

// DeadJob is one job in the dead-letter queue, with everything known of its death. Its JSON
// form is what `enqueue dlq show --json` prints.
type DeadJob struct {
	ID            string            `json:"id"`
	Kind          string            `json:"kind"`
	Key           string            `json:"key"`
	Reason        string            `json:"reason"`
	Attempts      int               `json:"attempts"`
	LastError     string            `json:"last_error"`
	FirstFailedAt time.Time         `json:"first_failed_at"`
	FailedAt      time.Time         `json:"failed_at"`
	Worker        string            `json:"worker"`
	Payload       json.RawMessage   `json:"payload"`
	Headers       map[string]string `json:"headers"`
	// Sequence is the entry's position in the DLQ stream.
	Sequence uint64 `json:"dlq_seq"`
}

// DLQFilter selects dead jobs; zero fields select all.
type DLQFilter struct {
	Kind   string
	Reason string
	// Since keeps jobs that died at or after it; Before keeps jobs that died before it.
	Since  time.Time
	Before time.Time
}

// ErrDatabaseRequired is returned by calls that need the ledger on a Client made without a
// database.
var ErrDatabaseRequired = errors.New("this needs the Postgres ledger: set ClientConfig.DatabaseURL (--database-url)")

// ErrKeyDeadElsewhere is returned by Replay for a job whose key died under another job:
// replaying this one would change nothing, so it stays in the DLQ.
var ErrKeyDeadElsewhere = errors.New("the job's key is dead under another job")

// ErrPayloadChange is returned by Replay when a new payload differs from the job's and
// ReplayOptions.AllowPayloadChange is not set: the key's effect is bound to its payload.
var ErrPayloadChange = errors.New("the new payload differs from the job's: its idempotency key is bound to the old one (allow the change explicitly to reset it)")

func deadJobFrom(e queue.DeadLetterEntry) DeadJob {
	h := make(map[string]string, len(e.Header))
	for k := range e.Header {
		h[k] = e.Header.Get(k)
	}
	payload := json.RawMessage(e.Payload)
	if !json.Valid(payload) { // a malformed job: keep its bytes readable
		b, _ := json.Marshal(string(e.Payload))
		payload = b
	}
	return DeadJob{
		ID: e.JobID, Kind: e.Kind, Key: e.Key, Reason: e.Reason, Attempts: e.Attempts, LastError: e.Error,
		FirstFailedAt: e.FirstFailedAt, FailedAt: e.FailedAt, Worker: e.Worker,
		Payload: payload, Headers: h, Sequence: e.Sequence,
	}
}

// DeadJobs yields the dead jobs matching f, oldest first. Stop early by breaking the loop.
func (c *Client) DeadJobs(ctx context.Context, f DLQFilter) iter.Seq2[DeadJob, error] {
	return func(yield func(DeadJob, error) bool) {
		err := c.q.EachDeadLetter(ctx, queue.DeadFilter{
			Kind: f.Kind, Reason: f.Reason, FailedAfter: f.Since, FailedBefore: f.Before,
		}, func(e queue.DeadLetterEntry) bool { return yield(deadJobFrom(e), nil) })
		if errors.Is(err, queue.ErrNoStream) {
			return // no DLQ yet: nothing is dead
		}
		if err != nil {
			yield(DeadJob{}, err)
		}
	}
}

// DeadJob returns the dead-letter entry of job id, or an error wrapping ErrJobNotFound.
func (c *Client) DeadJob(ctx context.Context, id string) (*DeadJob, error) {
	e, err := c.q.GetDeadLetter(ctx, id)
	if errors.Is(err, queue.ErrNotFound) || errors.Is(err, queue.ErrNoStream) {
		return nil, fmt.Errorf("%w: %s is not in the dead-letter queue", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	dj := deadJobFrom(*e)
	return &dj, nil
}

// ErrPayloadTruncated is returned by Replay for a dead job whose DLQ copy holds only the start
// of its payload (it was cut to fit the server's max_payload): replay it with a payload of its
// own (ReplayOptions.Payload).
var ErrPayloadTruncated = errors.New("the dead-letter copy holds only the start of the job's payload (cut to fit the server's max_payload): replay it with its full payload (--payload), which is checked against the key's stored hash")

// ReplayOptions are the choices of one replay.
type ReplayOptions struct {
	// Payload, when set, replaces the job's payload. If it differs from the original,
	// AllowPayloadChange must be set, and the key's stored payload hash is reset to it.
	Payload json.RawMessage
	// AllowPayloadChange permits a Payload that differs from the original.
	AllowPayloadChange bool
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	// KeyState is the key's state in the ledger before the replay: "dead" (revived with a
	// fresh attempt budget), "succeeded" (the effect already happened: the replayed job will
	// be acknowledged as a duplicate without running), or "" (no ledger row).
	KeyState string `json:"key_state"`
}

// Replay puts a dead job back in the work stream with a fresh attempt budget and the same id
// and idempotency key, then removes it from the DLQ. The ledger is updated first, so a job
// whose effect did happen is not done twice; the DLQ entry is removed only once the stream
// has stored the job again (a failed replay leaves it in place, to try again).
func (c *Client) Replay(ctx context.Context, dj DeadJob, opts ReplayOptions) (ReplayResult, error) {
	if c.ledger == nil {
		return ReplayResult{}, ErrDatabaseRequired
	}
	if n := dj.Headers[queue.HeaderPayloadTruncated]; n != "" && opts.Payload == nil {
		return ReplayResult{}, fmt.Errorf("replay %s (payload of %s bytes): %w", dj.ID, n, ErrPayloadTruncated)
	}
	payload := []byte(dj.Payload)
	if dj.Reason == "malformed" {
		if s, ok := unquote(dj.Payload); ok {
			payload = []byte(s)
		}
	}
	var newHash []byte
	if opts.Payload != nil {
		compact, err := queue.NewEnvelope(dj.Kind, dj.ID, dj.Key, opts.Payload, 0, c.q.MaxPayload())
		if err != nil {
			return ReplayResult{}, fmt.Errorf("replay %s: %w", dj.ID, err)
		}
		same := bytes.Equal(compact.Payload, compactOrRaw(payload))
		if dj.Headers[queue.HeaderPayloadTruncated] != "" {
			// The copy holds only the start of the payload: the key's stored hash says whether
			// this is the job's own.
			stored, err := c.ledger.PayloadHash(ctx, dj.Kind, dj.Key)
			if err != nil {
				return ReplayResult{}, fmt.Errorf("replay %s: %w", dj.ID, err)
			}
			sum := sha256.Sum256(compact.Payload)
			same = stored == nil || bytes.Equal(stored, sum[:])
		}
		if !same {
			if !opts.AllowPayloadChange {
				return ReplayResult{}, fmt.Errorf("replay %s: %w", dj.ID, ErrPayloadChange)
			}
			sum := sha256.Sum256(compact.Payload)
			newHash = sum[:]
		}
		payload = compact.Payload
	}
	maxAttempts, _ := strconv.Atoi(dj.Headers[queue.HeaderMaxAttempts])
	env, err := queue.NewEnvelope(dj.Kind, dj.ID, dj.Key, payload, maxAttempts, c.q.MaxPayload())
	if err != nil {
		return ReplayResult{}, fmt.Errorf("replay %s: %w (fix it with a new payload)", dj.ID, err)
	}
	env.FallbackOf = dj.Headers[queue.HeaderFallbackOf]
	// Another operator may have replayed or purged it meanwhile: touch nothing then.
	if cur, err := c.DeadJob(ctx, dj.ID); err != nil {
		return ReplayResult{}, err
	} else if cur.Sequence != dj.Sequence {
		return ReplayResult{}, fmt.Errorf("%w: %s was replayed or purged meanwhile", ErrJobNotFound, dj.ID)
	}
	before, owner, err := c.ledger.Revive(ctx, env.Kind, env.Key, env.ID, newHash)
	if err != nil {
		return ReplayResult{}, err
	}
	if before == "dead" && owner != env.ID {
		return ReplayResult{}, fmt.Errorf("%w: key %s is dead under job %s; replay that job instead (this one would only be recorded as its duplicate)",
			ErrKeyDeadElsewhere, env.Key, owner)
	}
	if err := c.ensureStreams(ctx); err != nil {
		return ReplayResult{}, err
	}
	if err := c.q.Replay(ctx, env, fmt.Sprintf("replay:%s:%d", env.ID, dj.Sequence)); err != nil {
		return ReplayResult{}, translatePublish(err)
	}
	if err := c.q.DeleteDeadLetter(ctx, dj.Sequence); err != nil {
		return ReplayResult{}, fmt.Errorf("job %s was replayed but its DLQ entry remains: %w", dj.ID, err)
	}
	return ReplayResult{KeyState: string(before)}, nil
}

// Purge removes a dead job from the DLQ for good. The ledger keeps its row until the reaper's
// retention passes.
func (c *Client) Purge(ctx context.Context, dj DeadJob) error {
	err := c.q.DeleteDeadLetter(ctx, dj.Sequence)
	if errors.Is(err, queue.ErrNotFound) {
		return fmt.Errorf("%w: %s is no longer in the dead-letter queue", ErrJobNotFound, dj.ID)
	}
	return err
}

func unquote(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func compactOrRaw(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}
