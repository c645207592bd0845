package builtin

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/worker"
	"github.com/levee-dev/levee/leveetype"
)

// HTTPPayload is the payload of an "http" job.
type HTTPPayload struct {
	URL    string            `json:"url"`
	Method string            `json:"method,omitempty"` // default POST
	Header map[string]string `json:"headers,omitempty"`
	// Body is sent as its text when it is a JSON string, otherwise as JSON (with
	// Content-Type: application/json unless a header sets another).
	Body json.RawMessage `json:"body,omitempty"`
}

// HTTPResult is the stored result of a successful "http" job.
type HTTPResult struct {
	Status int `json:"status"`
	// Body is the response body (truncated to MaxResponseBytes): raw JSON when the response
	// is JSON, otherwise a string.
	Body      json.RawMessage `json:"body"`
	Truncated bool            `json:"truncated,omitempty"`
}

// HTTPConfig configures the "http" kind.
type HTTPConfig struct {
	// Allow lists the URL prefixes the kind may call, e.g. "https://api.example.com/v1/". A URL
	// matches a prefix when scheme and host are equal and its path starts with the prefix's
	// path. Nothing is allowed by default.
	Allow []string
	// Client makes the calls. Default: a client with no overall timeout (the attempt's context
	// bounds each call) that follows redirects only to allowed URLs.
	Client *http.Client
	// MaxResponseBytes bounds the response body kept as the result. Default 64 KiB.
	MaxResponseBytes int
}

type allowed struct {
	scheme, host, path string
}

// HTTP is the built-in "http" kind.
type HTTP struct {
	allow   []allowed
	client  *http.Client
	maxBody int
}

// NewHTTP validates cfg and returns the handler.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	h := &HTTP{maxBody: cmp.Or(cfg.MaxResponseBytes, 64<<10)}
	for _, a := range cfg.Allow {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("http.allow: %q is not an http(s) URL prefix such as https://api.example.com/", a)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("http.allow: %q must be scheme, host and path only", a)
		}
		h.allow = append(h.allow, allowed{scheme: u.Scheme, host: strings.ToLower(u.Host), path: u.Path})
	}
	h.client = cfg.Client
	if h.client == nil {
		h.client = &http.Client{}
	}
	// Follow redirects only to allowed URLs (an allowlisted host must not bounce us elsewhere).
	client := *h.client
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("stopped after 5 redirects")
		}
		if !h.allowed(req.URL) {
			return fmt.Errorf("%w: redirect to %s", errNotAllowed, shownURL(req.URL))
		}
		return nil
	}
	h.client = &client
	return h, nil
}

// errNotAllowed marks a URL outside the kind's allowlist.
var errNotAllowed = errors.New("URL is not in this kind's http.allow list")

// allowed reports whether u is under an allowed prefix. URLs with credentials or with "." or
// ".." path segments (plain or percent-encoded, separated by / or \, with or without ;params)
// are refused outright: a server resolving /v1/../admin, /v1/..\admin or /v1/..;/admin would
// otherwise escape an allowed /v1/ prefix.
func (h *HTTP) allowed(u *url.URL) bool {
	if u.User != nil || hasDotSegment(u.Path) || hasDotSegment(u.EscapedPath()) || strings.Contains(strings.ToLower(u.EscapedPath()), "%2e") {
		return false
	}
	for _, a := range h.allow {
		if u.Scheme == a.scheme && strings.EqualFold(u.Host, a.host) && underPrefix(u.Path, a.path) {
			return true
		}
	}
	return false
}

// underPrefix reports whether path lies under prefix on a segment boundary: /api allows /api
// and /api/x, not /api-admin; /api/ allows /api/ and below.
func underPrefix(path, prefix string) bool {
	if prefix == "" || strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(path, prefix)
	}
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func hasDotSegment(p string) bool {
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		seg, _, _ = strings.Cut(seg, ";") // Tomcat and others read "..;x" as ".."
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// validHeader reports whether name is an HTTP token and value has no control characters
// other than tab: what net/http sends. Anything else would fail in the transport, looking
// like a connection error, instead of being refused as an invalid payload.
func validHeader(name, value string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return false
		}
	}
	return !strings.ContainsFunc(value, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Work calls the job's URL once. 2xx succeeds; 408, 425, 429 and 5xx (except 501), timeouts
// and connection errors are retried (honouring Retry-After); other statuses are permanent.
func (h *HTTP) Work(ctx context.Context, job *leveetype.Job) (any, error) {
	var p HTTPPayload
	dec := json.NewDecoder(bytes.NewReader(job.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, invalid(fmt.Errorf(`http payload: %w (want {"url", "method", "headers", "body"})`, err))
	}
	if p.URL == "" {
		return nil, invalid(errors.New(`http payload: "url" is required`))
	}
	u, err := url.Parse(p.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, invalid(fmt.Errorf("http payload: %q is not an http(s) URL", p.URL))
	}
	if !h.allowed(u) {
		return nil, notAllowed(fmt.Errorf("URL %s is not in this kind's http.allow list", shownURL(u)))
	}
	method := strings.ToUpper(cmp.Or(p.Method, http.MethodPost))
	body, contentType, err := requestBody(p.Body)
	if err != nil {
		return nil, invalid(err)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, invalid(fmt.Errorf("http payload: %w", err))
	}
	for k, v := range p.Header {
		if !validHeader(k, v) {
			return nil, invalid(fmt.Errorf("http payload: header %q: want a token for the name and no control characters in the value", k))
		}
		if leveeHeader(k) {
			continue // Levee sets its own; a look-alike (Idempotency_Key) would travel beside it
		}
		req.Header.Set(k, v)
	}
	if contentType != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", contentType)
	}
	setLeveeHeaders(ctx, req.Header, job)

	// Judged now, at the last moment: a worker woken after being frozen past its lease stops
	// here, before its timers have run (design rule 29).
	if err := worker.CheckLease(ctx); err != nil {
		return nil, err
	}
	resp, err := h.client.Do(req)
	var ue *url.Error // it names the URL, query string and all: the error names it once, without
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, errNotAllowed) {
		return nil, notAllowed(fmt.Errorf("%s %s: %w", method, shownURL(u), err))
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, shownURL(u), err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(h.maxBody)+1))
	if err != nil && resp.StatusCode/100 == 2 {
		return nil, fmt.Errorf("%s %s: read response: %w", method, shownURL(u), err)
	}
	truncated := len(data) > h.maxBody
	if truncated {
		data = data[:h.maxBody]
	}
	status := resp.StatusCode
	switch {
	case status >= 200 && status < 300:
		return HTTPResult{Status: status, Body: resultBody(data, truncated), Truncated: truncated}, nil
	case retryableStatus(status):
		var err error = &executor.StatusError{Code: status, Err: fmt.Errorf("%s %s: %s", method, shownURL(u), resp.Status)}
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return nil, executor.RetryAfter(d, err)
		}
		return nil, err
	}
	return nil, executor.Permanent(&executor.StatusError{Code: status,
		Err: fmt.Errorf("%s %s: %s: %s", method, shownURL(u), resp.Status, snippet(data))})
}

// Headers every call of the http kind carries, set after the payload's headers so that a
// payload cannot override them.
const (
	// HeaderIdempotencyKey is the job's idempotency key, the same for every attempt and worker
	// (design rule 12): a provider that honours it collapses a repeated call into one effect.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderJobID is the id of the job making the call.
	HeaderJobID = "Levee-Job-Id"
	// HeaderAttempt is the attempt's number on the job's key, from 1 (leveetype.Job.Attempt).
	HeaderAttempt = "Levee-Attempt"
	// HeaderFence is the fence of the attempt's claim of the key (leveetype.Job.Fence), higher for
	// every claim: a downstream that keeps the highest fence it has seen per key can refuse a
	// call with a lower one, a stale worker's late write (design rules 10 and 12).
	HeaderFence = "Levee-Fence"
)

// testRequestHook, when set, adds headers to every call. Only the fault-injection build sets
// it (http_chaos.go, built with -tags chaos); production binaries leave it nil, so no
// environment or payload can make them send more than setLeveeHeaders does (design rule 36).
var testRequestHook func(ctx context.Context, h http.Header)

// setLeveeHeaders sets the headers that identify the call: its key, job, attempt and fence.
func setLeveeHeaders(ctx context.Context, h http.Header, job *leveetype.Job) {
	h.Set(HeaderIdempotencyKey, job.Key)
	h.Set(HeaderJobID, job.ID)
	h.Set(HeaderAttempt, strconv.Itoa(job.Attempt))
	h.Set(HeaderFence, strconv.FormatInt(job.Fence, 10))
	h.Set("User-Agent", "levee-worker")
	if testRequestHook != nil {
		testRequestHook(ctx, h)
	}
}

// leveeHeader reports whether name is, or may be read as, one of the headers Levee sets: many
// servers read '_' as '-' (CGI, Rack, nginx with underscores_in_headers), so Idempotency_Key
// would be a second idempotency key.
func leveeHeader(name string) bool {
	n := strings.ReplaceAll(name, "_", "-")
	for _, h := range []string{HeaderIdempotencyKey, HeaderJobID, HeaderAttempt, HeaderFence, "User-Agent"} {
		if strings.EqualFold(n, h) {
			return true
		}
	}
	return false
}

func notAllowed(err error) error {
	return &executor.PermanentError{Err: &executor.ReasonError{Reason: executor.ReasonDisallowedURL, Err: err}}
}

func invalid(err error) error {
	return &executor.PermanentError{Err: &executor.ReasonError{Reason: executor.ReasonPayloadInvalid, Err: err}}
}

func retryableStatus(s int) bool {
	switch {
	case s == http.StatusRequestTimeout, s == http.StatusTooEarly, s == http.StatusTooManyRequests:
		return true
	case s >= 500 && s != http.StatusNotImplemented:
		return true
	}
	return false
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs >= 0 {
		const maxSecs = 365 * 24 * 3600 // no overflow; the worker caps the delay further
		return time.Duration(min(secs, maxSecs)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func requestBody(raw json.RawMessage) (io.Reader, string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, "", fmt.Errorf("http payload: body: %w", err)
		}
		return strings.NewReader(s), "", nil
	}
	return bytes.NewReader(raw), "application/json", nil
}

// resultBody is a 2xx response's body as the job's result: the JSON itself when the whole body
// is JSON, else a JSON string of its text. Either way the ledger's jsonb column accepts it
// (design rule 28): a \u0000 escape, a lone surrogate and bytes that are not UTF-8 (a binary
// body) become U+FFFD, as the ledger makes every result storable.
func resultBody(data []byte, truncated bool) json.RawMessage {
	if !truncated && len(data) > 0 && json.Valid(data) {
		return json.RawMessage(idempotency.StorableJSON(bytes.TrimSpace(data)))
	}
	b, _ := json.Marshal(idempotency.StorableText(string(data)))
	return b
}

// shownURL is u as errors show it (they are stored in the ledger and shown to viewers): no
// password and no query string, which often carries a token; "?…" says there was one.
func shownURL(u *url.URL) string {
	v := *u
	v.RawQuery, v.ForceQuery, v.Fragment = "", false, ""
	if u.RawQuery != "" {
		return v.Redacted() + "?…"
	}
	return v.Redacted()
}

// snippet is the start of a refused response's body for the attempt's error, on one line: at
// most 200 bytes cut on a character boundary, then "…", in valid UTF-8 without NUL (design
// rule 28).
func snippet(data []byte) string {
	const n = 200
	s := strings.Join(strings.Fields(idempotency.StorableText(string(data))), " ") // one line, for logs and status
	s = strings.Map(func(r rune) rune {                                            // no escape sequences for the terminals it is printed on
		if r < ' ' || r == 0x7f || r >= 0x80 && r <= 0x9f {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
