//go:build unix

package chaos

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/levee-dev/levee"
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
	// RepeatedCalls counts calls beyond the first under one idempotency key: each is an effect
	// the provider's key absorbed.
	RepeatedCalls int
	// InProgress counts keys still running or retrying in the ledger at the end.
	InProgress int
	// Faults counts the faults of the scenario (kills, stops, cuts, crashes).
	Faults int
	Wall   time.Duration
	DeadBy map[string]int // reason → jobs

	lost, both, duplicated, fake []string
}

func (rp *report) failed() bool {
	return rp.Lost > 0 || rp.Both > 0 || rp.EffectsDuplicated > 0 || rp.SucceededNoEffect > 0 || rp.InProgress > 0
}

var (
	reportsMu sync.Mutex
	reports   []report
)

// check waits until every job in ids is final (or timeout passes), then classifies the jobs
// and their effects, prints the table row, records it for the summary and fails the test on
// any lost job, duplicated effect, fake success or key left in progress.
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
	rp := report{Scenario: r.name, Jobs: len(ids), Wall: time.Since(r.start), Faults: r.faults(), DeadBy: map[string]int{}}
	effects, callsPerKey, _ := r.down.snapshot()
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
	for _, n := range callsPerKey {
		rp.RepeatedCalls += n - 1
	}
	if err := r.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{r.ns, "keys"}.Sanitize()+
		" WHERE state IN ('running', 'retrying')").Scan(&rp.InProgress); err != nil {
		t.Fatalf("count keys in progress: %v", err)
	}

	for _, w := range r.workers {
		for _, l := range w.logLines(0) {
			if strings.HasPrefix(l, "=== chaos: ") && strings.Contains(l, " exited: ") {
				t.Log(strings.TrimPrefix(l, "=== chaos: "))
			}
		}
	}
	reportsMu.Lock()
	reports = append(reports, rp)
	reportsMu.Unlock()
	var b strings.Builder
	printTable(&b, []report{rp})
	fmt.Print("checker:\n" + b.String())
	if rp.failed() {
		t.Errorf("checker: %d lost %v, %d both succeeded and dead %v, %d duplicated effects %v, %d succeeded without effect %v, %d keys in progress",
			rp.Lost, head(rp.lost), rp.Both, head(rp.both), rp.EffectsDuplicated, head(rp.duplicated),
			rp.SucceededNoEffect, head(rp.fake), rp.InProgress)
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
	for dj, err := range r.client.DeadJobs(ctx, levee.DLQFilter{}) {
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
	fmt.Fprintln(tw, "scenario\tjobs\tsucceeded\tdead\tlost\teffects once\teffects duplicated\tdead with effect\tcalls repeated under one key\tfaults\twall\tdead by reason\t")
	for _, rp := range rps {
		reasons := make([]string, 0, len(rp.DeadBy))
		for _, k := range slices.Sorted(maps.Keys(rp.DeadBy)) {
			reasons = append(reasons, fmt.Sprintf("%s=%d", k, rp.DeadBy[k]))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", rp.Scenario, rp.Jobs, rp.Succeeded, rp.Dead,
			rp.Lost, rp.EffectsOne, rp.EffectsDuplicated, rp.DeadWithEffect, rp.RepeatedCalls, rp.Faults, rp.Wall.Round(100*time.Millisecond),
			strings.Join(reasons, " "))
	}
	_ = tw.Flush()
}

// TestMain prints every scenario's row in one table at the end.
func TestMain(m *testing.M) {
	code := m.Run()
	reportsMu.Lock()
	if len(reports) > 0 {
		slices.SortFunc(reports, func(a, b report) int { return strings.Compare(a.Scenario, b.Scenario) })
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
