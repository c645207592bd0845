package dashboard

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/levee-dev/levee/leveetype"
	"golang.org/x/crypto/bcrypt"
)

// ContentSecurityPolicy is sent with every response: scripts and styles only from the
// dashboard's own files (no inline code), images from itself or data: URLs, forms posting only
// to itself, and no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// identity is who sent a request and what they may do.
type identity struct {
	name string
	role Role
}

// actor is the name written to the audit log for id's actions.
func (id identity) actor() leveetype.Actor { return leveetype.Actor("ui:" + id.name) }

type identityKey struct{}

func identityFrom(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}

// secure sets the security headers of every response.
func (d *Dashboard) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// clientKey is who a sign-in comes from, for the throttle: the address, or its /64 for IPv6 (a
// client has the whole /64).
func clientKey(addr netip.Addr) string {
	if addr.Is6() && !addr.Is4In6() {
		return "net:" + netip.PrefixFrom(addr, 64).Masked().String()
	}
	return "addr:" + addr.String()
}

// tooManySignIns starts the refusal of a throttled sign-in.
const tooManySignIns = "too many failed sign-ins"

// dummyBcrypt is compared against when the user name is unknown or has no password, so that
// a wrong name costs what a wrong password does.
var dummyBcrypt = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("levee dashboard: no such user"), bcrypt.DefaultCost)
	return h
})

// passwordMatches checks password against u's bcrypt hash, else its SHA-256 (older files), in
// constant time; a user without either never matches, at the cost of a bcrypt comparison.
func passwordMatches(u User, password string) bool {
	switch {
	case u.PasswordHash != "":
		return bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) == nil
	case u.PasswordSHA256 != nil:
		got := sha256.Sum256([]byte(password))
		return subtle.ConstantTimeCompare(got[:], u.PasswordSHA256) == 1
	}
	_ = bcrypt.CompareHashAndPassword(dummyBcrypt(), []byte(password))
	return false
}

// tokenCookie names the cookie that carries the local operator's token once a URL has
// presented it: levee_token, and the listener's port where it is known (cookies do not tell
// ports apart, and two dashboards on one machine have two tokens).
func tokenCookie(r *http.Request) string {
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, port, err := net.SplitHostPort(local.String()); err == nil {
			return "levee_token_" + port
		}
	}
	return "levee_token"
}

// authenticate finds the request's identity: from the trusted proxy header when the request
// comes from a trusted proxy, else from basic auth when Users are configured, else (no
// authentication configured) a loopback client that names a loopback Host and carries the
// run's token is the local operator, and others are refused.
func (d *Dashboard) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.token != "" && d.presentsToken(w, r) {
			return
		}
		id, why := d.identify(r)
		if strings.HasPrefix(why, tooManySignIns) {
			d.deny(w, r, http.StatusTooManyRequests, why)
			return
		}
		if why != "" {
			if len(d.opts.Users) > 0 {
				w.Header().Set("WWW-Authenticate", `Basic realm="Levee", charset="UTF-8"`)
			}
			d.deny(w, r, map[bool]int{true: http.StatusUnauthorized, false: http.StatusForbidden}[len(d.opts.Users) > 0], why)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

// presentsToken answers a GET whose URL carries the right token from a local client: it sets
// the cookie and redirects to the same URL without the token, so that it is neither kept in
// the history nor sent as a Referer. It reports whether it answered.
func (d *Dashboard) presentsToken(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	if r.Method != http.MethodGet || !q.Has("token") || d.localProblem(r) != "" ||
		subtle.ConstantTimeCompare([]byte(q.Get("token")), []byte(d.token)) != 1 {
		return false
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie(r), Value: d.token, Path: cmp.Or(d.opts.Prefix, "/"),
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
	q.Del("token")
	u := url.URL{Path: "/" + strings.TrimLeft(r.URL.Path, "/"), RawQuery: q.Encode()} // never //host: it stays here
	http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
	return true
}

// identify returns the request's identity, or why it has none.
func (d *Dashboard) identify(r *http.Request) (identity, string) {
	remote, _ := netip.ParseAddrPort(r.RemoteAddr)
	addr := remote.Addr().Unmap()
	if d.opts.TrustedProxyHeader != "" && d.trustedProxy(addr) {
		if vs := r.Header.Values(d.opts.TrustedProxyHeader); len(vs) > 1 || len(vs) == 1 && strings.Contains(vs[0], ",") {
			// The proxy set one and passed the client's on: which is whose cannot be told.
			return identity{}, "the request carries " + d.opts.TrustedProxyHeader + " more than once: configure the proxy to replace the header, not add to it"
		}
		if name := r.Header.Get(d.opts.TrustedProxyHeader); name != "" {
			role := RoleViewer
			if u, ok := d.opts.Users[name]; ok {
				role = u.Role
			}
			return identity{name: name, role: role}, ""
		}
	}
	if len(d.opts.Users) > 0 {
		name, password, ok := r.BasicAuth()
		if !ok {
			return identity{}, "sign in with your dashboard user name and password"
		}
		from := clientKey(addr)
		if wait := d.signIns.blocked(from, "user:"+name); wait > 0 {
			return identity{}, fmt.Sprintf("%s: try again in %s", tooManySignIns, wait.Round(time.Second))
		}
		u, known := d.opts.Users[name]
		// Compared whether the name is known or not: an unknown name costs what a wrong
		// password does (a zero User is compared against the dummy hash).
		if matches := passwordMatches(u, password); !matches || !known {
			d.signIns.failed(from, "user:"+name)
			return identity{}, "sign in with your dashboard user name and password"
		}
		return identity{name: name, role: u.Role}, ""
	}
	if d.opts.Authenticated() {
		return identity{}, "sign in through the trusted proxy"
	}
	if why := d.localProblem(r); why != "" {
		return identity{}, why
	}
	c, err := r.Cookie(tokenCookie(r))
	if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(d.token)) != 1 {
		return identity{}, "open the URL that `enqueue ui` printed: it carries this run's token (this dashboard has no users, so only that URL's holder may use it)"
	}
	return identity{name: "local", role: RoleOperator}, ""
}

// localProblem says why r cannot be the local operator's (without authentication), or "":
// it must come from loopback, not through a proxy, and name a loopback Host on the port it
// reached. A page that rebinds its own name to 127.0.0.1 still sends its own name as Host.
func (d *Dashboard) localProblem(r *http.Request) string {
	remote, _ := netip.ParseAddrPort(r.RemoteAddr)
	// A request relayed by a proxy on this host comes from loopback but is not local.
	proxied := r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != ""
	if !remote.Addr().Unmap().IsLoopback() || proxied {
		return "this dashboard answers local clients only (not through a proxy): configure users or a trusted proxy to serve others"
	}
	if !loopbackHost(r) {
		return fmt.Sprintf("Host %q is not this machine's loopback address: open the dashboard at the URL that `enqueue ui` printed", r.Host)
	}
	return ""
}

// loopbackHost reports whether r's Host names loopback (localhost, 127.0.0.0/8, ::1) and, when
// the listener is known, its port.
func loopbackHost(r *http.Request) bool {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, ""
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	a, err := netip.ParseAddr(host)
	named := host == "localhost" || strings.HasSuffix(host, ".localhost")
	if !named && (err != nil || !a.Unmap().IsLoopback()) {
		return false
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return true // served without a listener (a test's recorder)
	}
	_, lport, err := net.SplitHostPort(local.String())
	if err != nil {
		return false
	}
	if port == "" {
		port = map[bool]string{true: "443", false: "80"}[r.TLS != nil]
	}
	return port == lport
}

func (d *Dashboard) trustedProxy(addr netip.Addr) bool {
	for _, p := range d.opts.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// canAct reports whether id may change state through this dashboard.
func (d *Dashboard) canAct(id identity) bool {
	return !d.opts.ReadOnly && id.role == RoleOperator
}

// canSeePayload reports whether id may see the payloads of kind.
func (d *Dashboard) canSeePayload(id identity, kind string) bool {
	if d.redact[kind] {
		return false
	}
	return id.role == RoleOperator || d.opts.AllowPayloads
}

// act wraps a state-changing handler: refused with 403 in read-only mode and for viewers.
func (d *Dashboard) act(h func(http.ResponseWriter, *http.Request, identity)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identityFrom(r.Context())
		switch {
		case d.opts.ReadOnly:
			d.deny(w, r, http.StatusForbidden, "this dashboard is read-only")
			return
		case id.role != RoleOperator:
			d.deny(w, r, http.StatusForbidden, "only operators may do this; you are a viewer")
			return
		}
		h(w, r, id)
	})
}
