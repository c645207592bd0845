package dashboard

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/levee-dev/levee/internal/age"
)

// page is what every template gets: the page's own data in Data, and what the layout needs.
type page struct {
	Title string
	Nav   string // which menu entry is current
	Me    identity
	// CanAct shows the action buttons: an operator, and the dashboard not read-only.
	CanAct   bool
	ReadOnly bool
	// Poll is the refresh interval in seconds for live pages, 0 for pages that do not refresh.
	Poll int
	Msg  string // the outcome of the last action, from the redirect
	Err  string
	Data any
	// Prefix is the path the dashboard is mounted at ("" at the root); links start with it.
	Prefix string
}

// UserName is the signed-in user's name, for the layout.
func (p page) UserName() string { return p.Me.name }

// UserRole is the signed-in user's role, for the layout.
func (p page) UserRole() Role { return p.Me.role }

var funcs = template.FuncMap{
	"ago":      ago,
	"dur":      age.Format,
	"ts":       formatTime,
	"tsp":      func(t *time.Time) string { return formatTimePtr(t) },
	"truncate": truncate,
	"until":    func(t *time.Time, from time.Time) string { return age.Format(t.Sub(from)) },
	"pct":      func(r float64) string { return fmt.Sprintf("%.0f%%", r*100) },
}

// parsePages parses each page template together with the layout.
func parsePages() (map[string]*template.Template, error) {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, err
		}
		pages[strings.TrimSuffix(base, ".html")] = t
	}
	return pages, nil
}

// render writes page name with data. A request from the refresh script (header
// X-Levee-Partial) gets only the page's content, without the layout.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	id := identityFrom(r.Context())
	p.Me = id
	p.CanAct = d.canAct(id)
	p.ReadOnly = d.opts.ReadOnly
	p.Prefix = d.opts.Prefix
	if q := r.URL.Query(); p.Msg == "" && p.Err == "" && d.flashSigned(q.Get("msg"), q.Get("err"), q.Get("sig")) {
		// Only what an action of this dashboard wrote: a link of someone else's with ?err=
		// must not put their text in the dashboard's banner.
		p.Msg, p.Err = q.Get("msg"), q.Get("err")
	}
	tmpl := "layout.html"
	if r.Header.Get("X-Levee-Partial") != "" {
		tmpl = "content"
	}
	var buf bytes.Buffer
	if err := d.pages[name].ExecuteTemplate(&buf, tmpl, p); err != nil {
		d.log.Error("dashboard: render", "page", name, "err", err)
		http.Error(w, "the page could not be drawn; see the server's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// deny answers a refused or failed request with a small page saying why.
func (d *Dashboard) deny(w http.ResponseWriter, r *http.Request, status int, why string) {
	d.render(w, r, status, "error", page{Title: http.StatusText(status), Data: why})
}

// fail answers a request whose service call failed.
func (d *Dashboard) fail(w http.ResponseWriter, r *http.Request, err error) {
	d.log.Warn("dashboard: request failed", "path", r.URL.Path, "err", err)
	d.deny(w, r, http.StatusBadGateway, err.Error())
}

// redirect sends the browser back to target (a path of the dashboard) after an action, with its
// outcome.
func (d *Dashboard) redirect(w http.ResponseWriter, r *http.Request, target, msg string, err error) {
	u, perr := url.Parse(target)
	if perr != nil || u.Host != "" || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		u = &url.URL{Path: "/"}
	}
	q := u.Query()
	q.Del("msg")
	q.Del("err")
	q.Del("sig")
	if err != nil {
		msg = ""
		q.Set("err", err.Error())
	} else if msg != "" {
		q.Set("msg", msg)
	}
	if q.Has("msg") || q.Has("err") {
		q.Set("sig", d.flashSig(msg, q.Get("err")))
	}
	u.RawQuery = q.Encode()
	u.Path = d.opts.Prefix + u.Path
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// back is where an action returns: the form's "back" field when it is a local path, else def.
func back(r *http.Request, def string) string {
	b := r.PostFormValue("back")
	if b == "" || !strings.HasPrefix(b, "/") || strings.HasPrefix(b, "//") || strings.HasPrefix(b, "/\\") {
		return def
	}
	return b
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return age.Format(time.Since(t)) + " ago"
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func formatTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return formatTime(*t)
}

func truncate(n int, s string) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// flashSig signs an action's outcome for the banner of the page it redirects to.
func (d *Dashboard) flashSig(msg, errText string) string {
	m := hmac.New(sha256.New, d.flashKey)
	m.Write([]byte(msg + "\x00" + errText))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// flashSigned reports whether sig is this dashboard's signature of msg and errText.
func (d *Dashboard) flashSigned(msg, errText, sig string) bool {
	if msg == "" && errText == "" {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(d.flashSig(msg, errText)))
}
