package dashboard_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/dashboard"
	"github.com/levee-dev/levee/internal/leveetest"
)

// EnvScreenshots names a directory where the browser test also writes its screenshots (the
// README's come from there): LEVEE_SCREENSHOTS=docs/img go test ./dashboard -run Browser.
const EnvScreenshots = "LEVEE_SCREENSHOTS"

// chromium finds a Chromium or Chrome binary. Without one the test skips, except under
// CI=true, where it fails: CI never passes by skipping (.ci/run installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found (apt-get install -y chromium): the browser tests need it"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; under CI=true a missing browser is a failure")
	}
	t.Skip(msg)
	return ""
}

// seeded is a namespace with jobs in every state, dead jobs, and an open breaker, worked by an
// in-process worker.
type seeded struct {
	client *levee.Client
	ops    *admin.Client
	ns     string
	fixed  atomic.Bool // the "fixable" kind succeeds once set
	// ids by what they were published to become
	succeeded, retrying, running, queued []string
	dead                                 []string // kind fixable, keys fix-0..
}

func seed(t *testing.T) *seeded {
	t.Helper()
	ctx := t.Context()
	s := &seeded{ns: leveetest.Namespace(t)}
	natsURL := leveetest.NATSURL(t)
	pool := leveetest.Pool(t)
	leveetest.Ledger(t, s.ns)
	leveetest.Queue(t, natsURL, s.ns)
	c, err := levee.NewClient(ctx, levee.ClientConfig{NATSURL: natsURL, Pool: pool, Namespace: s.ns})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	s.client = c
	s.ops = admin.New(c)

	w, err := levee.NewWorker(levee.WorkerConfig{NATSURL: natsURL, Pool: pool, Namespace: s.ns, SkipMigrate: true,
		Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: time.Second})
	require.NoError(t, err)
	release := make(chan struct{})
	handlers := map[string]struct {
		h levee.HandlerFunc
		p levee.Policy
	}{
		"ok": {func(context.Context, *levee.Job) (any, error) { return map[string]int{"charged": 4200}, nil }, levee.Policy{}},
		"fixable": {func(context.Context, *levee.Job) (any, error) {
			if s.fixed.Load() {
				return "fixed", nil
			}
			return nil, levee.Permanent(errors.New("downstream said 422: card expired"))
		}, levee.Policy{}},
		"flaky": {func(context.Context, *levee.Job) (any, error) { return nil, errors.New("HTTP 503 from provider") },
			levee.Policy{Backoff: levee.Backoff{Base: time.Hour, Max: time.Hour}, MaxAttempts: 5,
				Breaker: levee.BreakerPolicy{MinCalls: 1000}}},
		"slow": {func(ctx context.Context, _ *levee.Job) (any, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, ctx.Err()
		}, levee.Policy{Timeout: 10 * time.Minute}},
		"outage": {func(context.Context, *levee.Job) (any, error) { return nil, errors.New("connection refused") },
			levee.Policy{Backoff: levee.Backoff{Base: time.Hour, Max: time.Hour},
				Breaker: levee.BreakerPolicy{MinCalls: 2, FailureRate: 0.5, OpenFor: time.Hour}}},
	}
	for kind, k := range handlers {
		require.NoError(t, w.Handle(kind, k.h, k.p))
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		close(release)
		stop()
		require.NoError(t, <-done)
	})

	pub := func(kind, key string) string {
		res, err := c.Publish(ctx, kind, map[string]any{"customer": "cus_" + key, "card": "4242 4242 4242 4242"}, levee.WithKey(key))
		require.NoError(t, err)
		return res.ID
	}
	for i := range 3 {
		s.succeeded = append(s.succeeded, pub("ok", fmt.Sprintf("order-%d", i)))
	}
	for i := range 4 {
		s.dead = append(s.dead, pub("fixable", fmt.Sprintf("fix-%d", i)))
	}
	s.retrying = append(s.retrying, pub("flaky", "flaky-0"))
	s.running = append(s.running, pub("slow", "slow-0"))
	for i := range 3 {
		pub("outage", fmt.Sprintf("outage-%d", i))
	}
	s.queued = append(s.queued, pub("nobody", "waiting-0")) // no worker serves it

	s.waitFor(t, levee.StateSucceeded, s.succeeded...)
	s.waitFor(t, levee.StateDead, s.dead...)
	s.waitFor(t, levee.StateRetrying, s.retrying...)
	s.waitFor(t, levee.StateRunning, s.running...)
	s.waitFor(t, levee.StateQueued, s.queued...)
	require.Eventually(t, func() bool {
		ov, err := s.ops.Overview(ctx, 0)
		if err != nil {
			return false
		}
		for _, k := range ov.Kinds {
			if k.Kind == "outage" && k.Breaker == "open" {
				// The window's counts reach the record after the state: the banner shows both.
				return ov.DLQDepth == uint64(len(s.dead)) && k.BreakerCalls > 0
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "the outage kind's breaker opens and the DLQ holds the dead jobs")
	return s
}

// waitFor waits until every job in ids is in state.
func (s *seeded) waitFor(t *testing.T, state levee.State, ids ...string) {
	t.Helper()
	for _, id := range ids {
		require.Eventually(t, func() bool {
			st, err := s.client.Status(t.Context(), id)
			return err == nil && st.State == state
		}, 30*time.Second, 50*time.Millisecond, "job %s becomes %s", id, state)
	}
}

// browser is a headless Chromium tab that records its console, where Chromium reports
// Content-Security-Policy violations.
type browser struct {
	ctx     context.Context
	shots   []string // where screenshots go
	mu      sync.Mutex
	console []string
}

// rebindHost is a name the test browser resolves to 127.0.0.1, as a page's own name does after
// a DNS rebinding.
const rebindHost = "rebind.attacker.example"

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900),
		// A DNS rebinding, as an attacker's name that now resolves to this machine.
		chromedp.Flag("host-resolver-rules", "MAP "+rebindHost+" 127.0.0.1"))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	b := &browser{ctx: ctx, shots: []string{t.ArtifactDir()}}
	if dir := os.Getenv(EnvScreenshots); dir != "" {
		b.shots = append(b.shots, dir)
	}
	require.NoError(t, chromedp.Do(ctx), "start Chromium at %s", exe)
	messages := chromedp.Console(ctx)
	read := make(chan struct{})
	go func() {
		defer close(read)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m.String())
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancelB()
		cancelA()
		<-read
	})
	return b
}

// do runs steps in the tab, each step waiting at most 30 s.
func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

// get runs one action in the tab and returns its value.
func get[T any](t *testing.T, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

func (b *browser) text(t *testing.T, css string) string {
	t.Helper()
	return get(t, b, chromedp.Text(chromedp.CSS(css)))
}

// shoot saves a full-page screenshot as name.png.
func (b *browser) shoot(t *testing.T, name string) {
	t.Helper()
	png := get(t, b, chromedp.FullScreenshot(100))
	for _, dir := range b.shots {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
	}
}

// cspViolations returns the console's messages about the Content-Security-Policy.
func (b *browser) cspViolations() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.console {
		if strings.Contains(m, "Content Security Policy") {
			out = append(out, m)
		}
	}
	return out
}

func (b *browser) messages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}

func css(s string) chromedp.CSS { return chromedp.CSS(s) }
func id(s string) chromedp.ID   { return chromedp.ID(s) }

// serve starts a dashboard and opens it in b at the URL `enqueue ui` would print (with the
// run's token, which sets the cookie); it returns the base URL.
func serve(t *testing.T, b *browser, c *admin.Client, opts dashboard.Options) string {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	opts.LocalToken = "browser-test-token"
	d, err := dashboard.New(c, opts)
	require.NoError(t, err)
	srv := httptest.NewServer(d)
	t.Cleanup(func() { srv.Close(); d.Close() })
	b.do(t, chromedp.Navigate(d.LocalURL(srv.URL)), chromedp.WaitVisible(css("h1")))
	return srv.URL
}

func number(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	require.NoError(t, err, "a number: %q", s)
	return n
}

func TestBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	s := seed(t)
	ctx := t.Context()
	// Pages that refresh themselves while the test clicks would race it: this one refreshes
	// hourly; the subtest that watches the backlog drain has its own.
	url := serve(t, b, s.ops, dashboard.Options{MinPoll: time.Hour})

	t.Run("a page whose name was rebound to this machine is refused", func(t *testing.T) {
		// The browser holds the token cookie for 127.0.0.1; a page at another name reaching
		// the same listener is neither the local operator nor knows the token.
		rebound := strings.Replace(url, "127.0.0.1", rebindHost, 1)
		b.do(t, chromedp.Navigate(rebound+"/kinds"), chromedp.WaitVisible(css("body")))
		body := get(t, b, chromedp.Evaluate[string](`document.body.innerText`))
		assert.Contains(t, body, "is not this machine's loopback address")
		assert.NotContains(t, body, "outage", "no kind is shown")
		b.do(t, chromedp.Navigate(rebound+"/?token=browser-test-token"), chromedp.WaitVisible(css("body")))
		assert.Contains(t, get(t, b, chromedp.Evaluate[string](`document.body.innerText`)), "is not this machine's loopback address")
	})

	t.Run("a link cannot put its words in the banner", func(t *testing.T) {
		b.do(t, chromedp.Navigate(url+"/kinds?err=Session+expired:+sign+in+at+evil.example"), chromedp.WaitVisible(css("h1")))
		assert.NotContains(t, get(t, b, chromedp.Evaluate[string](`document.body.innerText`)), "evil.example")
	})

	t.Run("a DLQ filter that cannot match is refused", func(t *testing.T) {
		b.do(t, chromedp.Navigate(url+"/dlq?reason=bogus"), chromedp.WaitVisible(css("h1")))
		assert.Contains(t, get(t, b, chromedp.Evaluate[string](`document.body.innerText`)), `unknown reason "bogus"`)
	})

	t.Run("overview counts match", func(t *testing.T) {
		b.do(t, chromedp.Navigate(url+"/"), chromedp.WaitVisible(css(".tiles")))
		tiles := map[string]int64{}
		for _, k := range []string{"scheduled", "queued", "running", "retrying", "succeeded", "dead", "dlq", "backlog"} {
			tiles[k] = number(t, b.text(t, "[data-count="+k+"] .n"))
		}
		banner := b.text(t, "[data-banner=breaker]")
		// The page drew the cached aggregate; ask for it again within its age.
		ov, err := s.ops.Overview(ctx, time.Hour)
		require.NoError(t, err)
		for _, st := range []levee.State{levee.StateScheduled, levee.StateQueued, levee.StateRunning, levee.StateRetrying, levee.StateSucceeded, levee.StateDead} {
			assert.Equal(t, ov.Counts[st], tiles[string(st)], "tile %s", st)
		}
		assert.Equal(t, int64(ov.DLQDepth), tiles["dlq"])
		assert.Equal(t, int64(ov.Backlog), tiles["backlog"])
		assert.GreaterOrEqual(t, tiles["succeeded"], int64(len(s.succeeded)))
		assert.Equal(t, int64(len(s.dead)), tiles["dlq"])
		assert.Contains(t, banner, "outage")
		assert.Regexp(t, `next trial at \S+ \S+, in 59m\d\ds; \d of \d calls failed \(100%\) in the fleet's window$`, banner)
		b.shoot(t, "overview")
		b.do(t, chromedp.Navigate(url+"/kinds"), chromedp.WaitVisible(id("kind-outage")))
		b.shoot(t, "kinds")
		b.do(t, chromedp.Navigate(url+"/jobs"), chromedp.WaitVisible(css("table.grid")))
		b.shoot(t, "jobs")
	})

	t.Run("find a job by idempotency key", func(t *testing.T) {
		b.do(t, chromedp.Navigate(url+"/"), chromedp.SendKeys(id("find"), "fix-0"), chromedp.Submit(id("find")),
			chromedp.WaitVisible(id("retry")))
		h1 := b.text(t, "h1")
		assert.Contains(t, h1, s.dead[0])
		assert.Contains(t, h1, "dead")
		b.do(t, chromedp.Click(css("details.payload summary")))
		assert.Contains(t, b.text(t, "details.payload pre"), "cus_fix-0")
		b.shoot(t, "job")
	})

	t.Run("retry a job and see its state change", func(t *testing.T) {
		s.fixed.Store(true)
		b.do(t, chromedp.Navigate(url+"/jobs/"+s.dead[0]), chromedp.Click(id("retry")), chromedp.WaitVisible(css(".flash.ok")))
		assert.Contains(t, b.text(t, ".flash.ok"), "will run again")
		s.waitFor(t, levee.StateSucceeded, s.dead[0])
		b.do(t, chromedp.Navigate(url+"/jobs/"+s.dead[0]), chromedp.WaitVisible(css("h1")))
		assert.Contains(t, b.text(t, "h1"), "succeeded")
	})

	t.Run("replay one DLQ entry", func(t *testing.T) {
		job := s.dead[1]
		b.do(t, chromedp.Navigate(url+"/dlq"), chromedp.WaitVisible(id("dlq-total")))
		b.shoot(t, "dlq")
		b.do(t, chromedp.Click(css(`input[value="`+job+`"]`)), chromedp.Click(id("replay-selected")),
			chromedp.WaitVisible(css(".flash.ok")))
		assert.Contains(t, b.text(t, ".flash.ok"), "replayed 1")
		s.waitFor(t, levee.StateSucceeded, job)
		b.do(t, chromedp.Navigate(url+"/dlq"), chromedp.WaitVisible(id("dlq-total")))
		rows := get(t, b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("[data-dead]")).map(e => e.dataset.dead)`))
		assert.NotContains(t, rows, job)
	})

	t.Run("bulk replay by filter with the typed count", func(t *testing.T) {
		left := s.dead[2:]
		b.do(t, chromedp.Navigate(url+"/dlq?kind=fixable"), chromedp.Click(id("replay-all")), chromedp.WaitVisible(id("bulk-count")))
		count := b.text(t, "#bulk-count")
		assert.Equal(t, int64(len(left)), number(t, count))
		assert.Equal(t, "kind=fixable", b.text(t, "#bulk-filter"))
		b.do(t, chromedp.SendKeys(id("confirm"), "99"), chromedp.Click(id("bulk-go")), chromedp.WaitVisible(css(".problem")))
		b.shoot(t, "bulk")
		b.do(t, chromedp.SetValue(id("confirm"), count), chromedp.Click(id("bulk-go")), chromedp.WaitVisible(css("[data-finished=true]")))
		assert.Equal(t, count, b.text(t, "#task-done"))
		b.shoot(t, "task")
		s.waitFor(t, levee.StateSucceeded, left...)
		entries, err := s.ops.AuditList(ctx, 20)
		require.NoError(t, err)
		var actions []string
		for _, e := range entries {
			actions = append(actions, string(e.Actor)+" "+e.Action)
		}
		assert.Contains(t, actions, "ui:local dlq.replay_all")
		assert.Contains(t, actions, "ui:local dlq.replay")
	})

	t.Run("pause a kind, resume it, and watch the backlog drain", func(t *testing.T) {
		live := serve(t, b, s.ops, dashboard.Options{MinPoll: time.Second}) // refreshes every second
		backlog := func() int64 {
			cell := get(t, b, chromedp.Evaluate[string](`(document.querySelector("#kind-ok td[data-backlog]") || {}).textContent || ""`))
			n, err := strconv.ParseInt(strings.TrimSpace(cell), 10, 64)
			if err != nil {
				t.Logf("backlog cell %q: %s", cell, get(t, b, chromedp.Evaluate[string](`document.getElementById("main").innerHTML`)))
				return -1
			}
			return n
		}
		b.do(t, chromedp.Navigate(live+"/kinds"), chromedp.Click(css(`form[action="/kinds/ok/pause"] button`)),
			chromedp.WaitVisible(css(".flash.ok")))
		assert.Contains(t, b.text(t, ".flash.ok"), "kind ok is paused")
		// The pause reaches the workers through the fleet: publish once they have stopped.
		require.Eventually(t, func() bool {
			ov, err := s.ops.Overview(ctx, 0)
			require.NoError(t, err)
			for _, k := range ov.Kinds {
				if k.Kind == "ok" {
					return k.Paused && k.PausedWorkers == k.Workers
				}
			}
			return false
		}, 20*time.Second, 50*time.Millisecond, "the worker stops pulling kind ok")
		var jobs []string
		for i := range 5 {
			res, err := s.client.Publish(ctx, "ok", map[string]int{"n": i})
			require.NoError(t, err)
			jobs = append(jobs, res.ID)
		}
		// The page refreshes itself (app.js) and shows the jobs waiting.
		require.Eventually(t, func() bool { return backlog() == int64(len(jobs)) }, 20*time.Second, 200*time.Millisecond,
			"the kinds page shows the paused kind's backlog")
		b.do(t, chromedp.Navigate(live+"/"), chromedp.WaitVisible(css("[data-banner=paused]")))
		b.shoot(t, "overview-paused")
		b.do(t, chromedp.Navigate(live+"/kinds"), chromedp.Click(css(`form[action="/kinds/ok/resume"] button`)),
			chromedp.WaitVisible(css(".flash.ok")))
		require.Eventually(t, func() bool { return backlog() == 0 }, 20*time.Second, 200*time.Millisecond,
			"the backlog drains on the page once the kind is resumed")
		s.waitFor(t, levee.StateSucceeded, jobs...)
		b.do(t, chromedp.Navigate(url+"/audit"), chromedp.WaitVisible(css("table.grid")))
		b.shoot(t, "audit")
	})

	t.Run("a scheduled job is listed with its time, and cancelled", func(t *testing.T) {
		res, err := s.client.Publish(ctx, "ok", map[string]int{"later": 1}, levee.WithDelay(time.Hour))
		require.NoError(t, err)
		b.do(t, chromedp.Navigate(url+"/jobs?state=scheduled"), chromedp.WaitVisible(css(`tr[data-job="`+res.ID+`"] [data-run-at]`)))
		assert.Equal(t, res.RunAt.UTC().Format("2006-01-02 15:04:05Z"), b.text(t, `tr[data-job="`+res.ID+`"] [data-run-at]`))
		b.shoot(t, "jobs-scheduled")
		b.do(t, chromedp.Click(css(`tr[data-job="`+res.ID+`"] a`)), chromedp.WaitVisible(css("dd[data-run-at]")))
		assert.Contains(t, b.text(t, "h1"), "scheduled")
		assert.Equal(t, "Run now", b.text(t, "#retry"))
		b.do(t, chromedp.Click(id("cancel")), chromedp.WaitVisible(css(".flash.ok")))
		assert.Contains(t, b.text(t, ".flash.ok"), "is cancelled")
		st, err := s.client.Status(ctx, res.ID)
		require.NoError(t, err)
		assert.Equal(t, levee.StateDead, st.State)
		assert.Equal(t, admin.ReasonCancelled, st.Reason)
		assert.Contains(t, b.text(t, "h1"), "dead")
	})

	t.Run("read-only hides buttons and refuses a forged POST", func(t *testing.T) {
		ro := serve(t, b, s.ops, dashboard.Options{ReadOnly: true, MinPoll: time.Second})
		b.do(t, chromedp.Navigate(ro+"/kinds"), chromedp.WaitVisible(id("kind-outage")))
		assert.Zero(t, get(t, b, chromedp.Evaluate[int](`document.querySelectorAll("form[method=post], button[id]").length`)))
		b.do(t, chromedp.Navigate(ro+"/jobs/"+s.retrying[0]), chromedp.WaitVisible(css("h1")))
		assert.Zero(t, get(t, b, chromedp.Evaluate[int](`document.querySelectorAll("form[method=post]").length`)))
		status := get(t, b, chromedp.Evaluate[int](`fetch("/jobs/`+s.retrying[0]+`/cancel", {method: "POST"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
		assert.Equal(t, 403, status)
		st, err := s.client.Status(ctx, s.retrying[0])
		require.NoError(t, err)
		assert.Equal(t, levee.StateRetrying, st.State, "the forged cancel changed nothing")
	})

	t.Run("no CSP violations", func(t *testing.T) {
		assert.Empty(t, b.cspViolations())
		// The console does report a violation: an image from elsewhere is refused.
		b.do(t, chromedp.Navigate(url+"/"), chromedp.WaitVisible(css(".tiles")))
		get(t, b, chromedp.Evaluate[int](`document.body.insertAdjacentHTML("beforeend", '<img src="http://192.0.2.1/x.png">'); 1`))
		require.Eventually(t, func() bool { return len(b.cspViolations()) > 0 }, 5*time.Second, 50*time.Millisecond,
			"the control violation is reported; console: %v", b.messages())
	})
}
