package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stranded messages whose advisory was lost (design rule 6).
//
// When a message of a kind has been delivered MaxDeliver times without an ack, the server
// stops delivering it and sends a max-deliveries advisory, which Levee captures in a stream
// and settles (MaxDeliveries). The advisory is sent once, to whoever listens at that moment:
// one sent while the capture stream is missing, full or unreachable is lost, and its message
// would stay in the work stream forever, delivered to nobody. A periodic sweep finds such
// messages. The server does not tell a message's delivery count, so the sweep reads what it
// does tell, the consumer's state, and picks candidates conservatively.
//
// What the server does with a message past MaxDeliver (nats-server 2.9.10 and 2.15 alike): when
// it would deliver the message once more (a pull finds it due for redelivery; 2.15 also when
// the AckWait of its last delivery expires), it deletes the message's entry from the
// consumer's pending map, sends the advisory, and never delivers it again. The message itself
// stays in the stream. The ack floor (AckFloor.Stream, below which nothing is pending) then
// moves past it: 2.15 moves it at once when the message was the lowest pending; both move it
// on the next ack of the lowest pending message, or to the last delivered one when nothing is
// pending.
//
// A candidate is a message of the kind that is still in the work stream and
//   - was delivered at least once: its sequence is at or below the consumer's
//     Delivered.Stream (a filtered consumer delivers in sequence order);
//   - is not pending on the consumer: its sequence is at or below the ack floor, or the
//     consumer has nothing pending at all (NumAckPending 0);
//   - was stored longer ago than a threshold well above the time its deliveries can take
//     (the worker's, by default max(10m, 3 × max_deliveries × ack_wait)).
//
// A healthy message cannot meet the second condition: a message being worked on, waiting for
// its retry (nakked with a delay) or waiting to be redelivered after its AckWait is pending.
// What remains is a message past MaxDeliver, or one acked or terminated a moment ago whose
// removal from the stream has not landed yet. And should a healthy job be picked anyway, the
// worker settles a candidate exactly as it settles an advisory: a job whose key is healthy
// (retrying, or running under a live lease) is published again as a new message and the old
// one deleted, so the attempt that runs finishes and its outcome stands (the new message is
// then acked as a duplicate of it); a key that succeeded makes it a duplicate. A message
// stranded above the ack floor, behind a lower message still pending, waits for that one to
// settle.

// StrandedCandidates returns, oldest first, up to limit stream sequences of kind's messages
// that are candidates (see above) stored before storedBefore. It reads the kind's consumer
// info and then the stream with direct gets of the next message on the kind's subjects (a
// message get with next_by_subj, which NATS 2.9.10 supports), stopping at the first message
// that is no candidate: the ones after it are younger, or not delivered, or above the ack
// floor too. It returns no candidates when the kind has no consumer.
func (q *Queue) StrandedCandidates(ctx context.Context, kind string, storedBefore time.Time, limit int) ([]uint64, error) {
	if err := ValidateKind(kind); err != nil {
		return nil, err
	}
	stream, err := q.js.Stream(ctx, q.names.JobsStream())
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", q.names.JobsStream(), Translate(err))
	}
	cons, err := stream.Consumer(ctx, q.names.Consumer(kind))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up consumer %s: %w", q.names.Consumer(kind), Translate(err))
	}
	ci := cons.CachedInfo()
	top := ci.Delivered.Stream // delivered at least once
	if ci.NumAckPending > 0 {
		top = min(top, ci.AckFloor.Stream) // and not pending
	}
	var out []uint64
	seq := max(stream.CachedInfo().State.FirstSeq, 1)
	for len(out) < limit && seq <= top {
		raw, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(q.names.KindFilter(kind)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // none left
		}
		if err != nil {
			return out, fmt.Errorf("read %s: %w", q.names.JobsStream(), Translate(err))
		}
		if raw.Sequence > top || !raw.Time.Before(storedBefore) {
			break
		}
		out = append(out, raw.Sequence)
		seq = raw.Sequence + 1
	}
	return out, nil
}
