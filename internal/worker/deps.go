package worker

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// The kind runner reaches its collaborators through these small interfaces, so that its
// rules (claim, attempt, settle, dead-letter) are tested without servers. *idempotency.Ledger
// and *queue.Queue satisfy them; Config still takes the concrete types, which the rest of the
// worker (consumers, fleet, control) needs.

// ledgerPort is what a kind runner needs of the ledger.
type ledgerPort interface {
	Claim(ctx context.Context, reqs []idempotency.ClaimRequest) ([]idempotency.ClaimResult, error)
	Heartbeat(ctx context.Context, leases []idempotency.Lease, d time.Duration) ([]idempotency.LeaseStatus, error)
	Finish(ctx context.Context, outs []idempotency.Outcome) ([]bool, error)
	FinishTx(ctx context.Context, tx pgx.Tx, outs []idempotency.Outcome) ([]bool, error)
	Begin(ctx context.Context) (pgx.Tx, error)
	AddRecords(ctx context.Context, recs []idempotency.Record) error
	Status(ctx context.Context, id string) (*idempotency.JobStatus, error)
	MarkSolo(ctx context.Context, jobID, kind string, seq uint64) error
	UnmarkSolo(ctx context.Context, jobID string, seq uint64) error
	Ping(ctx context.Context) error
	DropIdle(ctx context.Context)
}

// queuePort is what a kind runner needs of JetStream beyond its own messages.
type queuePort interface {
	DeadLetter(ctx context.Context, env queue.Envelope, raw []byte, hdr nats.Header, info queue.DeadInfo) error
	DeadLettered(ctx context.Context, kind, id string) (bool, error)
	Publish(ctx context.Context, env queue.Envelope) (queue.PublishResult, error)
}

// message is one delivered message's acknowledgements (*queue.Delivery).
type message interface {
	Ack() error
	Nak(delay time.Duration) error
	Term(reason string) error
	InProgress() error
	Data() []byte
	Headers() map[string][]string
}

var (
	_ ledgerPort = (*idempotency.Ledger)(nil)
	_ queuePort  = (*queue.Queue)(nil)
	_ message    = (*queue.Delivery)(nil)
)

// job is one delivered message as the engine handles it.
type job struct {
	msg message
	env queue.Envelope
	// decodeErr wraps queue.ErrMalformed when the message cannot be a job; env then holds
	// what could be read.
	decodeErr error
	// delivered counts deliveries of the message, this one included; seq is its sequence in
	// the work stream.
	delivered, seq uint64
	// trial is set when the message was admitted while the kind's breaker was half-open: its
	// breaker permit is a trial (takeSlot).
	trial bool
}

func newJob(d *queue.Delivery) *job {
	return &job{msg: d, env: d.Env, decodeErr: d.DecodeErr, delivered: d.NumDelivered, seq: d.StreamSeq}
}

func newJobs(ds []*queue.Delivery) []*job {
	js := make([]*job, len(ds))
	for i, d := range ds {
		js[i] = newJob(d)
	}
	return js
}
