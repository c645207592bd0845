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

// Stray messages (design rule 35). The work stream takes every subject under <ns>.jobs.>, but
// a kind's consumer matches only <ns>.jobs.<kind>.*: a message on <ns>.jobs.<kind> (no id
// token) or on <ns>.jobs.<kind>.<id>.<more> (tokens after the id) matches no kind's consumer
// and would stay in the work stream forever, unseen. Two consumers of their own take them:
//
//	<ns>__strays_noid   filter <ns>.jobs.*       (3 tokens: no id)
//	<ns>__strays_extra  filter <ns>.jobs.*.*.>   (5 tokens or more)
//
// Neither overlaps a kind's filter <ns>.jobs.<kind>.* (4 tokens), which a work-queue stream
// requires of its consumers, on NATS 2.9.10 and later alike. The names cannot be a kind's
// consumer's (<ns>_<kind>: a kind starts with a letter or digit). Every worker reads both
// (the work-queue consumers hand each message to one) and dead-letters each stray as
// malformed. A 4-token subject whose kind token is no valid kind (<ns>.jobs.Charge.1) cannot
// get a consumer of its own without overlapping every kind's: such messages are counted by
// WorkStats but left in the stream.

// StrayKind is the reserved kind under which a stray whose kind token is no valid kind is
// dead-lettered (<ns>.jobs.Charge, say). Strays with a valid kind token are dead-lettered
// under that kind.
const StrayKind = "levee-stray"

// strayAckWait is how long a worker may hold a stray before the server hands it to another.
const strayAckWait = 30 * time.Second

func (n Names) isStrayConsumer(name string) bool {
	for _, c := range n.StrayConsumers() {
		if c[0] == name {
			return true
		}
	}
	return false
}

// StrayReader reads the stray messages of the work stream (see StrayKind). It is safe for
// concurrent use.
type StrayReader struct {
	q    *Queue
	cons [2]jetstream.Consumer
}

// OpenStrays creates (or updates) the two stray consumers and returns a reader on them.
func (q *Queue) OpenStrays(ctx context.Context) (*StrayReader, error) {
	r := &StrayReader{q: q}
	for i, c := range q.names.StrayConsumers() {
		cons, err := q.js.CreateOrUpdateConsumer(ctx, q.names.JobsStream(), jetstream.ConsumerConfig{
			Durable:       c[0],
			Description:   "Levee: messages on " + c[1] + ", which match no kind's consumer; workers dead-letter them as malformed",
			FilterSubject: c[1],
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       strayAckWait,
			MaxDeliver:    -1, // never stranded: a failed dead-lettering is retried until it lands
			MaxAckPending: 1000,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return nil, fmt.Errorf("create consumer %s on %s: %w", c[0], q.names.JobsStream(), Translate(err))
		}
		r.cons[i] = cons
	}
	return r, nil
}

// Stray is one stray message, with the name it is dead-lettered under.
type Stray struct {
	msg jetstream.Msg
	// Env names the stray for its dead-letter copy: ID "stray-<stream seq>-<stored, Unix ms>"
	// (stable across redeliveries), Kind the subject's kind token when it is a valid kind,
	// else StrayKind, Key the ID.
	Env Envelope
	// Subject is the message's subject; Problem says what is wrong with it, and how to
	// publish instead.
	Subject string
	Problem string
	Seq     uint64
	Data    []byte
	Header  nats.Header
}

// Fetch returns up to n strays of each consumer, waiting at most maxWait in all.
func (r *StrayReader) Fetch(ctx context.Context, n int, maxWait time.Duration) ([]*Stray, error) {
	var (
		out  []*Stray
		errs []error
	)
	for _, cons := range r.cons {
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(max(maxWait/2, 100*time.Millisecond)))
		if err != nil {
			errs = append(errs, Translate(err))
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			out = append(out, r.q.newStray(msg))
		}
		if err := batch.Error(); err != nil && got == 0 && ctx.Err() == nil &&
			!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, Translate(err))
		}
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("fetch stray messages: %w", errors.Join(errs...))
	}
	return out, nil
}

func (q *Queue) newStray(msg jetstream.Msg) *Stray {
	s := &Stray{msg: msg, Subject: msg.Subject(), Data: msg.Data(), Header: msg.Headers()}
	var stored time.Time
	if md, err := msg.Metadata(); err == nil {
		s.Seq, stored = md.Sequence.Stream, md.Timestamp
	}
	kind, problem := q.names.strayProblem(s.Subject)
	id := BoundedID("stray-" + strconv.FormatUint(s.Seq, 10) + "-" + strconv.FormatInt(stored.UnixMilli(), 10))
	s.Env = Envelope{ID: id, Kind: kind, Key: id, EnqueuedAt: stored}
	s.Problem = problem
	return s
}

// strayProblem returns the kind a stray on subject is dead-lettered under, and what is wrong
// with the subject.
func (n Names) strayProblem(subject string) (kind, problem string) {
	rest := strings.TrimPrefix(subject, n.jobsPrefix())
	tokens := strings.Split(rest, ".")
	kind = StrayKind
	if ValidateKind(tokens[0]) == nil {
		kind = tokens[0]
	}
	want := n.jobsPrefix() + "<kind>.<id>"
	switch {
	case len(tokens) == 1:
		problem = fmt.Sprintf("subject %s has no job id token: publish on %s", subject, want)
	case len(tokens) > 2:
		problem = fmt.Sprintf("subject %s has tokens after the job id: publish on %s", subject, want)
	default:
		problem = fmt.Sprintf("subject %s is no job's: publish on %s", subject, want)
	}
	if kind == StrayKind {
		problem += fmt.Sprintf(" (%q is no valid kind, so it is dead-lettered under kind %s)", tokens[0], StrayKind)
	}
	return kind, problem
}

// Ack removes the stray from the work stream and waits for the server to confirm it.
func (s *Stray) Ack(ctx context.Context) error {
	if err := s.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("ack stray message %d: %w", s.Seq, Translate(err))
	}
	return nil
}

// Nak hands the stray back for another try after delay.
func (s *Stray) Nak(delay time.Duration) error { return s.msg.NakWithDelay(delay) }
