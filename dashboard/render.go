package dashboard

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
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
	"dur":      formatDuration,
	"ts":       formatTime,
	"tsp":      func(t *time.Time) string { return formatTimePtr(t) },
	"truncate": truncate,
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
	if p.Msg == "" {
		p.Msg = r.URL.Query().Get("msg")
	}
	if p.Err == "" {
		p.Err = r.URL.Query().Get("err")
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
	if err != nil {
		q.Set("err", err.Error())
	} else if msg != "" {
		q.Set("msg", msg)
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
	return formatDuration(time.Since(t)) + " ago"
}

// formatDuration writes d compactly: 850ms, 12s, 4m10s, 3h05m, 2d04h.
func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
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
