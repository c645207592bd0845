package idempotency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

// benchSeedKeys is how many finished keys a benchmark's ledger holds before it starts.
const benchSeedKeys = 50_000

// benchLedger returns a ledger in a fresh schema holding benchSeedKeys finished keys of another
// kind, analyzed, as a ledger in service holds its retention's worth: Postgres plans the
// claim statement from the table's size and statistics, and a small table without statistics
// gets a sequential scan where a ledger in service gets index lookups.
func benchLedger(b *testing.B) *idempotency.Ledger {
	b.Helper()
	ns := leveetest.Namespace(b)
	l := leveetest.Ledger(b, ns)
	keys := pgx.Identifier{ns}.Sanitize() + ".keys"
	ctx := context.Background()
	pool := leveetest.Pool(b)
	if _, err := pool.Exec(ctx, `
INSERT INTO `+keys+` (kind, key, job_id, payload_hash, state, attempts, enqueued_at, started_at, finished_at)
SELECT 'seed', 'seed-' || i, 'seed-' || i, '\x00', 'succeeded', 1, now(), now(), now()
FROM generate_series(1, $1) AS i`, benchSeedKeys); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+keys); err != nil {
		b.Fatal(err)
	}
	return l
}

// benchKeys makes the claims and outcomes of one benchmark op: a batch of keys never claimed
// before, and their successes.
type benchKeys struct {
	n      int
	hash   []byte
	claims []idempotency.ClaimRequest
	outs   []idempotency.Outcome
	// result is stored with each success; nil stores none.
	result []byte
}

func newBenchKeys(batch int) *benchKeys {
	return &benchKeys{
		hash:   make([]byte, 32),
		claims: make([]idempotency.ClaimRequest, batch),
		outs:   make([]idempotency.Outcome, batch),
	}
}

// next fills claims with batch keys never claimed before.
func (k *benchKeys) next() []idempotency.ClaimRequest {
	now := time.Now()
	for i := range k.claims {
		k.n++
		id := fmt.Sprintf("job-%09d", k.n)
		k.claims[i] = idempotency.ClaimRequest{JobID: id, Kind: "bench", Key: id, PayloadHash: k.hash, EnqueuedAt: now, Lease: 30 * time.Second}
	}
	return k.claims
}

// succeeded returns the outcomes that finish the claimed keys, each with its attempt's row,
// as the worker writes them.
func (k *benchKeys) succeeded(res []idempotency.ClaimResult) []idempotency.Outcome {
	for i, r := range res {
		k.outs[i] = idempotency.Outcome{
			Lease: idempotency.Lease{Kind: k.claims[i].Kind, Key: k.claims[i].Key, Fence: r.Fence},
			State: idempotency.StateSucceeded, Attempt: idempotency.AttemptSucceeded, Worker: "bench",
			Result: k.result,
		}
	}
	return k.outs
}

func claimAll(b *testing.B, l *idempotency.Ledger, reqs []idempotency.ClaimRequest) []idempotency.ClaimResult {
	b.Helper()
	res, err := l.Claim(context.Background(), reqs)
	if err != nil {
		b.Fatal(err)
	}
	for i, r := range res {
		if r.Status != idempotency.Claimed {
			b.Fatalf("claim %s: %s", reqs[i].Key, r.Status)
		}
	}
	return res
}

func finishAll(b *testing.B, l *idempotency.Ledger, outs []idempotency.Outcome) {
	b.Helper()
	applied, err := l.Finish(context.Background(), outs)
	if err != nil {
		b.Fatal(err)
	}
	for i, ok := range applied {
		if !ok {
			b.Fatalf("finish %s: not applied", outs[i].Key)
		}
	}
}

// reportJobs reports the jobs that went through the ledger per second of the benchmark.
func reportJobs(b *testing.B, batch int) {
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkLedgerClaimFinish measures the ledger's round trips against the real Postgres:
// claim a batch of fresh keys in one statement, then finish them succeeded in one statement,
// from one goroutine. Each op is two transactions whatever the batch, so jobs/s shows what
// batching buys; with batch=1 it is bound by the commit (fsync) latency.
func BenchmarkLedgerClaimFinish(b *testing.B) {
	for _, batch := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			l := benchLedger(b)
			keys := newBenchKeys(batch)
			b.ReportAllocs()
			for b.Loop() {
				res := claimAll(b, l, keys.next())
				finishAll(b, l, keys.succeeded(res))
			}
			reportJobs(b, batch)
		})
	}
}

// BenchmarkLedgerClaimFinishEach is the worker's pattern without group commit: a batch of 64
// keys claimed in one statement, then each finished in a transaction of its own, one after
// another. Compare with BenchmarkLedgerClaimFinish/batch=64.
func BenchmarkLedgerClaimFinishEach(b *testing.B) {
	const batch = 64
	l := benchLedger(b)
	keys := newBenchKeys(batch)
	b.ReportAllocs()
	for b.Loop() {
		res := claimAll(b, l, keys.next())
		outs := keys.succeeded(res)
		for i := range outs {
			finishAll(b, l, outs[i:i+1])
		}
	}
	reportJobs(b, batch)
}

// BenchmarkLedgerClaimFinishResults is BenchmarkLedgerClaimFinish/batch=64 with a result
// stored per success, as the http kind stores one: a small JSON object, and one whose body is
// 4 KiB of JSON text. Every result passes the ledger's boundary (design rule 28) on its way
// in, so this measures what that check costs on the hot path.
func BenchmarkLedgerClaimFinishResults(b *testing.B) {
	const batch = 64
	body := strings.Repeat(`{"id":"ch_3MtwBwLkdIwHu7ix28a3tqPa","amount":4200,"currency":"eur","note":"caf\u00e9 ok"},`, 45)
	for _, tc := range []struct {
		name   string
		result string
	}{
		{"small", `{"status":200,"body":{"id":"ch_3MtwBwLkdIwHu7ix28a3tqPa","amount":4200,"paid":true}}`},
		{"4KiB", `{"status":200,"body":[` + strings.TrimSuffix(body, ",") + `]}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l := benchLedger(b)
			keys := newBenchKeys(batch)
			keys.result = []byte(tc.result)
			b.ReportAllocs()
			for b.Loop() {
				res := claimAll(b, l, keys.next())
				finishAll(b, l, keys.succeeded(res))
			}
			reportJobs(b, batch)
		})
	}
}
