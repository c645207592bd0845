//go:build unix

package chaos

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/levee-dev/levee/admin"
)

// report is the checker's verdict on one scenario.
type report struct {
	Scenario string
	Jobs     int
	// Succeeded, Dead and Lost classify every published job: succeeded once (the ledger says
	// succeeded), dead-lettered (a DLQ copy exists, with its reason), or neither.
	Succeeded, Dead, Lost int
	// Both counts jobs that are succeeded and dead-lettered at once: also a failure.
	Both int
	// EffectsOne, EffectsNone and EffectsDuplicated classify each job's charges at the
	// downstream (a job charges the order named by its id).
	EffectsOne, EffectsNone, EffectsDuplicated int
	// SucceededNoEffect counts jobs that succeeded without a charge: a fake success.
	SucceededNoEffect int
	// DeadWithEffect counts dead-lettered jobs whose charge was made (an attempt called, then
	// its worker died): not a failure, since a replay calls with the same key, but worth seeing.
	DeadWithEffect int
	// RepeatedCalls counts calls beyond the first under one idempotency key: at a provider that
	// ignored the key, each would have been a second effect. Explained counts those that design
	// rule 0 allows (the attempt before failed, or its worker was out for the lease; see
	// judgeCalls), Unexplained the others: each fails the scenario.
	RepeatedCalls, Explained, Unexplained int
	// InProgress counts keys still running or retrying in the ledger at the end.
	InProgress int
	// Faults counts the faults of the scenario (kills, stops, cuts, crashes).
	Faults int
	Wall   time.Duration
	DeadBy map[string]int // reason → jobs

	lost, both, duplicated, fake []string
	calls                        judgement
}

func (rp *report) failed() bool {
	return rp.Lost > 0 || rp.Both > 0 || rp.EffectsDuplicated > 0 || rp.SucceededNoEffect > 0 || rp.InProgress > 0 ||
		rp.Unexplained > 0
}

var (
	reportsMu sync.Mutex
	reports   []report
)

// check waits until every job in ids is final (or timeout passes), then classifies the jobs,
// their effects and their calls, prints the table row, records it for the summary and fails
// the test on any lost job, duplicated effect, fake success, key left in progress, or repeated
// call that design rule 0 does not explain (judgeCalls).
func (r *rig) check(ids []string, timeout time.Duration) report {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	deadline := time.Now().Add(timeout)
	var (
		succeeded map[string]bool
		dead      map[string]string
		err       error
	)
	for {
		// Each read is bounded on its own: a JetStream API request that reaches a stream while
		// it elects a new leader gets no answer, and without its own deadline it would wait
		// out the whole check instead of being asked again.
		octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
		succeeded, dead, err = r.outcomes(octx)
		ocancel()
		if err == nil && r.allFinal(ids, succeeded, dead) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("read outcomes: %v", err)
	}
	faults := r.faults()
	rp := report{Scenario: r.name, Jobs: len(ids), Wall: time.Since(r.start), Faults: len(faults), DeadBy: map[string]int{}}
	effects, _, calls := r.down.snapshot()
	for _, id := range ids {
		s, reason := succeeded[id], ""
		_, d := dead[id]
		if d {
			reason = dead[id]
		}
		switch {
		case s && d:
			rp.Both++
			rp.both = append(rp.both, id)
		case s:
			rp.Succeeded++
		case d:
			rp.Dead++
			rp.DeadBy[reason]++
		default:
			rp.Lost++
			rp.lost = append(rp.lost, id)
		}
		switch n := effects[id]; n {
		case 0:
			rp.EffectsNone++
			if s {
				rp.SucceededNoEffect++
				rp.fake = append(rp.fake, id)
			}
		case 1:
			rp.EffectsOne++
			if d && !s {
				rp.DeadWithEffect++
			}
		default:
			rp.EffectsDuplicated++
			rp.duplicated = append(rp.duplicated, fmt.Sprintf("%s (%d charges)", id, n))
		}
	}
	failed, err := r.failedAttempts(ctx)
	if err != nil {
		t.Fatalf("read failed attempts: %v", err)
	}
	rp.calls = judgeCalls(calls, failed, faults, r.cfg.ackWait)
	rp.RepeatedCalls, rp.Explained, rp.Unexplained = rp.calls.Repeated, rp.calls.Explained, len(rp.calls.Unexplained)
	if err := r.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{r.ns, "keys"}.Sanitize()+
		" WHERE state IN ('running', 'retrying')").Scan(&rp.InProgress); err != nil {
		t.Fatalf("count keys in progress: %v", err)
	}

	for _, f := range faults {
		until := ""
		if !f.Until.IsZero() {
			until = fmt.Sprintf(" to %.3fs (%s)", f.Until.Sub(r.start).Seconds(), f.Until.Sub(f.At).Round(time.Millisecond))
		}
		t.Logf("fault: %s %s at %.3fs%s %s", f.Kind, f.Target, f.At.Sub(r.start).Seconds(), until, f.Detail)
	}
	for _, w := range r.workers {
		for _, l := range w.lastWords(8) {
			t.Logf("%s before it exited by itself: %.600s", w.id, l)
		}
	}
	if os.Getenv("LEVEE_CHAOS_LOGS") != "" {
		for _, c := range rp.calls.All {
			t.Logf("repeated call: %s", c.describe(r.start))
		}
	}
	if rp.RepeatedCalls > 0 {
		t.Logf("calls: %d, repeated under one key: %d, explained: %d %v (shortest outage explaining one: %s), unexplained: %d",
			rp.calls.Calls, rp.RepeatedCalls, rp.Explained, rp.calls.ByClause, rp.calls.ShortestOutage.Round(time.Millisecond), rp.Unexplained)
	}
	reportsMu.Lock()
	reports = append(reports, rp)
	reportsMu.Unlock()
	var b strings.Builder
	printTable(&b, []report{rp})
	fmt.Print("checker:\n" + b.String())
	if rp.failed() {
		t.Errorf("checker: %d lost %v, %d both succeeded and dead %v, %d duplicated effects %v, %d succeeded without effect %v, %d keys in progress, %d repeated calls UNEXPLAINED by design rule 0",
			rp.Lost, head(rp.lost), rp.Both, head(rp.both), rp.EffectsDuplicated, head(rp.duplicated),
			rp.SucceededNoEffect, head(rp.fake), rp.InProgress, rp.Unexplained)
		for i, u := range rp.calls.Unexplained {
			if i == 10 {
				t.Logf("UNEXPLAINED: ... and %d more", len(rp.calls.Unexplained)-i)
				break
			}
			t.Logf("UNEXPLAINED: %s", u.describe(r.start))
		}
		for _, l := range r.warnings() {
			t.Logf("worker warnings: %s", l)
		}
		for _, id := range head(rp.lost) {
			if st, err := r.client.Status(ctx, id); err == nil {
				t.Logf("lost job %s: ledger/stream state %s attempts %d reason %q error %q", id, st.State, st.Attempts, st.Reason, st.LastError)
			} else {
				t.Logf("lost job %s: %v", id, err)
			}
		}
	}
	return rp
}

func head(ids []string) []string {
	if len(ids) > 10 {
		return ids[:10]
	}
	return ids
}

func (r *rig) allFinal(ids []string, succeeded map[string]bool, dead map[string]string) bool {
	for _, id := range ids {
		if _, d := dead[id]; !succeeded[id] && !d {
			return false
		}
	}
	return true
}

// failedAttempts reads the ledger's attempts that failed or timed out, by job and fence.
func (r *rig) failedAttempts(ctx context.Context) (map[attemptRef]bool, error) {
	rows, err := r.pool.Query(ctx, "SELECT job_id, fence FROM "+pgx.Identifier{r.ns, "attempts"}.Sanitize()+
		" WHERE outcome IN ('failed', 'timed_out')")
	if err != nil {
		return nil, err
	}
	refs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[attemptRef])
	if err != nil {
		return nil, err
	}
	failed := make(map[attemptRef]bool, len(refs))
	for _, ref := range refs {
		failed[ref] = true
	}
	return failed, nil
}

// outcomes reads which jobs succeeded (ledger: the key's owner, or a duplicate's record) and
// which are dead-lettered (the DLQ stream, with their reasons).
func (r *rig) outcomes(ctx context.Context) (succeeded map[string]bool, dead map[string]string, err error) {
	succeeded, dead = map[string]bool{}, map[string]string{}
	rows, err := r.pool.Query(ctx, "SELECT job_id FROM "+pgx.Identifier{r.ns, "keys"}.Sanitize()+" WHERE state = 'succeeded'"+
		" UNION ALL SELECT id FROM "+pgx.Identifier{r.ns, "job_records"}.Sanitize()+" WHERE state = 'succeeded'")
	if err != nil {
		return nil, nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		succeeded[id] = true
	}
	for dj, err := range r.ops.DeadJobList(ctx, admin.DeadJobListParams{}) {
		if err != nil {
			return nil, nil, err
		}
		dead[dj.ID] = dj.Reason
	}
	return succeeded, dead, nil
}

// printTable writes the checker's table.
func printTable(w io.Writer, rps []report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tjobs\tsucceeded\tdead\tlost\teffects once\teffects duplicated\tdead with effect\tcalls repeated\texplained\tUNEXPLAINED\tfaults\twall\tdead by reason\t")
	for _, rp := range rps {
		reasons := make([]string, 0, len(rp.DeadBy))
		for _, k := range slices.Sorted(maps.Keys(rp.DeadBy)) {
			reasons = append(reasons, fmt.Sprintf("%s=%d", k, rp.DeadBy[k]))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", rp.Scenario, rp.Jobs, rp.Succeeded, rp.Dead,
			rp.Lost, rp.EffectsOne, rp.EffectsDuplicated, rp.DeadWithEffect, rp.RepeatedCalls, rp.Explained, rp.Unexplained,
			rp.Faults, rp.Wall.Round(100*time.Millisecond), strings.Join(reasons, " "))
	}
	_ = tw.Flush()
}

// scenarioNumber is the number a scenario's name starts with ("10 poison result" → 10).
func scenarioNumber(name string) int {
	num, _, _ := strings.Cut(name, " ")
	n, _ := strconv.Atoi(num)
	return n
}

// TestMain prints every scenario's row in one table at the end.
func TestMain(m *testing.M) {
	code := m.Run()
	reportsMu.Lock()
	if len(reports) > 0 {
		slices.SortFunc(reports, func(a, b report) int {
			return cmp.Or(cmp.Compare(scenarioNumber(a.Scenario), scenarioNumber(b.Scenario)), strings.Compare(a.Scenario, b.Scenario))
		})
		mode := "bounded (make test)"
		if full() {
			mode = "full (LEVEE_CHAOS=full, make chaos)"
		}
		fmt.Printf("\nchaos checker summary, %s:\n", mode)
		printTable(os.Stdout, reports)
	}
	reportsMu.Unlock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}
