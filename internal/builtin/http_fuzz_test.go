package builtin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/levee-dev/levee/internal/builtin"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/leveetype"
)

// fuzzAllow is the allowlist of the fuzzed kind; fuzzOracle says the same thing independently,
// as the server at the other end would read a request.
var fuzzAllow = []string{
	"https://api.example.com/v1/",
	"http://127.0.0.1:8080/hooks/",
	"https://[::1]:8443/ipv6/",
	"HTTPS://Mixed.Example.COM/Case/",
	"http://root.example.com",
}

var fuzzOracle = []struct{ scheme, host, path string }{
	{"https", "api.example.com", "/v1/"},
	{"http", "127.0.0.1:8080", "/hooks/"},
	{"https", "[::1]:8443", "/ipv6/"},
	{"https", "mixed.example.com", "/Case/"},
	{"http", "root.example.com", ""},
}

// errNoNetwork is what the fuzzed kind's dialer returns: a request that gets as far as dialing
// passed the kind's validation and net/http's own checks, and goes no further.
var errNoNetwork = errors.New("fuzz: no network")

// fuzzTarget is an http kind whose client records every request it is asked to send, then
// lets a real http.Transport check it (header names and values, host) and fail at the dial.
type fuzzTarget struct {
	h         *builtin.HTTP
	transport *http.Transport
	mu        sync.Mutex
	sent      []*http.Request
}

func newFuzzTarget(f *testing.F) *fuzzTarget {
	ft := &fuzzTarget{transport: &http.Transport{
		Proxy: nil,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return nil, errNoNetwork
		},
	}}
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		ft.mu.Lock()
		ft.sent = append(ft.sent, r)
		ft.mu.Unlock()
		return ft.transport.RoundTrip(r)
	})}
	h, err := builtin.NewHTTP(builtin.HTTPConfig{Allow: fuzzAllow, Client: client})
	if err != nil {
		f.Fatal(err)
	}
	ft.h = h
	f.Cleanup(ft.transport.CloseIdleConnections)
	return ft
}

func (ft *fuzzTarget) take() []*http.Request {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	sent := ft.sent
	ft.sent = nil
	return sent
}

// check runs one job and holds the kind to its contract: it never panics; a payload it refuses
// sends nothing and gets a one-line permanent error with reason invalid_payload or
// url_not_allowed; a request it sends goes only under an allowed prefix, as the server reads
// it, with the job's idempotency key, and is one net/http accepts.
func (ft *fuzzTarget) check(t *testing.T, payload []byte) {
	t.Helper()
	const key = "fuzz-key"
	res, err := ft.h.Work(t.Context(), &leveetype.Job{ID: "J1", Kind: "http", Key: key, Payload: payload, Attempt: 1, MaxAttempts: 5})
	sent := ft.take()
	if err == nil {
		t.Fatalf("Work succeeded (%v) without a network", res)
	}
	msg := err.Error()
	if strings.TrimSpace(msg) == "" || strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("error is not one non-empty line: %q", msg)
	}
	switch len(sent) {
	case 0:
		var perm *executor.PermanentError
		if !errors.As(err, &perm) {
			t.Fatalf("nothing was sent, yet the error is not permanent: %v", err)
		}
		reason := executor.Classify(context.Background(), err).Reason
		if reason != executor.ReasonPayloadInvalid && reason != executor.ReasonDisallowedURL {
			t.Fatalf("refused with reason %q: %v", reason, err)
		}
	case 1:
		req := sent[0]
		if why := outsideAllowlist(req); why != "" {
			t.Fatalf("sent %s %s (Host %q) for payload %q: %s", req.Method, req.URL, req.Host, payload, why)
		}
		if got := req.Header.Values("Idempotency-Key"); len(got) != 1 || got[0] != key {
			t.Fatalf("sent Idempotency-Key %q, want %q", got, key)
		}
		if !errors.Is(err, errNoNetwork) {
			t.Fatalf("net/http refused the request built from payload %q (%v): the payload should be refused as invalid", payload, err)
		}
	default:
		t.Fatalf("one job sent %d requests", len(sent))
	}
}

// outsideAllowlist says why the server would see req outside every allowed prefix, or "".
// It reads the path as sent, decoded once, and refuses "." and ".." segments whichever
// separator (/ or \) or path parameter (;x) a server might honour.
func outsideAllowlist(req *http.Request) string {
	u := req.URL
	if u.User != nil {
		return "carries userinfo"
	}
	if u.Opaque != "" {
		return "has an opaque path"
	}
	path, err := url.PathUnescape(u.EscapedPath())
	if err != nil {
		return "path does not decode: " + err.Error()
	}
	for _, seg := range strings.FieldsFunc(path, func(r rune) bool { return r == '/' || r == '\\' }) {
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "." || seg == ".." {
			return "path has a dot segment"
		}
	}
	for _, a := range fuzzOracle {
		if u.Scheme == a.scheme && strings.EqualFold(u.Host, a.host) && (req.Host == "" || strings.EqualFold(req.Host, a.host)) &&
			strings.HasPrefix(path, a.path) {
			return ""
		}
	}
	return "no allowed prefix matches"
}

// FuzzHTTPPayload fuzzes whole payloads: JSON shape, fields, headers and body.
func FuzzHTTPPayload(f *testing.F) {
	for _, p := range []string{
		`{"url":"https://api.example.com/v1/charge","method":"POST","headers":{"X-A":"1"},"body":{"amount":42}}`,
		`{"url":"https://api.example.com/v1/charge","body":"plain text"}`,
		`{"url":"https://api.example.com/v1/charge","body":null}`,
		`{"url":"https://api.example.com/v1/charge","body":"\ud800"}`,
		`{"url":"https://api.example.com/v1/charge","method":"get"}`,
		`{"url":"https://api.example.com/v1/charge","method":"GET /x"}`,
		`{"url":"https://api.example.com/v1/charge","method":""}`,
		`{"url":"https://api.example.com/v1/charge","headers":{"idempotency-key":"other"}}`,
		`{"url":"https://api.example.com/v1/charge","headers":{"Host":"evil.example.com"}}`,
		`{"url":"https://api.example.com/v1/charge","headers":{"X-A":"a\r\nX-Injected: 1"}}`,
		`{"url":"https://api.example.com/v1/charge","headers":{"Bad Name":"1"}}`,
		`{"url":"https://api.example.com/v1/charge","headers":{"":"1"}}`,
		`{"url":"https://api.example.com/v1/charge","headers":{"X-Nul":"a\u0000b"}}`,
		`{"url":"https://api.example.com/v1/charge","url":"https://evil.example.com/v1/"}`,
		`{"url":"https://evil.example.com/v1/","url":"https://api.example.com/v1/charge"}`,
		`{"url":"https://api.example.com/v1/charge","bogus":1}`,
		"{\"url\":\"https://api.example.com/v1/charge\",\"bo\\ngus\":1}",
		`{"URL":"https://api.example.com/v1/charge"}`,
		`{"url":"https://api.example.com/v1/charge"} trailing`,
		`{"url":"https://api.example.com/v1/charge","body":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`,
		`{"url":42}`, `{"url":""}`, `{}`, `[]`, `null`, `""`, ``, "\x00", "\xff\xfe",
		`{"url":"https://api.example.com/v1/` + strings.Repeat("a", 1<<12) + `"}`,
	} {
		f.Add([]byte(p))
	}
	ft := newFuzzTarget(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		ft.check(t, payload)
	})
}

// FuzzHTTPURL fuzzes the URL, method and one header of an otherwise well-formed payload, where
// the allowlist is tested hardest: userinfo, dot segments, percent-encoding, IPv6 literals,
// scheme case and other schemes.
func FuzzHTTPURL(f *testing.F) {
	for _, u := range []string{
		"https://api.example.com/v1/charge",
		"https://api.example.com/v2/charge",
		"https://api.example.com/v1",
		"HTTPS://API.EXAMPLE.COM/v1/charge",
		"hTtPs://api.example.com/v1/charge",
		"http://api.example.com/v1/charge",
		"ftp://api.example.com/v1/charge",
		"file:///etc/passwd",
		"gopher://127.0.0.1:8080/hooks/",
		"javascript:alert(1)",
		"https:api.example.com/v1/",
		"//api.example.com/v1/",
		"https://api.example.com@evil.example.com/v1/",
		"https://evil.example.com@api.example.com/v1/",
		"https://user:pw@api.example.com/v1/",
		"https://@api.example.com/v1/",
		"https://api.example.com%40evil.example.com/v1/",
		"https://api.example.com/v1/../admin",
		"https://api.example.com/v1/./x",
		"https://api.example.com/v1/%2e%2e/admin",
		"https://api.example.com/v1/%2E%2E/admin",
		"https://api.example.com/v1/.%2e/admin",
		"https://api.example.com/v1/%252e%252e/admin",
		"https://api.example.com/v1/..%2fadmin",
		"https://api.example.com/v1%2f..%2fadmin",
		"https://api.example.com/v1/..\\admin",
		"https://api.example.com/v1/..%5cadmin",
		"https://api.example.com/v1/..;/admin",
		"https://api.example.com/v1/%00",
		"https://api.example.com/v1/%zz",
		"https://api.example.com/v1/x?next=../../admin#frag",
		"https://api.example.com./v1/",
		"https://api.example.com:443/v1/",
		"https://api%2eexample.com/v1/",
		"https://xn--pi-7ka.example.com/v1/",
		"http://127.0.0.1:8080/hooks/x",
		"http://127.1:8080/hooks/x",
		"http://2130706433:8080/hooks/x",
		"http://0x7f.0.0.1:8080/hooks/x",
		"http://[::ffff:127.0.0.1]:8080/hooks/x",
		"https://[::1]:8443/ipv6/x",
		"https://[0:0:0:0:0:0:0:1]:8443/ipv6/x",
		"https://[::1%25eth0]:8443/ipv6/x",
		"https://[::1]/ipv6/x",
		"https://mixed.example.com/Case/x",
		"https://mixed.example.com/case/x",
		"http://root.example.com",
		"http://root.example.com/../../etc/passwd",
		"http://root.example.com\\@evil.example.com/",
		"http://root.example.com:80/",
		" https://api.example.com/v1/",
		"https://api.example.com/v1/\x00",
		"https://api.example.com/v1/\xff",
		"",
	} {
		f.Add(u, "POST", "X-Trace", "1")
	}
	f.Add("https://api.example.com/v1/x", "get", "idempotency-key", "mine")
	f.Add("https://api.example.com/v1/x", "CONNECT", "Host", "evil.example.com")
	f.Add("https://api.example.com/v1/x", "G\x00T", "X-A", "a\nb")
	f.Add("https://api.example.com/v1/x", "PUT", "X A", "1")
	f.Add("https://api.example.com/v1/x", "PUT", "X-\xff", "\xff")
	ft := newFuzzTarget(f)
	f.Fuzz(func(t *testing.T, rawURL, method, headerName, headerValue string) {
		payload, err := json.Marshal(map[string]any{
			"url": rawURL, "method": method, "headers": map[string]string{headerName: headerValue},
		})
		if err != nil {
			t.Fatal(err)
		}
		ft.check(t, payload)
	})
}
