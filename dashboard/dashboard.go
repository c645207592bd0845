package dashboard

import (
	"cmp"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"iter"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/leveetype"
	"golang.org/x/crypto/bcrypt"
)

// Service is what the dashboard needs of Levee: the operator service layer that the enqueue
// CLI uses too. *admin.Client satisfies it.
type Service interface {
	Overview(ctx context.Context, maxAge time.Duration) (*admin.Overview, error)
	JobList(ctx context.Context, p admin.JobListParams) (admin.JobPage, error)
	JobFind(ctx context.Context, idOrKey string) ([]leveetype.JobStatus, error)
	JobGet(ctx context.Context, id string) (*leveetype.JobStatus, error)
	JobAttempts(ctx context.Context, id string) ([]leveetype.Attempt, error)

	DeadJobList(ctx context.Context, p admin.DeadJobListParams) iter.Seq2[leveetype.DeadJob, error]
	DeadJobGet(ctx context.Context, id string) (*leveetype.DeadJob, error)
	DeadJobReplay(ctx context.Context, dj leveetype.DeadJob, p admin.DeadJobReplayParams) (admin.DeadJobReplayResult, error)
	DeadJobPurge(ctx context.Context, dj leveetype.DeadJob) error

	JobRetry(ctx context.Context, id string, by leveetype.Actor) error
	JobCancel(ctx context.Context, id string, by leveetype.Actor) error
	KindPause(ctx context.Context, kind string, by leveetype.Actor) error
	KindResume(ctx context.Context, kind string, by leveetype.Actor) error
	BreakerReset(ctx context.Context, p admin.BreakerResetParams) (admin.BreakerResetResult, error)

	AuditRecord(ctx context.Context, p admin.AuditRecordParams) error
	AuditList(ctx context.Context, limit int) ([]leveetype.AuditEntry, error)
}

var _ Service = (*admin.Client)(nil)

// Options configures a Dashboard. The zero value serves loopback clients only, each as an
// operator, with payloads shown to operators and a 5 s minimum poll interval.
type Options struct {
	// ReadOnly refuses every state-changing request with 403 and hides the action buttons.
	ReadOnly bool
	// Users are the accounts of HTTP basic auth, by name. Empty means no basic auth.
	Users map[string]User
	// TrustedProxyHeader names a header (e.g. X-Forwarded-User) that carries the user name
	// when the request comes from an address in TrustedProxies. The user's role is theirs in
	// Users if listed there, else viewer. "" means no proxy authentication.
	TrustedProxyHeader string
	// TrustedProxies are the address ranges whose TrustedProxyHeader is believed. Required
	// with TrustedProxyHeader.
	TrustedProxies []netip.Prefix
	// AllowPayloads shows payloads to viewers too (operators always may see them).
	AllowPayloads bool
	// RedactKinds are kinds whose payloads are never shown, to anyone.
	RedactKinds []string
	// MinPoll is the shortest interval at which the stores are asked for counts, whatever the
	// number of tabs or their refresh rate; the pages refresh at this interval. Default 5s;
	// at least 1s.
	MinPoll time.Duration
	// Logger receives a line per action and per failed request. Default slog.Default().
	Logger *slog.Logger
	// LocalToken is the secret every request of the local operator must carry when there is no
	// authentication (no Users, no TrustedProxyHeader): once in the URL (?token=), which sets
	// a cookie, then in that cookie. With the check that the request names a loopback Host,
	// it keeps a web page in the operator's browser from acting on the dashboard, even
	// through DNS rebinding. "" (the default) makes a random one; Token returns it and LocalURL
	// the URL to open.
	LocalToken string
	// Prefix is the path the dashboard is mounted at in a larger server, such as "/levee":
	// it serves the requests under it and its links and redirects start with it. It starts
	// with "/" and does not end with one. "" (the default) mounts it at the root.
	//
	//	mux.Handle("/levee/", d) // with Prefix "/levee"
	Prefix string
}

// User is one account of the dashboard.
type User struct {
	Role Role
	// PasswordHash is the bcrypt hash of the password ($2a$, $2b$ or $2y$; make one with
	// `enqueue ui hash-password`). It is preferred to PasswordSHA256.
	PasswordHash string
	// PasswordSHA256 is the SHA-256 of the password (32 bytes): unsalted, so accepted for the
	// files of older versions only. With neither hash the user may only sign in through the
	// trusted proxy header.
	PasswordSHA256 []byte
}

// Role is what a user may do.
type Role string

// The roles. Viewers read; operators read and act.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
)

func (o *Options) validate() error {
	for name, u := range o.Users {
		if name == "" {
			return errors.New("dashboard: Options.Users has an empty user name")
		}
		if u.Role != RoleViewer && u.Role != RoleOperator {
			return fmt.Errorf("dashboard: Options.Users[%q].Role is %q: give viewer or operator", name, u.Role)
		}
		if u.PasswordSHA256 != nil && len(u.PasswordSHA256) != 32 {
			return fmt.Errorf("dashboard: Options.Users[%q].PasswordSHA256 has %d bytes, want 32", name, len(u.PasswordSHA256))
		}
		if u.PasswordHash != "" {
			if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
				return fmt.Errorf("dashboard: Options.Users[%q].PasswordHash is not a bcrypt hash: %w", name, err)
			}
		}
	}
	if (o.TrustedProxyHeader == "") != (len(o.TrustedProxies) == 0) {
		return errors.New("dashboard: Options.TrustedProxyHeader and Options.TrustedProxies go together")
	}
	if o.Prefix != "" && (!strings.HasPrefix(o.Prefix, "/") || strings.HasSuffix(o.Prefix, "/")) {
		return fmt.Errorf("dashboard: Options.Prefix %q must start with / and not end with one, like /levee", o.Prefix)
	}
	if o.MinPoll < time.Second {
		return fmt.Errorf("dashboard: Options.MinPoll %s is below 1s", o.MinPoll)
	}
	return nil
}

// Authenticated reports whether the options authenticate users (basic auth or a trusted
// proxy). Without it, the dashboard answers loopback clients only.
func (o *Options) Authenticated() bool {
	return len(o.Users) > 0 || o.TrustedProxyHeader != ""
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Dashboard is the dashboard's http.Handler. It is safe for concurrent use. Close stops its
// background bulk actions and waits for them.
type Dashboard struct {
	svc    Service
	opts   Options
	log    *slog.Logger
	pages  map[string]*template.Template
	redact map[string]bool
	h      http.Handler
	dlq    *scanCache

	// ctx ends background tasks on Close; wg waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	tasks  *taskList
	token  string // the local operator's token, without authentication
	// flashKey signs the outcome an action shows in the next page's banner.
	flashKey []byte
	// signIns counts failed sign-ins by client address and by user name.
	signIns *throttle
}

// Token returns the token the local operator's requests carry (Options.LocalToken), or ""
// when the dashboard authenticates its users.
func (d *Dashboard) Token() string { return d.token }

// LocalURL returns the URL the local operator opens, base (such as "http://127.0.0.1:8080")
// with the prefix and, without authentication, the token that sets the cookie.
func (d *Dashboard) LocalURL(base string) string {
	u := strings.TrimSuffix(base, "/") + d.opts.Prefix + "/"
	if d.token != "" {
		u += "?token=" + url.QueryEscape(d.token)
	}
	return u
}

// New returns the dashboard for svc (usually an *admin.Client). It returns an error naming the
// option when opts is invalid.
func New(svc Service, opts Options) (*Dashboard, error) {
	opts.MinPoll = cmp.Or(opts.MinPoll, 5*time.Second)
	if err := opts.validate(); err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	d := &Dashboard{
		svc: svc, opts: opts, log: cmp.Or(opts.Logger, slog.Default()), pages: pages,
		redact: map[string]bool{}, tasks: newTaskList(),
	}
	for _, k := range opts.RedactKinds {
		d.redact[k] = true
	}
	if !opts.Authenticated() {
		d.token = cmp.Or(opts.LocalToken, rand.Text())
	}
	d.flashKey = []byte(rand.Text())
	d.signIns = newThrottle(maxFailedSignIns, signInWindow)
	d.dlq = newScanCache(svc, opts.MinPoll)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.h = d.routes()
	return d, nil
}

// ServeHTTP serves the dashboard.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.h.ServeHTTP(w, r) }

// Close cancels the background bulk actions still running and waits for them to stop.
// It is idempotent.
func (d *Dashboard) Close() {
	d.cancel()
	d.wg.Wait()
}

func (d *Dashboard) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", d.overview)
	mux.HandleFunc("GET /kinds", d.kinds)
	mux.HandleFunc("GET /jobs", d.jobs)
	mux.HandleFunc("GET /jobs/{id}", d.job)
	mux.HandleFunc("GET /dlq", d.dlqPage)
	mux.HandleFunc("GET /dlq/bulk", d.bulkConfirm)
	mux.HandleFunc("GET /tasks/{id}", d.task)
	mux.HandleFunc("GET /tasks/{id}/progress", d.taskProgress)
	mux.HandleFunc("GET /audit", d.audit)

	mux.Handle("POST /jobs/{id}/retry", d.act(d.retryJob))
	mux.Handle("POST /jobs/{id}/cancel", d.act(d.cancelJob))
	mux.Handle("POST /kinds/{kind}/pause", d.act(d.pauseKind))
	mux.Handle("POST /kinds/{kind}/resume", d.act(d.resumeKind))
	mux.Handle("POST /kinds/{kind}/reset-breaker", d.act(d.resetBreaker))
	mux.Handle("POST /dlq/replay", d.act(d.dlqReplay))
	mux.Handle("POST /dlq/purge", d.act(d.dlqPurge))
	mux.Handle("POST /dlq/bulk", d.act(d.bulkStart))

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.deny(w, r, http.StatusForbidden, "cross-origin request refused: use the dashboard's own pages")
	}))
	h := newPollCache(d.opts.MinPoll).wrap(mux)
	if d.opts.Prefix != "" {
		h = http.StripPrefix(d.opts.Prefix, h)
	}
	return d.secure(d.authenticate(cop.Handler(h)))
}
