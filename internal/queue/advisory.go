package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MaxDeliveries captures JetStream's max-deliveries advisories for the work stream into the
// stream <NS>_ADVISORIES, so that a job whose deliveries ran out (it crashed workers, or was
// never claimed) is not stranded in the work stream: a worker reads each advisory, dead-letters
// the job with reason max_deliveries, and removes it from the work stream (design rule 6).
type MaxDeliveries struct {
	q    *Queue
	cons jetstream.Consumer
}

// Advisory is one max-deliveries advisory.
type Advisory struct {
	// Seq is the job message's sequence in the work stream; Deliveries how often it was
	// delivered.
	Seq        uint64
	Deliveries uint64
	msg        jetstream.Msg
}

// Ack removes the advisory once its job is dealt with. An Advisory made by hand (the sweep
// of stranded messages settles its candidates as advisories) has nothing to ack.
func (a *Advisory) Ack() error {
	if a.msg == nil {
		return nil
	}
	return a.msg.Ack()
}

// Nak hands the advisory back for another try after delay.
func (a *Advisory) Nak(delay time.Duration) error {
	if a.msg == nil {
		return nil
	}
	return a.msg.NakWithDelay(delay)
}

// AdvisoryAckWait is how long a worker may hold a max-deliveries advisory before the server
// hands it to another: a worker that dies holding one (a poison job crashes workers, and the
// advisories of its bystanders arrive meanwhile) delays those jobs by this much. Settling one
// advisory takes a few round trips; the worker bounds it well below this.
const AdvisoryAckWait = 20 * time.Second

// WatchMaxDeliveries creates (if missing) the capture stream and a durable consumer on it.
func (q *Queue) WatchMaxDeliveries(ctx context.Context) (*MaxDeliveries, error) {
	name := q.names.AdvisoriesStream()
	err := q.ensureStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "Levee: max-deliveries advisories of " + q.names.JobsStream(),
		Subjects:    []string{q.names.AdvisorySubject()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      7 * 24 * time.Hour,
		Replicas:    q.stream.Replicas,
	})
	if err != nil {
		return nil, err
	}
	cons, err := q.js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{
		Durable:   q.names.AdvisoryConsumer(),
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   AdvisoryAckWait,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer on %s: %w", name, Translate(err))
	}
	return &MaxDeliveries{q: q, cons: cons}, nil
}

// Fetch returns the advisories that arrive within maxWait (up to n).
func (m *MaxDeliveries) Fetch(ctx context.Context, n int, maxWait time.Duration) ([]*Advisory, error) {
	batch, err := m.cons.Fetch(n, jetstream.FetchMaxWait(maxWait))
	if err != nil {
		return nil, Translate(err)
	}
	var out []*Advisory
	for msg := range batch.Messages() {
		var body struct {
			Stream     string `json:"stream"`
			StreamSeq  uint64 `json:"stream_seq"`
			Deliveries uint64 `json:"deliveries"`
		}
		if err := json.Unmarshal(msg.Data(), &body); err != nil || body.StreamSeq == 0 ||
			body.Stream != m.q.names.JobsStream() {
			// Not an advisory we understand, or one of another stream (a capture stream made
			// by hand with wider subjects): its sequence is no work-stream message's.
			_ = msg.Term()
			continue
		}
		out = append(out, &Advisory{Seq: body.StreamSeq, Deliveries: body.Deliveries, msg: msg})
	}
	if err := batch.Error(); err != nil && len(out) == 0 && ctx.Err() == nil {
		return nil, Translate(err)
	}
	return out, nil
}

// StoredJob is a job message read from the work stream by sequence.
type StoredJob struct {
	Env       Envelope
	DecodeErr error
	Data      []byte
	Header    map[string][]string
	Seq       uint64
}

// JobAt reads the work-stream message with sequence seq, or ErrNotFound when it is gone
// (acked or deleted since).
func (q *Queue) JobAt(ctx context.Context, seq uint64) (*StoredJob, error) {
	stream, err := q.js.Stream(ctx, q.names.JobsStream())
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", q.names.JobsStream(), Translate(err))
	}
	raw, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return nil, Translate(err)
	}
	env, derr := q.names.Decode(raw.Subject, raw.Header, raw.Data, raw.Time, q.maxPayload)
	return &StoredJob{Env: env, DecodeErr: derr, Data: raw.Data, Header: raw.Header, Seq: seq}, nil
}

// DeleteJob removes the work-stream message with sequence seq; one already gone is no error.
func (q *Queue) DeleteJob(ctx context.Context, seq uint64) error {
	stream, err := q.js.Stream(ctx, q.names.JobsStream())
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", q.names.JobsStream(), Translate(err))
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil {
		if _, gerr := stream.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return nil // already gone
		}
		return fmt.Errorf("delete job message %d: %w", seq, Translate(err))
	}
	return nil
}
