package dashboard

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/leveetype"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// bundle is one test's dashboard on a fresh namespace of the real services.
type bundle struct {
	client *levee.Client
	ops    *admin.Client
	dash   *Dashboard
	ns     string
}

// setup returns a dashboard with opts on a fresh namespace (streams and schema created, and
// dropped at cleanup).
func setup(t *testing.T, opts Options) *bundle {
	t.Helper()
	ns := leveetest.Namespace(t)
	natsURL := leveetest.NATSURL(t)
	leveetest.Ledger(t, ns)
	leveetest.Queue(t, natsURL, ns)
	c, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: natsURL, Pool: leveetest.Pool(t), Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	opts.Logger = slog.New(slog.DiscardHandler)
	opts.LocalToken = cmp.Or(opts.LocalToken, testToken)
	ops := admin.New(c)
	d, err := New(ops, opts)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return &bundle{client: c, ops: ops, dash: d, ns: ns}
}

// do serves one request from a loopback client unless the request says otherwise.
func (b *bundle) do(r *http.Request) *httptest.ResponseRecorder {
	return serveLocal(b.dash, r)
}

// serveLocal serves r as the local operator's browser would send it, unless the test set
// otherwise: from loopback, to a loopback Host, with the run's token cookie.
func serveLocal(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	if r.RemoteAddr == "192.0.2.1:1234" { // httptest's default: make it local
		r.RemoteAddr = "127.0.0.1:40000"
	}
	if r.Host == "example.com" { // httptest's default
		r.Host = "127.0.0.1:8080"
	}
	if _, err := r.Cookie("levee_token"); err != nil {
		r.AddCookie(&http.Cookie{Name: "levee_token", Value: testToken})
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// testToken is the local token of the tests' dashboards.
const testToken = "test-token"

func post(t *testing.T, target string, form url.Values) *http.Request {
	r := httptest.NewRequestWithContext(t.Context(), http.MethodPost, target, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// getRoutes are every page, with the status an empty namespace gives.
var getRoutes = []struct {
	path   string
	status int
}{
	{"/", http.StatusOK},
	{"/kinds", http.StatusOK},
	{"/jobs", http.StatusOK},
	{"/jobs?state=dead&kind=charge&since=1h", http.StatusOK},
	{"/jobs?state=scheduled&kind=charge", http.StatusOK},
	{"/jobs?since=nonsense", http.StatusBadRequest},
	{"/jobs?state=queued", http.StatusBadRequest},
	{"/jobs?q=no-such-key", http.StatusNotFound},
	{"/jobs/01JC9X3V8J4T6M2Q7R5W0YBZ1N", http.StatusNotFound},
	{"/jobs/not.an*id", http.StatusBadRequest},
	{"/dlq", http.StatusOK},
	{"/dlq?kind=charge&reason=max_attempts&since=2d&older_than=1h", http.StatusOK},
	{"/dlq?since=1h&older_than=2h", http.StatusBadRequest},
	{"/dlq/bulk?action=replay&kind=charge", http.StatusOK},
	{"/dlq/bulk?action=explode", http.StatusBadRequest},
	{"/tasks/nope", http.StatusNotFound},
	{"/tasks/nope/progress", http.StatusNotFound},
	{"/audit", http.StatusOK},
	{"/static/app.js", http.StatusOK},
	{"/static/style.css", http.StatusOK},
	{"/nowhere", http.StatusNotFound},
}

// postRoutes are every state-changing route.
var postRoutes = []struct {
	path string
	form url.Values
}{
	{"/jobs/01JC9X3V8J4T6M2Q7R5W0YBZ1N/retry", nil},
	{"/jobs/01JC9X3V8J4T6M2Q7R5W0YBZ1N/cancel", nil},
	{"/kinds/charge/pause", nil},
	{"/kinds/charge/resume", nil},
	{"/kinds/charge/reset-breaker", nil},
	{"/dlq/replay", url.Values{"id": {"01JC9X3V8J4T6M2Q7R5W0YBZ1N"}}},
	{"/dlq/purge", url.Values{"id": {"01JC9X3V8J4T6M2Q7R5W0YBZ1N"}}},
	{"/dlq/bulk", url.Values{"action": {"purge"}, "confirm": {"0"}}},
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	for _, rt := range getRoutes {
		t.Run(rt.path, func(t *testing.T) {
			w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, rt.path, nil))
			assert.Equal(t, rt.status, w.Code, w.Body.String())
			assert.Equal(t, ContentSecurityPolicy, w.Header().Get("Content-Security-Policy"))
			assert.Equal(t, "nosniff", w.Header().Get("X-Content-Type-Options"))
			if strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
				assertNoInlineCode(t, w.Body.String())
			}
		})
	}
}

// assertNoInlineCode checks that a page holds nothing the CSP would block: no inline script or
// style, no event-handler attribute.
func assertNoInlineCode(t *testing.T, html string) {
	t.Helper()
	assert.NotContains(t, html, "<script>")
	assert.NotContains(t, html, "style=")
	assert.NotContains(t, html, "<style")
	assert.NotContains(t, html, " onclick=")
	assert.NotContains(t, html, " onsubmit=")
	assert.NotContains(t, html, "javascript:")
}

func TestStateChangesRefused(t *testing.T) {
	t.Parallel()
	viewerPW := "look-dont-touch"
	users := map[string]User{"vic": {Role: RoleViewer, PasswordSHA256: hash(viewerPW)}}
	readOnly := setup(t, Options{ReadOnly: true})
	viewer := setup(t, Options{Users: users})
	open := setup(t, Options{})
	cases := []struct {
		name   string
		b      *bundle
		modify func(*http.Request)
		status int
	}{
		{"read-only", readOnly, func(*http.Request) {}, http.StatusForbidden},
		{"viewer", viewer, func(r *http.Request) { r.SetBasicAuth("vic", viewerPW) }, http.StatusForbidden},
		{"no credentials", viewer, func(*http.Request) {}, http.StatusUnauthorized},
		{"wrong password", viewer, func(r *http.Request) { r.SetBasicAuth("vic", "guess") }, http.StatusUnauthorized},
		{"cross-site", open, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }, http.StatusForbidden},
		{"foreign origin", open, func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }, http.StatusForbidden},
		{"not loopback", open, func(r *http.Request) { r.RemoteAddr = "203.0.113.7:5555" }, http.StatusForbidden},
		{"through a local proxy", open, func(r *http.Request) { r.Header.Set("X-Forwarded-For", "203.0.113.7") }, http.StatusForbidden},
	}
	for _, c := range cases {
		for _, rt := range postRoutes {
			t.Run(c.name+rt.path, func(t *testing.T) {
				r := post(t, rt.path, rt.form)
				c.modify(r)
				w := c.b.do(r)
				assert.Equal(t, c.status, w.Code, w.Body.String())
				assert.Equal(t, ContentSecurityPolicy, w.Header().Get("Content-Security-Policy"))
			})
		}
	}
	// The refusals changed nothing: the kind was never paused.
	ov, err := open.ops.Overview(context.Background(), 0)
	require.NoError(t, err)
	for _, k := range ov.Kinds {
		assert.False(t, k.Paused, k.Kind)
	}
}

func TestReadOnlyAndViewersSeeNoButtons(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string]Options{
		"read-only": {ReadOnly: true},
		"viewer":    {Users: map[string]User{"vic": {Role: RoleViewer, PasswordSHA256: hash("pw")}}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, opts)
			for _, path := range []string{"/", "/kinds", "/jobs", "/dlq"} {
				r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil)
				r.SetBasicAuth("vic", "pw")
				w := b.do(r)
				require.Equal(t, http.StatusOK, w.Code, path)
				assert.NotContains(t, w.Body.String(), `method="post"`, path)
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	users := map[string]User{
		"ada": {Role: RoleOperator, PasswordSHA256: hash("s3cret")},
		"pam": {Role: RoleOperator}, // proxy only
	}
	b := setup(t, Options{
		Users: users, TrustedProxyHeader: "X-Forwarded-User",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")},
	})
	cases := []struct {
		name   string
		modify func(*http.Request)
		status int
		who    string
	}{
		{"basic auth", func(r *http.Request) { r.SetBasicAuth("ada", "s3cret") }, http.StatusOK, "ada · operator"},
		{"unknown user", func(r *http.Request) { r.SetBasicAuth("eve", "s3cret") }, http.StatusUnauthorized, ""},
		{"proxy-only user by password", func(r *http.Request) { r.SetBasicAuth("pam", "") }, http.StatusUnauthorized, ""},
		{"trusted proxy, listed user", func(r *http.Request) {
			r.RemoteAddr = "10.0.0.9:3000"
			r.Header.Set("X-Forwarded-User", "pam")
		}, http.StatusOK, "pam · operator"},
		{"trusted proxy, other user is a viewer", func(r *http.Request) {
			r.RemoteAddr = "10.0.0.9:3000"
			r.Header.Set("X-Forwarded-User", "bob")
		}, http.StatusOK, "bob · viewer"},
		{"header from an untrusted address", func(r *http.Request) {
			r.RemoteAddr = "10.0.1.9:3000"
			r.Header.Set("X-Forwarded-User", "pam")
		}, http.StatusUnauthorized, ""},
		// A proxy that adds its header to the client's passes two: the first was the client's.
		{"trusted proxy, header twice", func(r *http.Request) {
			r.RemoteAddr = "10.0.0.9:3000"
			r.Header.Add("X-Forwarded-User", "pam")
			r.Header.Add("X-Forwarded-User", "bob")
		}, http.StatusUnauthorized, ""},
		{"trusted proxy, two values in one", func(r *http.Request) {
			r.RemoteAddr = "10.0.0.9:3000"
			r.Header.Set("X-Forwarded-User", "pam, bob")
		}, http.StatusUnauthorized, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
			c.modify(r)
			w := b.do(r)
			assert.Equal(t, c.status, w.Code)
			if c.who != "" {
				assert.Contains(t, w.Body.String(), c.who)
			}
			if c.status == http.StatusUnauthorized {
				assert.Contains(t, w.Header().Get("WWW-Authenticate"), "Basic")
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string]Options{
		"bad role":           {Users: map[string]User{"a": {Role: "admin"}}},
		"short hash":         {Users: map[string]User{"a": {Role: RoleViewer, PasswordSHA256: []byte{1}}}},
		"header alone":       {TrustedProxyHeader: "X-User"},
		"poll below 1s":      {MinPoll: 10 * time.Millisecond},
		"proxies alone":      {TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		"empty name of user": {Users: map[string]User{"": {Role: RoleViewer}}},
	} {
		_, err := New(nil, opts)
		assert.Error(t, err, name)
	}
}

func TestParseUsers(t *testing.T) {
	t.Parallel()
	h := hex.EncodeToString(hash("pw"))
	users, err := ParseUsers(strings.NewReader("# dashboard users\nada:operator:" + h + "\n\nvic:viewer:" + h + ", pam:operator:-\n"))
	require.NoError(t, err)
	assert.Equal(t, map[string]User{
		"ada": {Role: RoleOperator, PasswordSHA256: hash("pw")},
		"vic": {Role: RoleViewer, PasswordSHA256: hash("pw")},
		"pam": {Role: RoleOperator},
	}, users)
	for _, bad := range []string{"ada:operator", "ada:root:" + h, "ada:viewer:plaintext-password", "ada:viewer:-\nada:viewer:-",
		"ada:plaintext-password:" + h, "ada:viewer:$2a$10$plaintext-password"} {
		_, err := ParseUsers(strings.NewReader(bad))
		require.Error(t, err, bad)
		assert.NotContains(t, err.Error(), "plaintext-password", "a malformed line may hold a password: it is not echoed")
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	users, err = ParseUsers(strings.NewReader("ada:operator:" + string(bc)))
	require.NoError(t, err)
	assert.Equal(t, User{Role: RoleOperator, PasswordHash: string(bc)}, users["ada"])
}

// A bcrypt user signs in with the password; failed sign-ins are throttled, per address and per
// user name, and the throttle lifts when its window has passed.
func TestSignInWithBcryptAndThrottle(t *testing.T) {
	t.Parallel()
	bc, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	require.NoError(t, err)
	b := setup(t, Options{Users: map[string]User{"ada": {Role: RoleOperator, PasswordHash: string(bc)}}})
	now := time.Now()
	b.dash.signIns.now = func() time.Time { return now }
	signIn := func(user, pw, from string) int {
		r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/kinds", nil)
		r.RemoteAddr = from
		r.SetBasicAuth(user, pw)
		return b.do(r).Code
	}
	require.Equal(t, http.StatusOK, signIn("ada", "right", "10.1.1.1:1"))
	for range maxFailedSignIns {
		require.Equal(t, http.StatusUnauthorized, signIn("ada", "wrong", "10.1.1.2:1"))
	}
	assert.Equal(t, http.StatusTooManyRequests, signIn("ada", "right", "10.1.1.2:1"), "that address is throttled")
	assert.Equal(t, http.StatusTooManyRequests, signIn("ada", "right", "10.1.1.3:1"), "so is that user, from anywhere")
	assert.Equal(t, http.StatusUnauthorized, signIn("bob", "x", "10.1.1.3:1"), "other users from other addresses are not")
	now = now.Add(signInWindow)
	assert.Equal(t, http.StatusOK, signIn("ada", "right", "10.1.1.2:1"), "the window has passed")
}

func hash(pw string) []byte {
	h := sha256.Sum256([]byte(pw))
	return h[:]
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./dashboard -run Golden -update to create it")
	assert.Equal(t, string(want), got)
}

// TestGoldenFragments renders pages from fixed data and compares them with testdata.
func TestGoldenFragments(t *testing.T) {
	t.Parallel()
	d, err := New(nil, Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	until := at.Add(30 * time.Second)
	ov := &admin.Overview{
		Counts:   map[levee.State]int64{levee.StateRunning: 3, levee.StateRetrying: 2, levee.StateSucceeded: 1200, levee.StateDead: 7},
		DLQDepth: 7, Backlog: 42, OldestAge: 95 * time.Second, At: at,
		Kinds: []admin.KindInfo{
			{Kind: "charge", Backlog: 40, InFlight: 3, OldestAge: 95 * time.Second, Succeeded1h: 1100, Failed1h: 9,
				AttemptP50: 120 * time.Millisecond, AttemptP95: 2 * time.Second, Breaker: "open", BreakerUntil: &until,
				BreakerScope: "fleet", BreakerCalls: 40, BreakerFailures: 30, BreakerFailureRate: 0.75, BreakerCutOff: 1,
				Rate: "50/s", RateUse: 49.5, Workers: 2},
			{Kind: "email", Scheduled: 5, Backlog: 2, Succeeded1h: 100, Breaker: "closed", BreakerScope: "worker", BreakerCalls: 12, BreakerFailures: 1,
				BreakerFailureRate: 0.0833, Workers: 1, Paused: true, PausedBy: "ui:ada", PausedAt: &at, PausedWorkers: 1},
			{Kind: "sms", Breaker: "half-open", BreakerScope: "fleet", BreakerTrials: 1, BreakerTrialsOK: 2, BreakerCalls: 5,
				BreakerFailures: 5, BreakerFailureRate: 1, Workers: 3},
			{Kind: "push", Breaker: "closed", BreakerScope: "fleet", BreakerCutOff: 2, Workers: 2},
		},
		Buckets: []admin.ActivityBucket{{Start: at.Add(-2 * time.Minute), Succeeded: 10, Failed: 2}, {Start: at.Add(-time.Minute), Succeeded: 5}},
	}
	operator := identity{name: "ada", role: RoleOperator}
	cases := []struct {
		file, page string
		data       any
	}{
		{"overview.golden.html", "overview", overviewData{O: ov, Chart: activityChart(ov.Buckets),
			States:       []stateCount{{levee.StateQueued, 0}, {levee.StateRunning, 3}, {levee.StateDead, 7}},
			OpenBreakers: []admin.KindInfo{ov.Kinds[0], ov.Kinds[2]}, CutOff: ov.Kinds[3:], Paused: ov.Kinds[1:2]}},
		{"kinds.golden.html", "kinds", ov},
		{"dlq.golden.html", "dlq", &dlqData{Form: dlqForm{Kind: "charge"}, Total: 1, At: at, Back: "/dlq?kind=charge",
			Groups: []dlqGroup{{Kind: "charge", Reason: "max_attempts", Count: 1, Oldest: at, Newest: at}},
			Lines:  []deadLine{{ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "charge", Reason: "max_attempts", Attempts: 5, LastError: "HTTP 503 <oops>", FailedAt: at}}}},
		{"bulk.golden.html", "bulk", &bulkData{Action: "replay", Form: dlqForm{Kind: "charge", Since: "1h"}, Count: 12, At: at}},
		{"job.golden.html", "job", jobData{
			Job: &levee.JobStatus{State: levee.StateDead, ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "charge", Key: "order-1001", Attempts: 2,
				Reason: "max_attempts", LastError: "HTTP 503 <from provider>", EnqueuedAt: &at, StartedAt: &at, FinishedAt: &until},
			Attempts: []leveetype.Attempt{
				{N: 1, StartedAt: at, FinishedAt: &at, Outcome: "failed", Error: "HTTP 503", Worker: "w1"},
				{N: 2, StartedAt: at, FinishedAt: &until, Outcome: "failed", Error: "HTTP 503 <from provider>", Worker: "w2"},
			},
			Dead:    &leveetype.DeadJob{ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "charge", Reason: "max_attempts", Attempts: 2, FailedAt: until, Worker: "w2"},
			Payload: "{\n  \"cents\": 4200\n}", CanRetry: true}},
		{"jobs_scheduled.golden.html", "jobs", &jobsData{Form: jobsForm{State: "scheduled"}, States: jobStates, Next: "MTc2NHwx",
			Jobs: []levee.JobStatus{{State: levee.StateScheduled, ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "email", Key: "welcome-42",
				EnqueuedAt: &at, RunAt: &until, LastError: "nats: timeout"}}}},
		{"job_scheduled.golden.html", "job", jobData{
			Job: &levee.JobStatus{State: levee.StateScheduled, ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "email", Key: "welcome-42",
				EnqueuedAt: &at, RunAt: &until},
			Attempts: []leveetype.Attempt{}, PayloadNote: "The payload waits in the ledger with the job; this page shows payloads of dead jobs only.",
			CanRetry: true, CanCancel: true}},
	}
	for _, c := range cases {
		var b strings.Builder
		p := page{Me: operator, CanAct: d.canAct(operator), Data: c.data}
		require.NoError(t, d.pages[c.page].ExecuteTemplate(&b, "content", p), c.page)
		html := agePattern.ReplaceAllString(b.String(), ">AGE ago<")
		assertNoInlineCode(t, html)
		golden(t, c.file, html)
	}
}

// agePattern matches relative ages ("3h05m ago"), which change with the clock.
var agePattern = regexp.MustCompile(`>[0-9dhms]+ ago<`)

// The overview and kinds pages show the fleet's breaker from a running worker: its state and
// next trial from the shared record, the failures in the fleet's window, and the workers cut
// off from the record.
func TestBreakerPages(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{MinPoll: time.Second})
	ctx := t.Context()
	w, err := levee.NewWorker(levee.WorkerConfig{NATSURL: leveetest.NATSURL(t), Pool: leveetest.Pool(t), Namespace: b.ns,
		SkipMigrate: true, Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: time.Second})
	require.NoError(t, err)
	require.NoError(t, w.Handle("charge", levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) {
		return nil, errors.New("connection refused")
	}), levee.Policy{Backoff: levee.Backoff{Base: time.Hour, Max: time.Hour},
		Breaker: levee.BreakerPolicy{Window: 10 * time.Minute, MinCalls: 2, FailureRate: 0.5, OpenFor: time.Hour}}))
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})
	for range 2 {
		_, err := b.client.Publish(ctx, "charge", nil)
		require.NoError(t, err)
	}
	get := func(path string) string {
		r := b.do(httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil))
		require.Equal(t, http.StatusOK, r.Code, r.Body.String())
		return r.Body.String()
	}
	var page string
	require.Eventually(t, func() bool {
		page = get("/kinds")
		return strings.Contains(page, `data-breaker="open"`) && strings.Contains(page, "2 of 2 calls failed (100%)")
	}, 30*time.Second, 100*time.Millisecond, "two failures open the fleet's breaker")

	q := leveetest.Queue(t, leveetest.NATSURL(t), b.ns)
	store, err := fleet.New(q).Breakers(ctx, false)
	require.NoError(t, err)
	v, _, found, err := store.Get(ctx, "charge")
	require.NoError(t, err)
	require.True(t, found)
	until := executor.ParseShared(v).Until
	assert.Regexp(t, `<span class="breaker breaker-open">open</span> until `+regexp.QuoteMeta(formatTime(until))+`, next trial in 59m\d\ds<br>`, page)
	banner := regexp.MustCompile(`<p class="banner err" data-banner="breaker">.*</p>`).FindString(get("/"))
	assert.Regexp(t, `Breaker <strong>open</strong> for kind <a href="/kinds#kind-charge">charge</a>: next trial at `+
		regexp.QuoteMeta(formatTime(until))+`, in 59m\d\ds; 2 of 2 calls failed \(100%\) in the fleet's window</p>`, banner)

	// The worker cannot reach the record any more: it decides alone, and the pages say so.
	js, err := jetstream.New(leveetest.Conn(t, leveetest.NATSURL(t)))
	require.NoError(t, err)
	require.NoError(t, js.DeleteKeyValue(ctx, strings.ToUpper(b.ns)+"_BREAKERS"))
	require.Eventually(t, func() bool {
		return strings.Contains(get("/kinds"), `<span class="tag warn" data-breaker-cut-off>1 of 1 workers cut off</span>`)
	}, 30*time.Second, 100*time.Millisecond, "the worker is cut off")
	assert.Contains(t, get("/"), "; 1 of 1 workers cut off from the fleet's breaker</p>")
}

// Without users, the local operator is a loopback client that names a loopback Host and
// carries the run's token. A page in the operator's browser whose name was rebound to
// 127.0.0.1 sends its own name as Host, and no page knows the token: before, a POST with
// Host rebind.attacker.example paused a kind.
func TestLocalOperatorNeedsLoopbackHostAndToken(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	pause := func(modify func(r *http.Request)) int {
		r := post(t, "/kinds/noop/pause", url.Values{})
		modify(r)
		return b.do(r).Code
	}
	for _, host := range []string{"rebind.attacker.example:8080", "rebind.attacker.example", "10.0.0.1:8080", "127.0.0.1.nip.io:8080"} {
		assert.Equal(t, http.StatusForbidden, pause(func(r *http.Request) { r.Host = host }), host)
	}
	for _, cookie := range []string{"", "wrong"} {
		assert.Equal(t, http.StatusForbidden, pause(func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: "levee_token", Value: cookie})
		}), "cookie %q", cookie)
	}
	ov, err := b.ops.Overview(t.Context(), 0)
	require.NoError(t, err)
	for _, k := range ov.Kinds {
		assert.False(t, k.Paused, "refused requests paused %s", k.Kind)
	}

	get := func(target, host string, cookie bool) *httptest.ResponseRecorder {
		r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, target, nil)
		r.Host = host
		if !cookie {
			r.AddCookie(&http.Cookie{Name: "levee_token", Value: "none"})
		}
		return b.do(r)
	}
	for _, host := range []string{"127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.2:8080", "LOCALHOST:8080"} {
		assert.Equal(t, http.StatusOK, get("/kinds", host, true).Code, host)
	}
	w := get("/kinds", "127.0.0.1:8080", false)
	assert.Equal(t, http.StatusForbidden, w.Code)
	assert.Contains(t, w.Body.String(), "token")

	// The printed URL sets the cookie and drops the token from the address bar.
	w = get("/jobs?token="+testToken+"&state=dead", "127.0.0.1:8080", false)
	require.Equal(t, http.StatusSeeOther, w.Code)
	assert.Equal(t, "/jobs?state=dead", w.Header().Get("Location"))
	set := w.Result().Cookies()
	require.Len(t, set, 1)
	assert.Equal(t, testToken, set[0].Value)
	assert.True(t, set[0].HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, set[0].SameSite)
	assert.Equal(t, http.StatusForbidden, get("/jobs?token=wrong", "127.0.0.1:8080", false).Code)
	assert.Equal(t, http.StatusForbidden, get("/jobs?token="+testToken, "rebind.attacker.example:8080", false).Code,
		"the token is not accepted under another Host either")

	// With users, basic auth decides, not the token.
	users := setup(t, Options{Users: map[string]User{"ada": {Role: RoleOperator, PasswordSHA256: hash("pw")}}})
	r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/kinds", nil)
	r.SetBasicAuth("ada", "pw")
	r.AddCookie(&http.Cookie{Name: "levee_token", Value: "none"})
	assert.Equal(t, http.StatusOK, users.do(r).Code)
	assert.Empty(t, users.dash.Token())
}

// The banner shows only what an action of this dashboard wrote: a link of someone else's with
// ?err= must not put their words in it.
func TestBannerTextIsSigned(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	_, err := b.client.Publish(t.Context(), "noop", nil) // a kind Levee knows of
	require.NoError(t, err)
	w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/kinds?err=Session+expired:+sign+in+at+evil.example", nil))
	require.Equal(t, http.StatusOK, w.Code)
	assert.NotContains(t, w.Body.String(), "evil.example")
	w = b.do(post(t, "/kinds/noop/pause", url.Values{}))
	require.Equal(t, http.StatusSeeOther, w.Code)
	loc := w.Header().Get("Location")
	w = b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, loc, nil))
	assert.Contains(t, w.Body.String(), "kind noop is paused", "the action's own outcome is shown")
}

// A DLQ filter with an impossible kind or an unknown reason is refused, not scanned for.
func TestDLQFilterIsValidated(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	for _, q := range []string{"kind=Bad.Kind", "reason=bogus"} {
		w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/dlq?"+q, nil))
		assert.Equal(t, http.StatusBadRequest, w.Code, q)
	}
	w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/dlq?reason=max_attempts", nil))
	assert.Equal(t, http.StatusOK, w.Code)
}

// The redirect that drops the token stays on the dashboard, whatever the path looks like.
func TestTokenRedirectStaysHere(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
	r.URL.Path, r.URL.RawQuery = "//evil.example/", "token="+testToken
	r.AddCookie(&http.Cookie{Name: "levee_token", Value: "none"})
	w := b.do(r)
	require.Equal(t, http.StatusSeeOther, w.Code)
	assert.Equal(t, "/evil.example/", w.Header().Get("Location"))
}

// A flood of failures from other clients does not lift the block of a user under attack.
func TestThrottleSurvivesAFlood(t *testing.T) {
	t.Parallel()
	th := newThrottle(3, time.Minute)
	for range 3 {
		th.failed("addr:10.0.0.1", "user:ada")
	}
	require.Positive(t, th.blocked("user:ada"))
	for i := range maxThrottled + 10 {
		th.failed(fmt.Sprintf("addr:10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	assert.Positive(t, th.blocked("user:ada"), "still blocked")
	assert.LessOrEqual(t, len(th.seen), maxThrottled+20)
	assert.Equal(t, "net:2001:db8::/64", clientKey(netip.MustParseAddr("2001:db8::1234")), "an IPv6 client is its /64")
}
