package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Puller pulls messages of one kind from its durable consumer. It is safe for concurrent use,
// though Levee pulls from one goroutine per kind so that admission stays exact.
type Puller struct {
	q    *Queue
	cons jetstream.Consumer
	kind string
}

// Kind returns the kind this puller serves.
func (p *Puller) Kind() string { return p.kind }

// Fetch pulls up to n messages, waiting at most maxWait, and hands them to handle as they
// arrive: every group of messages that arrived together is one call, so a lone message is
// handled at once rather than when the pull expires, and a burst is handled (and claimed) as
// one batch. It returns how many messages it handed over. Callers admit n jobs (slots, tokens)
// before calling Fetch: the backlog waits in the stream, not in the worker.
func (p *Puller) Fetch(ctx context.Context, n int, maxWait time.Duration, handle func([]*Delivery)) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	batch, err := p.cons.Fetch(n, jetstream.FetchMaxWait(maxWait))
	if err != nil {
		return 0, fmt.Errorf("fetch %d from %s: %w", n, p.q.names.Consumer(p.kind), Translate(err))
	}
	msgs := batch.Messages()
	total := 0
	group := make([]*Delivery, 0, n)
	for msg := range msgs {
		group = append(group, p.q.newDelivery(msg))
	more:
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					break more
				}
				group = append(group, p.q.newDelivery(m))
			default:
				break more
			}
		}
		total += len(group)
		handle(group)
		group = make([]*Delivery, 0, n-total)
	}
	if err := batch.Error(); err != nil && total == 0 && ctx.Err() == nil {
		return 0, fmt.Errorf("fetch %d from %s: %w", n, p.q.names.Consumer(p.kind), Translate(err))
	}
	return total, nil
}

// Delivery is one delivered message with its decoded envelope.
type Delivery struct {
	msg        jetstream.Msg
	termReason bool
	// Env is the job. When DecodeErr is set it holds what could be read (kind, id, key).
	Env Envelope
	// DecodeErr wraps ErrMalformed when the message cannot be a job.
	DecodeErr error
	// NumDelivered counts deliveries of this message, including this one.
	NumDelivered uint64
	// StreamSeq is the message's sequence in the work stream.
	StreamSeq uint64
}

func (q *Queue) newDelivery(msg jetstream.Msg) *Delivery {
	d := &Delivery{msg: msg, termReason: q.termReason}
	var ts time.Time
	if md, err := msg.Metadata(); err == nil {
		d.NumDelivered = md.NumDelivered
		d.StreamSeq = md.Sequence.Stream
		ts = md.Timestamp
	}
	d.Env, d.DecodeErr = q.names.Decode(msg.Subject(), msg.Headers(), msg.Data(), ts, q.maxPayload)
	return d
}

// Data returns the raw message body, as stored.
func (d *Delivery) Data() []byte { return d.msg.Data() }

// Ack removes the message from the work stream. It does not wait for the server's confirmation:
// Levee acks only after the ledger commit, and a lost ack is harmless (the redelivery finds the
// key finished and acks again).
func (d *Delivery) Ack() error { return d.msg.Ack() }

// Nak asks for redelivery after delay (0: at once).
func (d *Delivery) Nak(delay time.Duration) error {
	if delay <= 0 {
		return d.msg.Nak()
	}
	return d.msg.NakWithDelay(delay)
}

// Term stops redelivery. The reason travels with the server's advisory where the server
// supports it (2.10.4 and later); older servers get a plain Term, since they ignore a term that
// carries a reason.
func (d *Delivery) Term(reason string) error {
	if d.termReason && reason != "" {
		return d.msg.TermWithReason(reason)
	}
	return d.msg.Term()
}

// InProgress resets the server's AckWait timer for this message.
func (d *Delivery) InProgress() error { return d.msg.InProgress() }

// Headers returns the message's headers.
func (d *Delivery) Headers() map[string][]string { return d.msg.Headers() }

// Pending returns how many messages of the kind wait undelivered, and how many are
// delivered but not yet acknowledged, from the consumer's info.
func (p *Puller) Pending(ctx context.Context) (waiting, unacked uint64, err error) {
	info, err := p.cons.Info(ctx)
	if err != nil {
		return 0, 0, Translate(err)
	}
	return info.NumPending, uint64(info.NumAckPending), nil
}
