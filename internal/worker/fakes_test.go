package worker

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// The fakes below stand in for the ledger, JetStream and a message, so that the engine's
// rules are tested without servers (the integration tests in the root package and the chaos
// suite run the real ones).

// fakeClock is a clock whose time moves only when the test says so.
type fakeClock struct {
	mu        sync.Mutex
	now       time.Time
	suspended time.Duration // boot-clock time the machine spent suspended
	calls     []*fakeCall
}

type fakeCall struct {
	at      time.Time
	f       func()
	stopped bool
}

func (c *fakeCall) Stop() bool {
	was := !c.stopped
	c.stopped = true
	return was
}

var fakeEpoch = time.Unix(1_000_000, 0)

func newFakeClock() *fakeClock { return &fakeClock{now: fakeEpoch} }

func (c *fakeClock) Stamp() stamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return stamp{mono: c.now, boot: c.now.Sub(fakeEpoch) + c.suspended}
}

// Suspend moves the boot clock on by d, but not the monotonic clock, and runs nothing: a
// machine suspended and resumed.
func (c *fakeClock) Suspend(d time.Duration) {
	c.mu.Lock()
	c.suspended += d
	c.mu.Unlock()
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	call := &fakeCall{at: c.now.Add(d), f: f}
	c.calls = append(c.calls, call)
	return call
}

// Set moves time to t without running anything: a process woken after being frozen, its
// timers not yet run.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// Advance moves time on by d and runs, in time order, every call that falls due (including
// calls scheduled by those calls).
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.calls, func(i, j int) bool { return c.calls[i].at.Before(c.calls[j].at) })
		var due *fakeCall
		for i, call := range c.calls {
			if !call.at.After(end) {
				due = call
				c.calls = append(c.calls[:i], c.calls[i+1:]...)
				break
			}
		}
		if due == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		if due.at.After(c.now) {
			c.now = due.at
		}
		c.mu.Unlock()
		if !due.stopped {
			due.f()
		}
	}
}

// fakeMsg records what was done with a message.
type fakeMsg struct {
	mu         sync.Mutex
	acks       int
	naks       []time.Duration
	terms      []string
	inProgress int
}

func (m *fakeMsg) Ack() error { m.mu.Lock(); m.acks++; m.mu.Unlock(); return nil }
func (m *fakeMsg) Nak(d time.Duration) error {
	m.mu.Lock()
	m.naks = append(m.naks, d)
	m.mu.Unlock()
	return nil
}

func (m *fakeMsg) Term(reason string) error {
	m.mu.Lock()
	m.terms = append(m.terms, reason)
	m.mu.Unlock()
	return nil
}

func (m *fakeMsg) InProgress() error {
	m.mu.Lock()
	m.inProgress++
	m.mu.Unlock()
	return nil
}
func (m *fakeMsg) Data() []byte                 { return []byte(`{}`) }
func (m *fakeMsg) Headers() map[string][]string { return map[string][]string{} }

func (m *fakeMsg) snapshot() (acks int, naks []time.Duration, terms []string, inProgress int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acks, append([]time.Duration(nil), m.naks...), append([]string(nil), m.terms...), m.inProgress
}

// fakeLedger answers the engine's ledger calls from functions the test sets.
type fakeLedger struct {
	mu         sync.Mutex
	finishFunc func(outs []idempotency.Outcome) ([]bool, error)
	finished   [][]idempotency.Outcome                          // every Finish call's outcomes
	beatFunc   func(leases []idempotency.Lease) ([]bool, error) // alive per lease
	beats      int
	records    []idempotency.Record
	recordErr  error
}

func (l *fakeLedger) Claim(context.Context, []idempotency.ClaimRequest) ([]idempotency.ClaimResult, error) {
	return nil, errors.New("fake ledger: no claims")
}

func (l *fakeLedger) Heartbeat(_ context.Context, leases []idempotency.Lease, _ time.Duration) ([]idempotency.LeaseStatus, error) {
	l.mu.Lock()
	l.beats++
	f := l.beatFunc
	l.mu.Unlock()
	status := make([]idempotency.LeaseStatus, len(leases))
	for i := range status {
		status[i] = idempotency.LeaseExtended
	}
	if f == nil {
		return status, nil
	}
	alive, err := f(leases)
	if err != nil {
		return nil, err
	}
	for i, ok := range alive {
		if !ok {
			status[i] = idempotency.LeaseLost
		}
	}
	return status, nil
}

func (l *fakeLedger) Finish(_ context.Context, outs []idempotency.Outcome) ([]bool, error) {
	l.mu.Lock()
	l.finished = append(l.finished, append([]idempotency.Outcome(nil), outs...))
	f := l.finishFunc
	l.mu.Unlock()
	if f == nil {
		applied := make([]bool, len(outs))
		for i := range applied {
			applied[i] = true
		}
		return applied, nil
	}
	return f(outs)
}

func (l *fakeLedger) FinishTx(context.Context, pgx.Tx, []idempotency.Outcome) ([]bool, error) {
	return nil, errors.New("fake ledger: no transactions")
}

func (l *fakeLedger) Begin(context.Context) (pgx.Tx, error) {
	return nil, errors.New("fake ledger: no transactions")
}

func (l *fakeLedger) AddRecords(_ context.Context, recs []idempotency.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.recordErr != nil {
		return l.recordErr
	}
	l.records = append(l.records, recs...)
	return nil
}

func (l *fakeLedger) Status(context.Context, string) (*idempotency.JobStatus, error) {
	return nil, idempotency.ErrNotFound
}
func (l *fakeLedger) MarkSolo(context.Context, string, string, uint64) error { return nil }
func (l *fakeLedger) UnmarkSolo(context.Context, string, uint64) error       { return nil }
func (l *fakeLedger) Ping(context.Context) error                             { return nil }
func (l *fakeLedger) DropIdle(context.Context)                               {}

func (l *fakeLedger) finishCalls() [][]idempotency.Outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]idempotency.Outcome(nil), l.finished...)
}

// fakeQueue records dead-letter copies and publishes.
type fakeQueue struct {
	mu        sync.Mutex
	copies    []queue.DeadInfo
	copyErr   error
	published []queue.Envelope
}

func (q *fakeQueue) DeadLetter(_ context.Context, _ queue.Envelope, _ []byte, _ nats.Header, info queue.DeadInfo) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.copyErr != nil {
		return q.copyErr
	}
	q.copies = append(q.copies, info)
	return nil
}

func (q *fakeQueue) DeadLettered(context.Context, string, string) (bool, error) { return false, nil }

func (q *fakeQueue) Publish(_ context.Context, env queue.Envelope) (queue.PublishResult, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.published = append(q.published, env)
	return queue.PublishResult{}, nil
}

// rig is a kind runner on fakes, its committer running.
type rig struct {
	k      *kindRunner
	ledger *fakeLedger
	queue  *fakeQueue
	clock  *fakeClock
	hard   context.CancelFunc
}

func newRig(t *testing.T, policy executor.Policy) *rig {
	t.Helper()
	fl, fq, fc := &fakeLedger{}, &fakeQueue{}, newFakeClock()
	w := &Worker{cfg: Config{ID: "w1", MaxBatch: 64}, log: slog.New(slog.DiscardHandler), gate: newSoloGate()}
	w.committer = newCommitter(fl, nil, 64)
	go w.committer.run()
	t.Cleanup(w.committer.close)
	pl, err := executor.NewPipeline(policy)
	require.NoError(t, err)
	kind := Kind{Name: "charge", Policy: leveetype.Policy{AckWait: 3 * time.Second, MaxDeliveries: 100}}
	hard, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var attempts sync.WaitGroup
	k := &kindRunner{
		w: w, kind: kind, pipeline: pl, ledger: fl, queue: fq, log: w.log, hardCtx: hard, runCtx: hard, attempts: &attempts,
		leases: &leaseKeeper{times: newLeaseTimes(kind.Policy.AckWait), clock: fc, ledger: fl, log: w.log, held: map[*attempt]struct{}{}},
	}
	return &rig{k: k, ledger: fl, queue: fq, clock: fc, hard: cancel}
}

// newAttempt is a claimed attempt of a job with a fake message, registered with the lease
// keeper as if its claim had been sent now.
func (r *rig) newAttempt(id string, number int) (*attempt, *fakeMsg, *context.Context) {
	m := &fakeMsg{}
	j := &job{msg: m, env: queue.Envelope{ID: id, Kind: "charge", Key: id, Payload: []byte(`{}`)}, delivered: 1, seq: 7}
	ctx, cancel := context.WithCancelCause(context.Background())
	a := &attempt{j: j, fence: 3, number: number, cancel: cancel, gate: newSoloGate()} // a gate of its own: unhold counts nothing of the rig's
	r.k.leases.register(a, r.clock.Stamp(), r.clock.Stamp())
	return a, m, &ctx
}

// pgErr is a Postgres error with the given SQLSTATE.
func pgErr(code string) error { return &pgconn.PgError{Code: code, Message: "fake " + code} }
