package builtin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/builtin"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/leveetype"
)

// request is what a test server saw of one call.
type request struct {
	Method, Path, ContentType, Key string
	Header                         http.Header
	Body                           string
}

// server is an httptest server that records calls and answers with respond.
type server struct {
	*httptest.Server
	mu    sync.Mutex
	calls []request
}

func newServer(t *testing.T, respond http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.calls = append(s.calls, request{
			Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"),
			Key: r.Header.Get("Idempotency-Key"), Header: r.Header.Clone(), Body: string(body),
		})
		s.mu.Unlock()
		if respond != nil {
			respond(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) Calls() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.calls...)
}

func status(code int, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, http.StatusText(code))
	}
}

func newHTTP(t *testing.T, cfg builtin.HTTPConfig) *builtin.HTTP {
	t.Helper()
	h, err := builtin.NewHTTP(cfg)
	require.NoError(t, err)
	return h
}

func job(key, payload string) *leveetype.Job {
	return &leveetype.Job{ID: "J1", Kind: "http", Key: key, Payload: json.RawMessage(payload), Attempt: 1, MaxAttempts: 5}
}

func payload(t *testing.T, v map[string]any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// reasonOf returns the dead-letter reason Classify gives err, requiring it to be permanent.
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	require.Error(t, err)
	var perm *executor.PermanentError
	require.ErrorAs(t, err, &perm, "want a permanent error, got %v", err)
	v := executor.Classify(context.Background(), err)
	require.Equal(t, executor.Dead, v.Class)
	return v.Reason
}

func requireRetryable(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	var perm *executor.PermanentError
	require.False(t, errors.As(err, &perm), "want a retryable error, got permanent %v", err)
	require.Equal(t, executor.Retry, executor.Classify(context.Background(), err).Class)
}

func TestNewHTTPValidatesAllowList(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"api.example.com", "ftp://files.example.com/", "https://", "https://user:pw@api.example.com/",
		"https://api.example.com/?q=1", "https://api.example.com/#frag", "://bad"} {
		_, err := builtin.NewHTTP(builtin.HTTPConfig{Allow: []string{bad}})
		require.Error(t, err, "allow %q", bad)
		require.Contains(t, err.Error(), "http.allow", "allow %q", bad)
	}
	_, err := builtin.NewHTTP(builtin.HTTPConfig{Allow: []string{"https://api.example.com", "http://10.0.0.1:8080/v1/"}})
	require.NoError(t, err)
}

func TestHTTPAllowList(t *testing.T) {
	t.Parallel()
	// The client never reaches the network: every allowed URL is answered by this transport.
	var mu sync.Mutex
	var reached []string
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		reached = append(reached, r.URL.String())
		mu.Unlock()
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader("ok")), Header: http.Header{}, Request: r}, nil
	})}
	h := newHTTP(t, builtin.HTTPConfig{Client: client, Allow: []string{
		"https://api.example.com",
		"https://pay.example.com/v1/",
		"http://Internal.Example.com:8080/hooks/",
		"https://ops.example.com/api",
	}})
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://api.example.com/", true},
		{"https://api.example.com/anything/at/all?x=1", true},
		{"https://API.example.com/upper-host", true},
		{"https://api.example.com.evil.com/", false},
		{"https://evil.com/api.example.com/", false},
		{"https://api.example.com:8443/", false},
		{"http://api.example.com/", false},
		{"https://user:s3cret@api.example.com/", false},
		{"https://pay.example.com/v1/charges", true},
		{"https://pay.example.com/v1/", true},
		{"https://pay.example.com/v2/charges", false},
		{"https://pay.example.com/", false},
		{"https://pay.example.com/v1", false},
		{"http://internal.example.com:8080/hooks/x", true},
		{"http://internal.example.com/hooks/x", false},
		{"http://internal.example.com:8080/admin", false},
		// Dot segments could climb out of an allowed path prefix at the server.
		{"https://pay.example.com/v1/../admin", false},
		{"https://pay.example.com/v1/%2e%2e/admin", false},
		{"https://pay.example.com/v1/..%2fadmin", false},
		{"https://pay.example.com/v1/./charges", false},
		// A prefix without a trailing / ends at a segment boundary: /api is not /api-admin.
		{"https://ops.example.com/api", true},
		{"https://ops.example.com/api/x", true},
		{"https://ops.example.com/api-admin", false},
		{"https://ops.example.com/apix/y", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			_, err := h.Work(t.Context(), job("k1", payload(t, map[string]any{"url": tt.url})))
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Equal(t, executor.ReasonDisallowedURL, reasonOf(t, err))
			require.Contains(t, err.Error(), "allow")
			require.NotContains(t, err.Error(), "s3cret", "errors never carry URL passwords")
			if !strings.Contains(tt.url, "@") {
				require.Contains(t, err.Error(), tt.url, "the error names the URL")
			}
		})
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, u := range reached {
			require.NotContains(t, u, "evil", "a disallowed URL was called")
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestHTTPDisallowedURLMakesNoCall(t *testing.T) {
	t.Parallel()
	allowed := newServer(t, status(200))
	other := newServer(t, status(200))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{allowed.URL + "/"}})
	target := other.URL + "/charge"
	_, err := h.Work(t.Context(), job("k1", payload(t, map[string]any{"url": target})))
	require.Equal(t, executor.ReasonDisallowedURL, reasonOf(t, err))
	require.Contains(t, err.Error(), target)
	require.Empty(t, other.Calls())
	require.Empty(t, allowed.Calls())
}

func TestHTTPRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		payload         map[string]any
		wantMethod      string
		wantBody        string
		wantContentType string
	}{
		{name: "default POST with JSON body", payload: map[string]any{"body": map[string]any{"amount": 42, "currency": "EUR"}},
			wantMethod: "POST", wantBody: `{"amount":42,"currency":"EUR"}`, wantContentType: "application/json"},
		{name: "string body sent raw", payload: map[string]any{"method": "put", "body": "plain \"text\"\nline 2"},
			wantMethod: "PUT", wantBody: "plain \"text\"\nline 2", wantContentType: ""},
		{name: "header overrides content type", payload: map[string]any{"body": []int{1, 2}, "headers": map[string]string{"Content-Type": "application/vnd.api+json"}},
			wantMethod: "POST", wantBody: `[1,2]`, wantContentType: "application/vnd.api+json"},
		{name: "no body", payload: map[string]any{"method": "DELETE"}, wantMethod: "DELETE", wantBody: "", wantContentType: ""},
		{name: "null body", payload: map[string]any{"body": nil}, wantMethod: "POST", wantBody: "", wantContentType: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, status(204))
			h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
			tt.payload["url"] = srv.URL + "/v1/charges"
			_, err := h.Work(t.Context(), job("order-42", payload(t, tt.payload)))
			require.NoError(t, err)
			calls := srv.Calls()
			require.Len(t, calls, 1)
			c := calls[0]
			require.Equal(t, tt.wantMethod, c.Method)
			require.Equal(t, "/v1/charges", c.Path)
			require.Equal(t, tt.wantBody, c.Body)
			require.Equal(t, tt.wantContentType, c.ContentType)
			require.Equal(t, "order-42", c.Key, "Idempotency-Key is the job's key")
		})
	}
}

func TestHTTPIdempotencyKeyCannotBeOverridden(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(200))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	_, err := h.Work(t.Context(), job("the-key", payload(t, map[string]any{
		"url": srv.URL + "/x", "headers": map[string]string{"Idempotency-Key": "attacker", "X-Trace": "t1"},
	})))
	require.NoError(t, err)
	calls := srv.Calls()
	require.Len(t, calls, 1)
	require.Equal(t, []string{"the-key"}, calls[0].Header.Values("Idempotency-Key"))
	require.Equal(t, "t1", calls[0].Header.Get("X-Trace"), "other payload headers are sent")

	// Servers that read '_' as '-' would see a second key: look-alikes are not sent either.
	_, err = h.Work(t.Context(), job("the-key", payload(t, map[string]any{
		"url": srv.URL + "/x", "headers": map[string]string{"Idempotency_Key": "attacker", "levee_job_id": "x"},
	})))
	require.NoError(t, err)
	calls = srv.Calls()
	require.Len(t, calls, 2)
	require.Empty(t, calls[1].Header.Values("Idempotency_Key"))
	require.Empty(t, calls[1].Header.Values("Levee_Job_Id"))
	require.Equal(t, []string{"the-key"}, calls[1].Header.Values("Idempotency-Key"))
}

// Every call carries the job's id, attempt and fence beside its key (design rule 12), so that a
// downstream can tell calls apart and refuse a stale writer; a payload cannot override them.
func TestHTTPLeveeHeaders(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(200))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	j := job("order-42", payload(t, map[string]any{
		"url": srv.URL + "/x", "headers": map[string]string{"Levee-Fence": "999", "Levee-Attempt": "1", "Levee-Job-Id": "forged"},
	}))
	j.ID, j.Attempt, j.Fence = "01JOB", 3, 7
	_, err := h.Work(t.Context(), j)
	require.NoError(t, err)
	calls := srv.Calls()
	require.Len(t, calls, 1)
	hdr := calls[0].Header
	require.Equal(t, []string{"order-42"}, hdr.Values(builtin.HeaderIdempotencyKey))
	require.Equal(t, []string{"01JOB"}, hdr.Values(builtin.HeaderJobID))
	require.Equal(t, []string{"3"}, hdr.Values(builtin.HeaderAttempt))
	require.Equal(t, []string{"7"}, hdr.Values(builtin.HeaderFence))
}

// A retry and a takeover send the same key with a new attempt number and a higher fence.
func TestHTTPFenceGrowsWithEveryClaim(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(200))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	for i := 1; i <= 3; i++ {
		j := job("order-42", payload(t, map[string]any{"url": srv.URL + "/x"}))
		j.Attempt, j.Fence = i, int64(10+i)
		_, err := h.Work(t.Context(), j)
		require.NoError(t, err)
	}
	calls := srv.Calls()
	require.Len(t, calls, 3)
	for i, c := range calls {
		require.Equal(t, "order-42", c.Key)
		require.Equal(t, strconv.Itoa(i+1), c.Header.Get(builtin.HeaderAttempt))
		require.Equal(t, strconv.Itoa(11+i), c.Header.Get(builtin.HeaderFence))
	}
}

func TestHTTPSameKeyOnEveryAttempt(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(200))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	for attempt := 1; attempt <= 3; attempt++ {
		j := job("order-42", payload(t, map[string]any{"url": srv.URL + "/x"}))
		j.Attempt = attempt
		_, err := h.Work(t.Context(), j)
		require.NoError(t, err)
	}
	for _, c := range srv.Calls() {
		require.Equal(t, "order-42", c.Key, "the downstream key derives from the idempotency key only")
	}
}

func TestHTTPResult(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		code          int
		contentType   string
		body          string
		maxBytes      int
		wantBody      string // JSON
		wantTruncated bool
	}{
		{name: "JSON body kept raw", code: 200, contentType: "application/json", body: "{\"id\": \"ch_1\", \"ok\": true}\n",
			wantBody: `{"id":"ch_1","ok":true}`},
		{name: "non-JSON body as string", code: 201, contentType: "text/plain", body: "created", wantBody: `"created"`},
		{name: "empty body", code: 204, body: "", wantBody: `""`},
		{name: "truncated", code: 200, contentType: "application/json", body: `{"data":"` + strings.Repeat("x", 100) + `"}`, maxBytes: 16,
			wantBody: `"{\"data\":\"xxxxxxx"`, wantTruncated: true},
		{name: "exactly at the bound", code: 200, contentType: "text/plain", body: strings.Repeat("y", 16), maxBytes: 16,
			wantBody: `"` + strings.Repeat("y", 16) + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
				if tt.contentType != "" {
					w.Header().Set("Content-Type", tt.contentType)
				}
				w.WriteHeader(tt.code)
				_, _ = io.WriteString(w, tt.body)
			})
			h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}, MaxResponseBytes: tt.maxBytes})
			res, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": srv.URL + "/"})))
			require.NoError(t, err)
			r, ok := res.(builtin.HTTPResult)
			require.True(t, ok, "result is %T", res)
			require.Equal(t, tt.code, r.Status)
			require.JSONEq(t, tt.wantBody, string(r.Body))
			require.Equal(t, tt.wantTruncated, r.Truncated)

			// The stored form is what status reports.
			stored, err := json.Marshal(res)
			require.NoError(t, err)
			require.True(t, json.Valid(stored))
			if tt.wantTruncated {
				require.Contains(t, string(stored), `"truncated":true`)
			} else {
				require.NotContains(t, string(stored), "truncated")
			}
		})
	}
}

func TestHTTPStatusClasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code      int
		permanent bool
	}{
		{400, true},
		{401, true},
		{404, true},
		{409, true},
		{422, true},
		{501, true},
		{408, false},
		{425, false},
		{429, false},
		{500, false},
		{502, false},
		{503, false},
		{504, false},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.code), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, status(tt.code))
			h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
			res, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": srv.URL + "/charge"})))
			require.Nil(t, res)
			require.Error(t, err)
			require.Contains(t, err.Error(), srv.URL+"/charge")
			require.Contains(t, err.Error(), http.StatusText(tt.code))
			if tt.permanent {
				require.Equal(t, executor.ReasonPermanent, reasonOf(t, err))
			} else {
				requireRetryable(t, err)
				var ra *executor.RetryAfterError
				require.False(t, errors.As(err, &ra), "no Retry-After header, no RetryAfterError")
			}
			require.Len(t, srv.Calls(), 1, "one call per attempt: no retries inside the handler")
		})
	}
}

func TestHTTPRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		code     int
		header   func() string
		want     time.Duration
		tolerate time.Duration
	}{
		{name: "seconds on 503", code: 503, header: func() string { return "7" }, want: 7 * time.Second},
		{name: "seconds on 429", code: 429, header: func() string { return " 120 " }, want: 2 * time.Minute},
		{name: "zero seconds", code: 503, header: func() string { return "0" }, want: 0},
		{name: "HTTP date", code: 503, header: func() string { return time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat) },
			want: 30 * time.Second, tolerate: 2 * time.Second},
		{name: "HTTP date in the past", code: 429, header: func() string { return time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat) },
			want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				status(tt.code, "Retry-After", tt.header())(w, r)
			})
			h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
			_, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": srv.URL + "/"})))
			requireRetryable(t, err)
			var ra *executor.RetryAfterError
			require.ErrorAs(t, err, &ra)
			require.InDelta(t, float64(tt.want), float64(ra.Delay), float64(tt.tolerate))
			require.Equal(t, ra.Delay, executor.Classify(context.Background(), err).RetryAfter)
		})
	}
}

func TestHTTPUnparsableRetryAfterFallsBackToBackoff(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"soon", "-5", "1.5"} {
		srv := newServer(t, status(503, "Retry-After", v))
		h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
		_, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": srv.URL + "/"})))
		requireRetryable(t, err)
		var ra *executor.RetryAfterError
		require.False(t, errors.As(err, &ra), "Retry-After %q is not a delay", v)
	}
}

func TestHTTPRedirects(t *testing.T) {
	t.Parallel()
	elsewhere := newServer(t, status(200))
	target := newServer(t, status(200))
	origin := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-elsewhere":
			http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
		case "/to-allowed":
			http.Redirect(w, r, target.URL+"/ok", http.StatusTemporaryRedirect)
		}
	})
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{origin.URL + "/", target.URL + "/ok"}})

	_, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": origin.URL + "/to-elsewhere"})))
	require.Equal(t, executor.ReasonDisallowedURL, reasonOf(t, err), "a redirect off the allowlist is permanent")
	require.Contains(t, err.Error(), "allow")
	require.Empty(t, elsewhere.Calls(), "a redirect to a host off the allowlist is not followed")

	res, err := h.Work(t.Context(), job("k2", payload(t, map[string]any{"url": origin.URL + "/to-allowed", "body": map[string]int{"a": 1}})))
	require.NoError(t, err)
	require.Equal(t, 200, res.(builtin.HTTPResult).Status)
	calls := target.Calls()
	require.Len(t, calls, 1, "a redirect to an allowed URL is followed")
	require.Equal(t, "k2", calls[0].Key)
	require.Equal(t, `{"a":1}`, calls[0].Body, "307 keeps method and body")
}

func TestHTTPInvalidPayload(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(200))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	tests := []struct {
		name, payload, wantErr string
	}{
		{"unknown field", `{"url":"` + srv.URL + `/","bogus":1}`, "bogus"},
		{"missing url", `{"method":"POST"}`, "url"},
		{"empty object", `{}`, "url"},
		{"null payload", `null`, "url"},
		{"not an object", `[1,2]`, "http payload"},
		{"url not a string", `{"url":42}`, "http payload"},
		{"non-http scheme", `{"url":"ftp://files.example.com/x"}`, "ftp://files.example.com/x"},
		{"file scheme", `{"url":"file:///etc/passwd"}`, "file:///etc/passwd"},
		{"no host", `{"url":"http:///path"}`, "not an http(s) URL"},
		{"bad method", `{"url":"` + srv.URL + `/","method":"GET /x"}`, "http payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := h.Work(t.Context(), job("k", tt.payload))
			require.Equal(t, executor.ReasonPayloadInvalid, reasonOf(t, err))
			require.Contains(t, err.Error(), tt.wantErr)
		})
	}
	require.Empty(t, srv.Calls())
}

func TestHTTPConnectionRefusedIsRetryable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{url + "/"}})
	_, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": url + "/charge"})))
	requireRetryable(t, err)
	require.Contains(t, err.Error(), url+"/charge")
}

func TestHTTPHonoursAttemptContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	p, err := executor.NewPipeline(executor.Policy{Timeout: 50 * time.Millisecond})
	require.NoError(t, err)
	_, v := executor.Execute(t.Context(), p, nil, func(ctx context.Context) (any, error) {
		return h.Work(ctx, job("k", payload(t, map[string]any{"url": srv.URL + "/slow"})))
	})
	require.Equal(t, executor.Retry, v.Class)
	require.True(t, v.Timeout, "a hung downstream call ends at the attempt timeout and is retried")
}

func TestNoop(t *testing.T) {
	t.Parallel()
	res, err := builtin.Noop.Work(t.Context(), job("k", `{"anything":true}`))
	require.NoError(t, err)
	require.Nil(t, res)
}

func TestHTTPHugeRetryAfterDoesNotOverflow(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"9300000000", "18446744074"} {
		srv := newServer(t, status(http.StatusServiceUnavailable, "Retry-After", v))
		h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
		_, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": srv.URL + "/"})))
		var ra *executor.RetryAfterError
		require.ErrorAs(t, err, &ra)
		require.GreaterOrEqual(t, ra.Delay, 24*time.Hour, "Retry-After %s must not wrap to a short delay", v)
	}
}

// Errors are stored in the ledger and shown to viewers: they name the URL without its query
// string, which often carries a token, whatever failed (a refusal, a 5xx, a dead port).
func TestHTTPErrorsHideTheQueryString(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(http.StatusBadRequest))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/", "http://127.0.0.1:1/"}})
	for _, target := range []string{srv.URL + "/v1/charge?api_key=s3cret", "http://127.0.0.1:1/x?token=s3cret", "http://10.9.9.9/x?token=s3cret"} {
		_, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": target})))
		require.Error(t, err, target)
		require.NotContains(t, err.Error(), "s3cret", target)
		require.Contains(t, err.Error(), "?…", target)
	}
}

// A refused call's body snippet is stored without control characters: it is printed on
// operators' terminals.
func TestHTTPErrorSnippetHasNoEscapes(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "bad \x1b]0;pwned\x07\x1b[2J request \u009b31m")
	})
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	_, err := h.Work(t.Context(), job("k", payload(t, map[string]any{"url": srv.URL + "/x"})))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "\x1b")
	require.NotContains(t, err.Error(), "\u009b")
	require.Contains(t, err.Error(), "request")
}
