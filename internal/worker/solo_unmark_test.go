package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
)

type unmarkLedger struct {
	*fakeLedger
	unmarks atomic.Int32
}

func (l *unmarkLedger) UnmarkSolo(context.Context, string, uint64) error {
	l.unmarks.Add(1)
	return nil
}

// A last chance whose handler succeeded but whose commit is given up (its worker lost Postgres
// past its lease at a hard shutdown, as here, or past the commit's patience) takes its "run
// alone" mark back: that run said nothing about the job (found by review).
func TestLastChanceWhoseCommitIsGivenUpIsUnmarked(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	ul := &unmarkLedger{fakeLedger: r.ledger}
	r.k.ledger = ul
	r.k.kind.Handler = func(ctx context.Context, att Attempt) ([]byte, error) {
		r.clock.Set(r.clock.Now().Add(r.k.leases.times.held() + time.Second)) // Postgres lost meanwhile...
		r.hard()                                                              // ...and the worker is stopping
		return []byte(`{"charged":true}`), nil
	}
	r.ledger.finishFunc = func([]idempotency.Outcome) ([]bool, error) {
		return nil, errors.New("dial tcp 10.0.0.5:5432: i/o timeout")
	}
	r.k.w.gate.add(1)
	n, err := r.k.pipeline.Admit(context.Background(), 1) // admitted before the pull
	require.NoError(t, err)
	r.k.pipeline.Pulled(n, 1, false)
	a, _, ctx := r.newAttempt("job-1", 1) // on its last delivery: its last chance, run alone
	turn := &soloTurn{released: make(chan struct{}), marked: true}
	a.turn = turn
	r.k.run(*ctx, a)
	r.k.attempts.Wait() // the unmark runs beside
	require.EqualValues(t, 1, ul.unmarks.Load(), "the last chance said nothing about the job (its worker lost Postgres): its mark must be taken back")
}
