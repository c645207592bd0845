package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/netip"

	"github.com/levee-dev/levee"
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
func (id identity) actor() levee.Actor { return levee.Actor("ui:" + id.name) }

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

// dummyHash is compared against when the user name is unknown, so that a wrong name costs
// what a wrong password does.
var dummyHash = sha256.Sum256([]byte("levee dashboard: no such user"))

// authenticate finds the request's identity: from the trusted proxy header when the request
// comes from a trusted proxy, else from basic auth when Users are configured, else (no
// authentication configured) a loopback client is the local operator and others are refused.
func (d *Dashboard) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := d.identify(r)
		if !ok {
			if len(d.opts.Users) > 0 {
				w.Header().Set("WWW-Authenticate", `Basic realm="Levee", charset="UTF-8"`)
				d.deny(w, r, http.StatusUnauthorized, "sign in with your dashboard user name and password")
				return
			}
			if d.opts.Authenticated() {
				d.deny(w, r, http.StatusForbidden, "sign in through the trusted proxy")
				return
			}
			d.deny(w, r, http.StatusForbidden, "this dashboard answers local clients only (not through a proxy): configure users or a trusted proxy to serve others")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

func (d *Dashboard) identify(r *http.Request) (identity, bool) {
	remote, _ := netip.ParseAddrPort(r.RemoteAddr)
	addr := remote.Addr().Unmap()
	if d.opts.TrustedProxyHeader != "" && d.trustedProxy(addr) {
		if name := r.Header.Get(d.opts.TrustedProxyHeader); name != "" {
			role := RoleViewer
			if u, ok := d.opts.Users[name]; ok {
				role = u.Role
			}
			return identity{name: name, role: role}, true
		}
	}
	if len(d.opts.Users) > 0 {
		name, password, ok := r.BasicAuth()
		if !ok {
			return identity{}, false
		}
		u, known := d.opts.Users[name]
		want := u.PasswordSHA256
		if !known || want == nil {
			want = dummyHash[:]
		}
		got := sha256.Sum256([]byte(password))
		if subtle.ConstantTimeCompare(got[:], want) != 1 || !known || u.PasswordSHA256 == nil {
			return identity{}, false
		}
		return identity{name: name, role: u.Role}, true
	}
	// A request relayed by a proxy on this host comes from loopback but is not local.
	proxied := r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != ""
	if d.opts.Authenticated() || !addr.IsLoopback() || proxied {
		return identity{}, false
	}
	return identity{name: "local", role: RoleOperator}, true
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
