package dashboard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// bundle is one test's dashboard on a fresh namespace of the real services.
type bundle struct {
	client *levee.Client
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
	d, err := New(c, opts)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return &bundle{client: c, dash: d, ns: ns}
}

// do serves one request from a loopback client unless the request says otherwise.
func (b *bundle) do(r *http.Request) *httptest.ResponseRecorder {
	if r.RemoteAddr == "192.0.2.1:1234" { // httptest's default: make it local
		r.RemoteAddr = "127.0.0.1:40000"
	}
	w := httptest.NewRecorder()
	b.dash.ServeHTTP(w, r)
	return w
}

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
	ov, err := open.client.Overview(context.Background(), 0)
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
	for _, bad := range []string{"ada:operator", "ada:root:" + h, "ada:viewer:plaintext-password", "ada:viewer:-\nada:viewer:-"} {
		_, err := ParseUsers(strings.NewReader(bad))
		require.Error(t, err, bad)
		assert.NotContains(t, err.Error(), "plaintext-password", "a malformed line may hold a password: it is not echoed")
	}
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
	ov := &levee.Overview{
		Counts:   map[levee.State]int64{levee.StateRunning: 3, levee.StateRetrying: 2, levee.StateSucceeded: 1200, levee.StateDead: 7},
		DLQDepth: 7, Backlog: 42, OldestAge: 95 * time.Second, At: at,
		Kinds: []levee.KindInfo{
			{Kind: "charge", Backlog: 40, InFlight: 3, OldestAge: 95 * time.Second, Succeeded1h: 1100, Failed1h: 9,
				AttemptP50: 120 * time.Millisecond, AttemptP95: 2 * time.Second, Breaker: "open", BreakerUntil: &until,
				Rate: "50/s", RateUse: 49.5, Workers: 2},
			{Kind: "email", Backlog: 2, Succeeded1h: 100, Breaker: "closed", Workers: 1, Paused: true, PausedBy: "ui:ada", PausedAt: &at, PausedWorkers: 1},
		},
		Buckets: []levee.ActivityBucket{{Start: at.Add(-2 * time.Minute), Succeeded: 10, Failed: 2}, {Start: at.Add(-time.Minute), Succeeded: 5}},
	}
	operator := identity{name: "ada", role: RoleOperator}
	cases := []struct {
		file, page string
		data       any
	}{
		{"overview.golden.html", "overview", overviewData{O: ov, Chart: activityChart(ov.Buckets),
			States:       []stateCount{{levee.StateQueued, 0}, {levee.StateRunning, 3}, {levee.StateDead, 7}},
			OpenBreakers: ov.Kinds[:1], Paused: ov.Kinds[1:]}},
		{"kinds.golden.html", "kinds", ov},
		{"dlq.golden.html", "dlq", &dlqData{Form: dlqForm{Kind: "charge"}, Total: 1, At: at, Back: "/dlq?kind=charge",
			Groups: []dlqGroup{{Kind: "charge", Reason: "max_attempts", Count: 1, Oldest: at, Newest: at}},
			Lines:  []deadLine{{ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "charge", Reason: "max_attempts", Attempts: 5, LastError: "HTTP 503 <oops>", FailedAt: at}}}},
		{"bulk.golden.html", "bulk", &bulkData{Action: "replay", Form: dlqForm{Kind: "charge", Since: "1h"}, Count: 12, At: at}},
		{"job.golden.html", "job", jobData{
			Job: &levee.JobStatus{State: levee.StateDead, ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "charge", Key: "order-1001", Attempts: 2,
				Reason: "max_attempts", LastError: "HTTP 503 <from provider>", EnqueuedAt: &at, StartedAt: &at, FinishedAt: &until},
			Attempts: []levee.Attempt{
				{N: 1, StartedAt: at, FinishedAt: &at, Outcome: "failed", Error: "HTTP 503", Worker: "w1"},
				{N: 2, StartedAt: at, FinishedAt: &until, Outcome: "failed", Error: "HTTP 503 <from provider>", Worker: "w2"},
			},
			Dead:    &levee.DeadJob{ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "charge", Reason: "max_attempts", Attempts: 2, FailedAt: until, Worker: "w2"},
			Payload: "{\n  \"cents\": 4200\n}", CanRetry: true}},
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
