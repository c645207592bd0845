package queue

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublishResult is JetStream's answer to one job.
type PublishResult struct {
	Sequence uint64
	// Duplicate is true when the stream already held this job id (Nats-Msg-Id) within its
	// deduplication window. That is success: the job is stored once.
	Duplicate bool
	// Err is set, for batch publishes, when this job was refused.
	Err error
}

// Publish stores one job and waits for the stream's acknowledgement.
func (q *Queue) Publish(ctx context.Context, env Envelope) (PublishResult, error) {
	m := q.names.Msg(env)
	if err := q.fitsServer(env, m); err != nil {
		return PublishResult{}, err
	}
	ack, err := q.js.PublishMsg(ctx, m, jetstream.WithExpectStream(q.names.JobsStream()))
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish job %s: %w", env.ID, Translate(err))
	}
	return PublishResult{Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// PublishBatch publishes envs asynchronously, up to the queue's pending window at once, and
// waits for every acknowledgement. results[i] answers envs[i]; a refused job has Err set and the
// others are still published. onAck, if not nil, is called once per job as its answer arrives,
// from this goroutine. The error is non-nil only when ctx ends first; jobs not yet answered then
// have Err set to the context's error.
func (q *Queue) PublishBatch(ctx context.Context, envs []Envelope, onAck func(i int, r PublishResult)) ([]PublishResult, error) {
	results := make([]PublishResult, len(envs))
	futures := make([]jetstream.PubAckFuture, len(envs))
	answered := func(i int, r PublishResult) {
		results[i] = r
		futures[i] = nil
		if onAck != nil {
			onAck(i, r)
		}
	}
	// collect takes the answer to job i; without block it returns false if none is there yet.
	collect := func(i int, block bool) (bool, error) {
		f := futures[i]
		if f == nil {
			return true, nil
		}
		var (
			ack *jetstream.PubAck
			err error
		)
		if block {
			select {
			case ack = <-f.Ok():
			case err = <-f.Err():
			case <-ctx.Done():
				return false, ctx.Err()
			}
		} else {
			select {
			case ack = <-f.Ok():
			case err = <-f.Err():
			default:
				return false, nil
			}
		}
		if err != nil {
			answered(i, PublishResult{Err: fmt.Errorf("publish job %s: %w", envs[i].ID, Translate(err))})
		} else {
			answered(i, PublishResult{Sequence: ack.Sequence, Duplicate: ack.Duplicate})
		}
		return true, nil
	}
	done := 0
	drain := func(upTo int) error {
		for ; done < upTo; done++ {
			if _, err := collect(done, true); err != nil {
				for i := done; i < len(envs); i++ {
					if futures[i] != nil || (results[i].Sequence == 0 && results[i].Err == nil) {
						results[i] = PublishResult{Err: err}
					}
				}
				return err
			}
		}
		return nil
	}
	publish := func(m *nats.Msg) (jetstream.PubAckFuture, error) {
		return q.js.PublishMsgAsync(m, jetstream.WithExpectStream(q.names.JobsStream()))
	}
	for i, env := range envs {
		if err := ctx.Err(); err != nil {
			return results, drainAfter(drain(i), err, results[i:])
		}
		m := q.names.Msg(env) // encoded once: checked, then sent (and sent again after a drain)
		if err := q.fitsServer(env, m); err != nil {
			answered(i, PublishResult{Err: err})
			continue
		}
		f, err := publish(m)
		if err != nil {
			// The pending window is full or the connection is down: wait for what is in
			// flight, then try this job once more.
			if err := drain(i); err != nil {
				return results, err
			}
			if f, err = publish(m); err != nil {
				answered(i, PublishResult{Err: fmt.Errorf("publish job %s: %w", env.ID, Translate(err))})
				continue
			}
		}
		futures[i] = f
		// Answers arrive mostly in order; take those already here so progress stays live.
		for done < i {
			ok, _ := collect(done, false)
			if !ok {
				break
			}
			done++
		}
	}
	return results, drain(len(envs))
}

// drainAfter returns the context error that stopped a batch, after marking unsent jobs.
func drainAfter(drainErr, ctxErr error, unsent []PublishResult) error {
	for i := range unsent {
		if unsent[i].Sequence == 0 && unsent[i].Err == nil {
			unsent[i].Err = ctxErr
		}
	}
	if drainErr != nil {
		return drainErr
	}
	return ctxErr
}

// Fits returns an error wrapping ErrPayloadTooLarge when env, as published, would be over the
// NATS server's max_payload: checked before a job is stored to be published later.
func (q *Queue) Fits(env Envelope) error { return q.fitsServer(env, q.names.Msg(env)) }

// fitsServer returns an error wrapping ErrPayloadTooLarge when m, the message of env, is over
// the NATS server's max_payload (which counts headers and payload together): the payload
// bound Levee applies (--max-payload, 1 MiB by default) can be above what the server takes
// once the job's headers are added, and the server's own refusal names neither.
func (q *Queue) fitsServer(env Envelope, m *nats.Msg) error {
	limit := q.nc.MaxPayload()
	if limit <= 0 {
		return nil
	}
	// WithExpectStream adds Nats-Expected-Stream when the message is sent.
	headers := headerSize(m) + len(jetstream.ExpectedStreamHeader) + len(": ") + len(q.names.JobsStream()) + len("\r\n")
	if int64(len(m.Data)+headers) <= limit {
		return nil
	}
	return fmt.Errorf("%w: job %s's payload is %d bytes, and the NATS server takes messages of at most %d bytes (max_payload), "+
		"of which the job's headers use %d: send at most %d bytes of payload, raise the server's max_payload, or store the data elsewhere and send a reference",
		ErrPayloadTooLarge, env.ID, len(m.Data), limit, headers, limit-int64(headers))
}
