package admin

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

	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// DeadJobListParams selects dead jobs; zero fields select all.
type DeadJobListParams struct {
	Kind   string
	Reason string
	// Since keeps jobs that died at or after it; Before keeps jobs that died before it.
	Since  time.Time
	Before time.Time
	// WithoutPayloads reads the entries' headers only: their Payload is empty. A listing that
	// shows no payload reads a fraction of the stream.
	WithoutPayloads bool
}

// ErrDatabaseRequired is returned by calls that need the ledger on a Client made without a
// database.
var ErrDatabaseRequired = core.ErrDatabaseRequired

// ErrKeyDeadElsewhere is returned by DeadJobReplay for a job whose key died under another job:
// replaying this one would change nothing, so it stays in the DLQ.
var ErrKeyDeadElsewhere = errors.New("the job's key is dead under another job")

// ErrPayloadChange is returned by DeadJobReplay when a new payload differs from the job's and
// DeadJobReplayParams.AllowPayloadChange is not set: the key's effect is bound to its payload.
var ErrPayloadChange = errors.New("the new payload differs from the job's: its idempotency key is bound to the old one (allow the change explicitly to reset it)")

// DeadJobList yields the dead jobs matching f, oldest first. Stop early by breaking the loop.
func (c *Client) DeadJobList(ctx context.Context, f DeadJobListParams) iter.Seq2[leveetype.DeadJob, error] {
	return func(yield func(leveetype.DeadJob, error) bool) {
		err := c.conn.Q.EachDeadLetter(ctx, queue.DeadFilter{
			Kind: f.Kind, Reason: f.Reason, FailedAfter: f.Since, FailedBefore: f.Before, HeadersOnly: f.WithoutPayloads,
		}, func(e queue.DeadLetter) bool { return yield(e.DeadJob, nil) })
		if errors.Is(err, queue.ErrNoStream) {
			return // no DLQ yet: nothing is dead
		}
		if err != nil {
			yield(leveetype.DeadJob{}, err)
		}
	}
}

// DeadJobGet returns the dead-letter entry of job id, or an error wrapping ErrNotFound.
func (c *Client) DeadJobGet(ctx context.Context, id string) (*leveetype.DeadJob, error) {
	e, err := c.conn.Q.GetDeadLetter(ctx, id)
	if errors.Is(err, queue.ErrNotFound) || errors.Is(err, queue.ErrNoStream) {
		return nil, fmt.Errorf("%w: %s is not in the dead-letter queue", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return &e.DeadJob, nil
}

// ErrPayloadTruncated is returned by DeadJobReplay for a dead job whose DLQ copy holds only the start
// of its payload (it was cut to fit the server's max_payload): replay it with a payload of its
// own (DeadJobReplayParams.Payload).
var ErrPayloadTruncated = errors.New("the dead-letter copy holds only the start of the job's payload (cut to fit the server's max_payload): replay it with its full payload (--payload), which is checked against the key's stored hash")

// DeadJobReplayParams are the choices of one replay.
type DeadJobReplayParams struct {
	// Payload, when set, replaces the job's payload. If it differs from the original,
	// AllowPayloadChange must be set, and the key's stored payload hash is reset to it.
	Payload json.RawMessage
	// AllowPayloadChange permits a Payload that differs from the original.
	AllowPayloadChange bool
	// By is who replays: it is kept on the "replayed" entry of the job's attempts.
	By leveetype.Actor
}

// DeadJobReplayResult says what a replay did.
type DeadJobReplayResult struct {
	// KeyState is the key's state in the ledger before the replay: "dead" (revived with a
	// fresh attempt budget), "succeeded" (the effect already happened: the replayed job will
	// be acknowledged as a duplicate without running), or "" (no ledger row).
	KeyState string `json:"key_state"`
}

// DeadJobReplay puts a dead job back in the work stream with a fresh attempt budget and the same id
// and idempotency key, then removes it from the DLQ. The ledger is updated first, so a job
// whose effect did happen is not done twice; the DLQ entry is removed only once the stream
// has stored the job again (a failed replay leaves it in place, to try again).
func (c *Client) DeadJobReplay(ctx context.Context, dj leveetype.DeadJob, opts DeadJobReplayParams) (DeadJobReplayResult, error) {
	if c.conn.Ledger == nil {
		return DeadJobReplayResult{}, ErrDatabaseRequired
	}
	if n := dj.Headers[queue.HeaderPayloadTruncated]; n != "" && opts.Payload == nil {
		return DeadJobReplayResult{}, fmt.Errorf("replay %s (payload of %s bytes): %w", dj.ID, n, ErrPayloadTruncated)
	}
	payload := []byte(dj.Payload)
	if dj.Reason == "malformed" {
		if s, ok := unquote(dj.Payload); ok {
			payload = []byte(s)
		}
	}
	var newHash []byte
	if opts.Payload != nil {
		compact, err := queue.NewEnvelope(dj.Kind, dj.ID, dj.Key, opts.Payload, 0, c.conn.Q.MaxPayload())
		if err != nil {
			return DeadJobReplayResult{}, fmt.Errorf("replay %s: %w", dj.ID, err)
		}
		same := bytes.Equal(compact.Payload, compactOrRaw(payload))
		if dj.Headers[queue.HeaderPayloadTruncated] != "" {
			// The copy holds only the start of the payload: the key's stored hash says whether
			// this is the job's own.
			stored, err := c.conn.Ledger.PayloadHash(ctx, dj.Kind, dj.Key)
			if err != nil {
				return DeadJobReplayResult{}, fmt.Errorf("replay %s: %w", dj.ID, err)
			}
			sum := sha256.Sum256(compact.Payload)
			same = stored == nil || bytes.Equal(stored, sum[:])
		}
		if !same {
			if !opts.AllowPayloadChange {
				return DeadJobReplayResult{}, fmt.Errorf("replay %s: %w", dj.ID, ErrPayloadChange)
			}
			sum := sha256.Sum256(compact.Payload)
			newHash = sum[:]
		}
		payload = compact.Payload
	}
	maxAttempts, _ := strconv.Atoi(dj.Headers[queue.HeaderMaxAttempts])
	env, err := queue.NewEnvelope(dj.Kind, dj.ID, dj.Key, payload, maxAttempts, c.conn.Q.MaxPayload())
	if err != nil {
		return DeadJobReplayResult{}, fmt.Errorf("replay %s: %w (fix it with a new payload)", dj.ID, err)
	}
	env.FallbackOf = dj.Headers[queue.HeaderFallbackOf]
	// Another operator may have replayed or purged it meanwhile: touch nothing then.
	if cur, err := c.DeadJobGet(ctx, dj.ID); err != nil {
		return DeadJobReplayResult{}, err
	} else if cur.Sequence != dj.Sequence {
		return DeadJobReplayResult{}, fmt.Errorf("%w: %s was replayed or purged meanwhile", ErrNotFound, dj.ID)
	}
	before, owner, err := c.conn.Ledger.Revive(ctx, env.Kind, env.Key, env.ID, newHash, string(opts.By))
	if err != nil {
		return DeadJobReplayResult{}, err
	}
	if before == "dead" && owner != env.ID {
		return DeadJobReplayResult{}, fmt.Errorf("%w: key %s is dead under job %s; replay that job instead (this one would only be recorded as its duplicate)",
			ErrKeyDeadElsewhere, env.Key, owner)
	}
	if err := c.conn.EnsureStreams(ctx); err != nil {
		return DeadJobReplayResult{}, err
	}
	if err := c.conn.Q.Replay(ctx, env, fmt.Sprintf("replay:%s:%d", env.ID, dj.Sequence)); err != nil {
		return DeadJobReplayResult{}, core.TranslatePublish(err)
	}
	if err := c.conn.Q.DeleteDeadLetter(ctx, dj.Sequence); err != nil {
		return DeadJobReplayResult{}, fmt.Errorf("job %s was replayed but its DLQ entry remains: %w", dj.ID, err)
	}
	return DeadJobReplayResult{KeyState: string(before)}, nil
}

// DeadJobPurge removes a dead job from the DLQ for good. The ledger keeps its row until the reaper's
// retention passes.
func (c *Client) DeadJobPurge(ctx context.Context, dj leveetype.DeadJob) error {
	err := c.conn.Q.DeleteDeadLetter(ctx, dj.Sequence)
	if errors.Is(err, queue.ErrNotFound) {
		return fmt.Errorf("%w: %s is no longer in the dead-letter queue", ErrNotFound, dj.ID)
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
