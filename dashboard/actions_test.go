package dashboard

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/leveetype"
)

// deadJobs publishes n jobs of kind, which no worker serves, and captures them into the DLQ
// (reason no_handler). It returns their ids.
func (b *bundle) deadJobs(t *testing.T, kind string, n int) []string {
	t.Helper()
	ctx := t.Context()
	for i := range n {
		_, err := b.client.Publish(ctx, kind, map[string]int{"n": i})
		require.NoError(t, err)
	}
	var ids []string
	got, err := b.ops.OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: kind, OnJob: func(id string) { ids = append(ids, id) }})
	require.NoError(t, err)
	require.Equal(t, n, got)
	return ids
}

// location is where a 303 sends the browser, with its msg and err.
func location(t *testing.T, w *httptest.ResponseRecorder) (path, msg, errText string) {
	t.Helper()
	require.Equal(t, http.StatusSeeOther, w.Code, w.Body.String())
	u, err := url.Parse(w.Header().Get("Location"))
	require.NoError(t, err)
	return u.Path, u.Query().Get("msg"), u.Query().Get("err")
}

func (b *bundle) auditActions(t *testing.T) []string {
	t.Helper()
	entries, err := b.ops.AuditList(t.Context(), 100)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, string(e.Actor)+" "+e.Action+" "+e.Target)
	}
	return out
}

func TestOperatorActions(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ids := b.deadJobs(t, "charge", 3)

	t.Run("jobs page by page", func(t *testing.T) {
		seen := map[string]bool{}
		next := "/jobs?state=dead&limit=2"
		for pages := 0; next != ""; pages++ {
			require.Less(t, pages, 3)
			w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, next, nil))
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			for _, m := range jobRow.FindAllStringSubmatch(w.Body.String(), -1) {
				assert.False(t, seen[m[1]], "job %s on two pages", m[1])
				seen[m[1]] = true
			}
			next = ""
			if m := nextLink.FindStringSubmatch(w.Body.String()); m != nil {
				next = html.UnescapeString(m[1])
				assert.Contains(t, next, "state=dead")
			}
		}
		for _, id := range ids {
			assert.True(t, seen[id], id)
		}
		w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/jobs?limit=9999", nil))
		assert.Equal(t, http.StatusBadRequest, w.Code)
	})

	t.Run("pause and resume a kind", func(t *testing.T) {
		path, msg, errText := location(t, b.do(post(t, "/kinds/charge/pause", nil)))
		assert.Equal(t, "/kinds", path)
		assert.Equal(t, "kind charge is paused", msg)
		assert.Empty(t, errText)
		ov, err := b.ops.Overview(t.Context(), 0)
		require.NoError(t, err)
		paused := map[string]bool{}
		for _, k := range ov.Kinds {
			paused[k.Kind] = k.Paused
		}
		assert.True(t, paused["charge"])
		_, msg, _ = location(t, b.do(post(t, "/kinds/charge/resume", url.Values{"back": {"/?x=1"}})))
		assert.Equal(t, "kind charge is resumed", msg)
		assert.Contains(t, b.auditActions(t), "ui:local pause charge")
	})

	t.Run("a refused action says why", func(t *testing.T) {
		path, _, errText := location(t, b.do(post(t, "/jobs/01JC9X3V8J4T6M2Q7R5W0YBZ1N/cancel", nil)))
		assert.Equal(t, "/jobs/01JC9X3V8J4T6M2Q7R5W0YBZ1N", path)
		assert.NotEmpty(t, errText)
		_, _, errText = location(t, b.do(post(t, "/dlq/replay", nil)))
		assert.Contains(t, errText, "select dead jobs first")
	})

	t.Run("back never leaves the dashboard", func(t *testing.T) {
		for _, evil := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example"} {
			path, _, _ := location(t, b.do(post(t, "/kinds/charge/resume", url.Values{"back": {evil}})))
			assert.Equal(t, "/kinds", path, evil)
		}
	})

	t.Run("replay selected", func(t *testing.T) {
		_, msg, errText := location(t, b.do(post(t, "/dlq/replay", url.Values{"id": {ids[0]}, "back": {"/dlq?kind=charge"}})))
		assert.Equal(t, "replayed 1 dead job(s)", msg)
		assert.Empty(t, errText)
		_, err := b.ops.DeadJobGet(t.Context(), ids[0])
		require.ErrorIs(t, err, levee.ErrJobNotFound)
		assert.Contains(t, b.auditActions(t), "ui:local dlq.replay "+ids[0])
	})

	t.Run("bulk purge needs the typed count", func(t *testing.T) {
		form := url.Values{"action": {"purge"}, "kind": {"charge"}, "confirm": {"3"}}
		w := b.do(post(t, "/dlq/bulk", form))
		assert.Equal(t, http.StatusConflict, w.Code)
		assert.Contains(t, w.Body.String(), "type the number of matching jobs, 2")

		form.Set("confirm", "2")
		path, _, _ := location(t, b.do(post(t, "/dlq/bulk", form)))
		require.Regexp(t, `^/tasks/\w+$`, path)
		var p taskProgress
		require.Eventually(t, func() bool {
			w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, path+"/progress", nil))
			require.Equal(t, http.StatusOK, w.Code)
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
			return p.Finished
		}, 10*time.Second, 20*time.Millisecond)
		assert.Equal(t, 2, p.Done, p.Errors)
		assert.Equal(t, 100, p.Percent)
		for _, id := range ids[1:] {
			_, err := b.ops.DeadJobGet(t.Context(), id)
			require.ErrorIs(t, err, levee.ErrJobNotFound)
		}
		audit := b.auditActions(t)
		assert.Contains(t, audit, "ui:local dlq.purge_all kind=charge")
		assert.Contains(t, audit, "ui:local dlq.purge_all.done kind=charge")
		w = b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil))
		assert.Equal(t, http.StatusOK, w.Code)
		assert.Contains(t, w.Body.String(), `data-finished="true"`)
		assert.Contains(t, w.Body.String(), strconv.Itoa(2)+"</span> done")
	})
}

// Close stops a bulk action between two jobs and waits for it: nothing it started runs on.
// Not parallel, so that other tests' goroutines do not come and go meanwhile.
func TestCloseStopsBulkActions(t *testing.T) {
	b := setup(t, Options{})
	b.dash.Close() // setup's dashboard is not the one under test
	b.deadJobs(t, "mail", 20)
	leaks := goleak.IgnoreCurrent()
	d, err := New(b.ops, Options{LocalToken: testToken})
	require.NoError(t, err)
	b.dash = d
	path, _, _ := location(t, b.do(post(t, "/dlq/bulk", url.Values{"action": {"purge"}, "confirm": {"20"}})))
	d.Close()
	p := d.tasks.get(path[len("/tasks/"):]).progress()
	assert.True(t, p.Finished)
	if p.Done < 20 { // stopped early: the task says so
		require.NotEmpty(t, p.Errors)
		assert.Contains(t, p.Errors[len(p.Errors)-1], "shutting down")
	}
	goleak.VerifyNone(t, leaks)
}

var (
	jobRow   = regexp.MustCompile(`<tr data-job="([^"]+)">`)
	nextLink = regexp.MustCompile(`<a class="next" href="([^"]+)">`)
)

// countingClient is the real client, counting the calls of a job page.
type countingClient struct {
	*admin.Client
	status atomic.Int64
}

func (c *countingClient) JobGet(ctx context.Context, id string) (*leveetype.JobStatus, error) {
	c.status.Add(1)
	return c.Client.JobGet(ctx, id)
}

// The refresh script's polls of a page share one rendering per MinPoll: ten tabs polling cost
// what one does.
func TestPollsShareOneRendering(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	id := b.deadJobs(t, "charge", 1)[0]
	cc := &countingClient{Client: b.ops}
	d, err := New(cc, Options{MinPoll: time.Hour, LocalToken: testToken})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	b.dash = d
	var wg sync.WaitGroup
	bodies := make([]string, 10)
	for i := range bodies {
		wg.Go(func() {
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/jobs/"+id, nil)
			r.Header.Set("X-Levee-Partial", "1")
			w := b.do(r)
			assert.Equal(t, http.StatusOK, w.Code)
			bodies[i] = w.Body.String()
		})
	}
	wg.Wait()
	assert.Equal(t, int64(1), cc.status.Load(), "one rendering for ten polls")
	for _, body := range bodies {
		assert.Equal(t, bodies[0], body)
		assert.NotContains(t, body, "<html", "a poll gets the page's content only")
	}
	w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/jobs/"+id, nil))
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, int64(2), cc.status.Load(), "a page view (not a poll) renders afresh")
}

// A team mounts the dashboard under a path of its own server: links, forms and redirects
// stay under it.
func TestMountedUnderAPrefix(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	d, err := New(b.ops, Options{Prefix: "/ops/levee", LocalToken: testToken})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	mux := http.NewServeMux()
	mux.Handle("/ops/levee/", d)
	do := func(r *http.Request) *httptest.ResponseRecorder { return serveLocal(mux, r) }
	w := do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/ops/levee/kinds", nil))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	body := w.Body.String()
	assert.Contains(t, body, `href="/ops/levee/static/style.css"`)
	assert.Contains(t, body, `href="/ops/levee/dlq"`)
	assert.Contains(t, body, `action="/ops/levee/jobs"`)
	assert.NotRegexp(t, `(href|action|src)="/(static|jobs|dlq|kinds|audit)`, body, "no link leaves the prefix")
	w = do(post(t, "/ops/levee/kinds/charge/pause", nil))
	assert.Equal(t, http.StatusSeeOther, w.Code)
	assert.True(t, strings.HasPrefix(w.Header().Get("Location"), "/ops/levee/kinds?"), w.Header().Get("Location"))
	w = do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/ops/levee/static/app.js", nil))
	assert.Equal(t, http.StatusOK, w.Code)
	_, err = New(b.ops, Options{Prefix: "levee/"})
	assert.Error(t, err)
}

// Payloads are shown to operators, to viewers only when allowed, and never for redacted kinds.
func TestPayloadVisibility(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	charge := b.deadJobs(t, "charge", 1)[0]
	mail := b.deadJobs(t, "mail", 1)[0]
	users := map[string]User{"vic": {Role: RoleViewer, PasswordSHA256: hash("pw")}, "ada": {Role: RoleOperator, PasswordSHA256: hash("pw")}}
	cases := []struct {
		name, user, job string
		opts            Options
		shown           bool
		note            string
	}{
		{"operator", "ada", charge, Options{}, true, ""},
		{"viewer", "vic", charge, Options{}, false, "shown to operators only"},
		{"viewer allowed", "vic", charge, Options{AllowPayloads: true}, true, ""},
		{"redacted kind", "ada", mail, Options{RedactKinds: []string{"mail"}}, false, "Payloads of kind mail are redacted"},
		{"other kind unaffected", "ada", charge, Options{RedactKinds: []string{"mail"}}, true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Users = users
			d, err := New(b.ops, c.opts)
			require.NoError(t, err)
			t.Cleanup(d.Close)
			r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/jobs/"+c.job, nil)
			r.SetBasicAuth(c.user, "pw")
			w := httptest.NewRecorder()
			d.ServeHTTP(w, r)
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			body := w.Body.String()
			assert.Equal(t, c.shown, strings.Contains(body, `<details class="payload">`), body)
			assert.Equal(t, c.shown, strings.Contains(body, "&#34;n&#34;: 0"), "the payload itself")
			if c.note != "" {
				assert.Contains(t, body, c.note)
			}
			// Errors go with payloads: whoever may not see a kind's payloads sees neither its
			// jobs' errors (on the job page, the jobs list and the DLQ list) nor its results.
			kind := map[string]string{charge: "charge", mail: "mail"}[c.job]
			errText := "no worker serves kind &#34;" + kind + "&#34;"
			assert.Equal(t, c.shown, strings.Contains(body, errText), "the job's error on its page")
			for _, page := range []string{"/jobs?state=dead&kind=" + kind, "/dlq?kind=" + kind} {
				r := httptest.NewRequestWithContext(t.Context(), http.MethodGet, page, nil)
				r.SetBasicAuth(c.user, "pw")
				w := httptest.NewRecorder()
				d.ServeHTTP(w, r)
				require.Equal(t, http.StatusOK, w.Code, page)
				assert.Equal(t, c.shown, strings.Contains(w.Body.String(), errText), "the error on %s", page)
				assert.Equal(t, !c.shown, strings.Contains(w.Body.String(), "(hidden:"), "the note on %s", page)
			}
		})
	}
}

// Credential headers of an http payload are shown as xxxxx, to operators too.
func TestPayloadCredentialHeadersAreHidden(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	res, err := b.client.Publish(t.Context(), "hook", map[string]any{
		"url": "https://api.example.com/v1/x", "headers": map[string]string{"Authorization": "Bearer s3cret", "X-Api-Key": "s3cret", "X-Trace": "t-1"}})
	require.NoError(t, err)
	_, err = b.ops.OrphanCapture(t.Context(), admin.OrphanCaptureParams{Kind: "hook"})
	require.NoError(t, err)
	w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/jobs/"+res.ID, nil))
	require.Equal(t, http.StatusOK, w.Code)
	body := w.Body.String()
	assert.NotContains(t, body, "s3cret")
	assert.Contains(t, body, "t-1", "other headers are shown")
	assert.Contains(t, body, "xxxxx")
}

// A dead job whose payload nests deep renders a page that grows with the payload, not with
// the square of its depth: an 8 KB payload of nested arrays made a 16 MB page before.
func TestDeepPayloadPageIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	deep := json.RawMessage(strings.Repeat("[", 4000) + strings.Repeat("]", 4000))
	res, err := b.client.Publish(t.Context(), "deep", deep)
	require.NoError(t, err)
	_, err = b.ops.OrphanCapture(t.Context(), admin.OrphanCaptureParams{Kind: "deep"})
	require.NoError(t, err)
	w := b.do(httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/jobs/"+res.ID, nil))
	require.Equal(t, http.StatusOK, w.Code)
	require.Less(t, w.Body.Len(), 200_000, "the page is %d bytes for a payload of %d", w.Body.Len(), len(deep))
	require.Contains(t, w.Body.String(), strings.Repeat("[", 64), "the deep part is shown compact")
}
