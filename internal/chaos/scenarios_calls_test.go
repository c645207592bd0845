//go:build unix

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// The scenarios of this file hold the workers to design rule 0 where no worker dies: a
// repeated call is allowed only after a failed attempt, or after its worker was out for longer
// than the lease. The checker (judgeCalls) judges every call; each scenario adds its own checks.

// waitUntil polls cond every 20ms until it holds; it fails the test when ctx ends first.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// interleave spreads extra evenly among specs.
func interleave(specs, extra []levee.JobSpec) []levee.JobSpec {
	out := make([]levee.JobSpec, 0, len(specs)+len(extra))
	every := max(1, len(specs)/(len(extra)+1))
	for i, s := range specs {
		if i > 0 && i%every == 0 && len(extra) > 0 {
			out = append(out, extra[0])
			extra = extra[1:]
		}
		out = append(out, s)
	}
	return append(out, extra...)
}

// 8. Postgres cut for one worker only, for three leases, while NATS and the other worker stay
// up. Each cut strikes while the worker has a slow call in flight (3 s, longer than lease and
// heartbeat: its attempt must be stopped, design rule 29, or end, before the other worker takes
// the job over). The other worker keeps working during the cut; every repeated call must be
// explained by the cut (rule 0 (b)).
func TestChaosCutOneWorkersPostgres(t *testing.T) {
	parallel(t)
	r := newRig(t, "8 Postgres cut for one worker", rigConfig{})
	defer r.dumpLogs()
	n, slow, cuts := size(300, 1500), size(6, 30), size(1, 2)
	r.down.answer = func(order string) (answer, bool) {
		if strings.HasPrefix(order, "slow-") {
			return answer{delay: 3 * time.Second}, true
		}
		return answer{}, false
	}
	for range 2 {
		r.startWorker()
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := interleave(r.jobs("onecut", n), r.jobs("slow", slow))
	// Publishing spans the cuts (about 9 s bounded, 18 s at full counts), so that the other
	// worker has new jobs to run while one worker's Postgres is cut.
	published := r.publishPaced(ctx, specs, time.Duration(size(300, 120))*time.Millisecond)
	cutFor := 3 * r.cfg.ackWait
	for range cuts {
		var w *proc
		waitUntil(ctx, t, "a slow call in flight", func() bool {
			for _, p := range r.workers {
				if r.down.inFlight(func(c *call) bool { return c.Worker == p.id && strings.HasPrefix(c.Order, "slow-") }) > 0 {
					w = p
					return true
				}
			}
			return false
		})
		t.Logf("cut the Postgres of %s (only) for %s at %d charges, with a slow call in flight", w.name, cutFor, r.down.charged.Load())
		cutAt := time.Now()
		restore := r.cutPostgres(w)
		time.Sleep(cutFor)
		restore()
		_, _, calls := r.down.snapshot()
		others := 0
		for _, c := range calls {
			if c.Worker != w.id && c.Start.After(cutAt) && c.Start.Before(cutAt.Add(cutFor)) {
				others++
			}
		}
		t.Logf("%s's Postgres restored at %d charges; the other worker started %d calls during the cut", w.name, r.down.charged.Load(), others)
		require.Positive(t, others, "the other worker, whose Postgres was up, made no call while %s's was cut", w.name)
		time.Sleep(r.cfg.ackWait) // let the cut worker come back before the next cut
	}
	require.NoError(t, <-published)
	rp := r.check(ids(specs), settle())
	for _, c := range rp.calls.All {
		if strings.HasPrefix(c.Key, "slow-") {
			t.Logf("slow call repeated: %s", c.describe(r.start))
		}
	}
	t.Logf("commits that failed in the cut (not acked): %d; claims handed back: %d; attempts ended by a lost lease: %d",
		r.grepLogs("commit outcome failed"), r.grepLogs("ledger unavailable"), r.grepLogs("lease lost"))
}

// 9. A Postgres blip of 2 s for every worker, with commits in flight, under a lease of 4 s. The
// blip is shorter than the lease, so no job may be called twice (design rule 0): heartbeats
// retry within the lease (rule 29), and a commit that fails in the blip is retried with its
// attempt still registered, its lease extended, its message kept in progress (rule 30).
func TestChaosPostgresBlip(t *testing.T) {
	parallel(t)
	r := newRig(t, "9 Postgres blip 2s, lease 4s", rigConfig{ackWait: 4 * time.Second})
	defer r.dumpLogs()
	n, blips := size(300, 2000), size(1, 3)
	for range 2 {
		r.startWorker()
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := r.jobs("blip", n)
	require.NoError(t, r.publish(ctx, specs))
	for _, at := range killPoints(n, blips, 0.1, 0.7) {
		r.waitCharged(ctx, max(at, r.down.charged.Load()+int64(n/20))) // work resumes between blips
		t.Logf("Postgres blip (2s, every worker) at %d charges", r.down.charged.Load())
		restore := r.cutPostgres()
		time.Sleep(2 * time.Second)
		restore()
		t.Logf("Postgres back at %d charges", r.down.charged.Load())
	}
	rp := r.check(ids(specs), settle())
	t.Logf("commits that failed in the blips: %d; heartbeats that failed: %d; claims handed back: %d",
		r.grepLogs("commit outcome failed"), r.grepLogs("heartbeat failed"), r.grepLogs("ledger unavailable"))
	require.Zero(t, rp.RepeatedCalls, "a Postgres blip shorter than the lease caused second calls (design rule 0)")
}

// Poison results: a 2xx body with raw NUL bytes and invalid UTF-8 (not JSON: stored as a JSON
// string, where a NUL cannot go into jsonb), a valid JSON body whose string escapes a NUL
// (which jsonb refuses too), and a 4xx body whose 200th byte falls inside a two-byte character
// (the error's snippet is cut there).
var (
	poisonRawBody  = []byte("charged \x00\x00 then \xff\xfe\xc3\x28 bytes")
	poisonJSONBody = []byte(`{"charge":"ch_poison","note":"nul \u0000 inside"}`)
	poisonCutBody  = []byte(strings.Repeat("x", 199) + "é" + strings.Repeat("y", 100))
)

// 10. Poison results beside healthy jobs (design rule 28: nothing a worker stores can fail its
// neighbours). Each poison is called once and ends succeeded (its result stored sanitized) or
// dead with reason unstorable_result (the 4xx: permanent_error, its error sanitized); the
// healthy jobs in the same group commits are called once each and succeed.
func TestChaosPoisonResult(t *testing.T) {
	parallel(t)
	r := newRig(t, "10 poison results", rigConfig{})
	defer r.dumpLogs()
	n := size(60, 500)
	r.down.answer = func(order string) (answer, bool) {
		switch {
		case strings.HasPrefix(order, "poison-raw"):
			return answer{body: poisonRawBody}, true
		case strings.HasPrefix(order, "poison-json"):
			return answer{body: poisonJSONBody}, true
		case strings.HasPrefix(order, "poison-cut"):
			return answer{status: 422, body: poisonCutBody}, true
		}
		return answer{}, false
	}
	for range 2 {
		r.startWorker()
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	poisons := append(append(r.jobs("poison-raw", 1), r.jobs("poison-json", 1)...), r.jobs("poison-cut", 1)...)
	healthy := r.jobs("healthy", n)
	specs := append(append([]levee.JobSpec{}, poisons...), healthy...)
	rand.Shuffle(len(specs), func(i, j int) { specs[i], specs[j] = specs[j], specs[i] })
	require.NoError(t, r.publish(ctx, specs)) // at once: the poisons share claims and commits with healthy jobs
	rp := r.check(ids(specs), settle())

	_, callsPerKey, _ := r.down.snapshot()
	for _, p := range poisons {
		st, err := r.client.Status(ctx, p.ID)
		require.NoError(t, err)
		t.Logf("poison %s: called %d times, %s (reason %q) after %d attempts; last error %.80q", p.ID, callsPerKey[p.ID], st.State, st.Reason, st.Attempts, st.LastError)
		// Each poison is judged on its own (assert, not require), so that one run tells all.
		assert.Equal(t, 1, callsPerKey[p.ID], "poison %s is called once", p.ID)
		switch {
		case strings.HasPrefix(p.ID, "poison-cut"):
			assert.Equal(t, levee.StateDead, st.State, "the 4xx poison is dead")
			assert.Contains(t, []string{"permanent_error", "unstorable_result"}, st.Reason, "the 4xx poison's reason")
		case st.State == levee.StateDead:
			assert.Equal(t, "unstorable_result", st.Reason, "a dead 2xx poison (%s) says its result could not be stored", p.ID)
		default:
			assert.Equal(t, levee.StateSucceeded, st.State, "a 2xx poison (%s) succeeds (sanitized) or dies as unstorable", p.ID)
		}
	}
	twice := []string{}
	for _, h := range healthy {
		if callsPerKey[h.ID] > 1 {
			twice = append(twice, fmt.Sprintf("%s (%d calls)", h.ID, callsPerKey[h.ID]))
		}
	}
	assert.Empty(t, twice, "healthy jobs called more than once beside the poisons")
	var collateral []string
	for dj, err := range r.ops.DeadJobList(ctx, admin.DeadJobListParams{}) {
		require.NoError(t, err)
		if !strings.HasPrefix(dj.ID, "poison-") {
			collateral = append(collateral, dj.ID+" ("+dj.Reason+": "+dj.LastError+")")
		}
	}
	require.Empty(t, collateral, "healthy jobs dead-lettered beside the poisons")
	require.Equal(t, n, rp.Succeeded-(len(poisons)-rp.Dead), "every healthy job succeeds")
}

// hostile is one raw message published with plain NATS that cannot be a job.
type hostile struct {
	name    string // also its Chaos-Hostile header, to find its DLQ copy
	subject string
	id      string // the id token of its subject ("" when it has none)
	header  nats.Header
	data    []byte
}

// 11. Hostile raw messages, published with plain NATS beside healthy jobs: an idempotency key
// that is not UTF-8, a 3,500-character job id, a malformed message carrying a JetStream control
// header (Nats-Expected-Last-Sequence, which must not reach the DLQ copy: design rule 34), and
// messages on <ns>.jobs.<kind> with no id token and with an extra token (rule 35). Each ends in
// the DLQ as malformed within the scenario's time without a call (rule 28), and the healthy
// jobs are called once each.
func TestChaosHostileMessages(t *testing.T) {
	parallel(t)
	r := newRig(t, "11 hostile messages", rigConfig{})
	defer r.dumpLogs()
	n := size(60, 500)
	for range 2 {
		r.startWorker()
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := r.jobs("healthy", n)
	require.NoError(t, r.publish(ctx, specs[:n/2]))

	names, err := queue.NewNames(r.ns)
	require.NoError(t, err)
	nc := leveetest.Conn(t, r.nats.url())
	js, err := nc.JetStream()
	require.NoError(t, err)
	si, err := js.StreamInfo(names.JobsStream(), nats.Context(ctx))
	require.NoError(t, err)
	job := func(name string) []byte {
		return fmt.Appendf(nil, `{"url":%q,"body":{"order":"hostile-%s"}}`, r.down.url(), name)
	}
	// Random, so that Postgres cannot compress it under its index row limit (about 2,700 bytes).
	longID := "hostile-longid-"
	for len(longID) < 3500 {
		longID += string("abcdefghijklmnopqrstuvwxyz0123456789"[rand.N(36)])
	}
	jobs := names.JobsSubjects()[:len(names.JobsSubjects())-1] // "<ns>.jobs."
	hs := []hostile{
		// First, while nothing else publishes: the header holds the stream's true last sequence,
		// so the work stream stores the message; a DLQ copy keeping it would be refused.
		{name: "lastseq", subject: jobs + kindName + ".hostile-lastseq", id: "hostile-lastseq",
			header: nats.Header{"Nats-Expected-Last-Sequence": {fmt.Sprint(si.State.LastSeq)}}, data: []byte("not json {")},
		{name: "badkey", subject: jobs + kindName + ".hostile-badkey", id: "hostile-badkey",
			header: nats.Header{"Levee-Key": {"key-\xff\xfe-not-utf8"}}, data: job("badkey")},
		{name: "longid", subject: jobs + kindName + "." + longID, id: longID, data: job("longid")},
		{name: "noid", subject: jobs + kindName, data: job("noid")},
		{name: "extra", subject: jobs + kindName + ".hostile-extra.token", id: "hostile-extra.token", data: job("extra")},
	}
	for _, h := range hs {
		m := nats.NewMsg(h.subject)
		for k, vs := range h.header {
			m.Header[k] = vs
		}
		if h.id != "" && !strings.Contains(h.id, ".") {
			m.Header.Set("Nats-Msg-Id", h.id)
		}
		m.Header.Set("Chaos-Hostile", h.name)
		m.Data = h.data
		_, err := js.PublishMsg(m, nats.Context(ctx))
		require.NoError(t, err, "publish hostile message %s", h.name)
		t.Logf("published hostile message %s on %.60s…", h.name, h.subject)
	}
	require.NoError(t, r.publish(ctx, specs[n/2:]))
	rp := r.check(ids(specs), settle())
	require.Equal(t, n, rp.Succeeded, "every healthy job succeeds beside the hostile messages")
	require.Zero(t, rp.RepeatedCalls, "healthy jobs called twice beside hostile messages (design rule 0)")

	// Every hostile message reaches the DLQ, as malformed, within the scenario's time.
	found := map[string]leveetype.DeadJob{}
	deadline := r.start.Add(settle())
	for {
		octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
		for dj, err := range r.ops.DeadJobList(octx, admin.DeadJobListParams{}) {
			if err != nil {
				break
			}
			for _, h := range hs {
				if dj.Headers["Chaos-Hostile"] == h.name || (h.id != "" && (dj.ID == h.id || dj.ID == queue.BoundedID(h.id))) {
					found[h.name] = dj
				}
			}
		}
		ocancel()
		if len(found) == len(hs) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, h := range hs {
		dj, ok := found[h.name]
		if !ok {
			t.Errorf("hostile message %s (subject %.60s…) is not in the DLQ %s after the scenario's start", h.name, h.subject, settle())
			continue
		}
		t.Logf("hostile message %s: dead as %s (id %.40q, worker %s): %.120q", h.name, dj.Reason, dj.ID, dj.Worker, dj.LastError)
		if dj.Reason != "malformed" {
			t.Errorf("hostile message %s: reason %s, want malformed", h.name, dj.Reason)
		}
		if _, ok := dj.Headers["Nats-Expected-Last-Sequence"]; ok {
			t.Errorf("hostile message %s: its DLQ copy keeps the control header Nats-Expected-Last-Sequence (design rule 34)", h.name)
		}
	}
	if t.Failed() && !rp.failed() { // the checker printed them already when it failed
		for _, l := range r.warnings() {
			t.Logf("worker warnings: %s", l)
		}
	}
	_, _, calls := r.down.snapshot()
	for _, c := range calls {
		if strings.HasPrefix(c.Order, "hostile-") {
			t.Errorf("hostile message %s was called (key %.40q, worker %s)", c.Order, c.Key, c.Worker)
		}
	}
}
