package dashboard

import (
	"cmp"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/jsonview"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// maxListed bounds the dead jobs the DLQ page lists one by one (the groups count them all).
const maxListed = 200

// pollSeconds is the refresh interval of the live pages.
func (d *Dashboard) pollSeconds() int { return int(d.opts.MinPoll / time.Second) }

// stateCount is one state's tile on the overview.
type stateCount struct {
	State levee.State
	Count int64
}

type overviewData struct {
	O            *admin.Overview
	States       []stateCount
	Chart        template.HTML
	OpenBreakers []admin.KindInfo
	// CutOff holds the kinds whose breaker is closed while some of their workers cannot reach
	// the fleet's breaker record (an open breaker's banner says so itself).
	CutOff []admin.KindInfo
	Paused []admin.KindInfo
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request) {
	ov, err := d.svc.Overview(r.Context(), d.opts.MinPoll)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	data := overviewData{O: ov, Chart: activityChart(ov.Buckets)}
	for _, s := range allStates {
		data.States = append(data.States, stateCount{State: s, Count: ov.Counts[s]})
	}
	for _, k := range ov.Kinds {
		switch {
		case k.Breaker != "" && k.Breaker != "closed":
			data.OpenBreakers = append(data.OpenBreakers, k)
		case k.BreakerCutOff > 0:
			data.CutOff = append(data.CutOff, k)
		}
		if k.Paused {
			data.Paused = append(data.Paused, k)
		}
	}
	d.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Poll: d.pollSeconds(), Data: data})
}

func (d *Dashboard) kinds(w http.ResponseWriter, r *http.Request) {
	ov, err := d.svc.Overview(r.Context(), d.opts.MinPoll)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	d.render(w, r, http.StatusOK, "kinds", page{Title: "Kinds", Nav: "kinds", Poll: d.pollSeconds(), Data: ov})
}

type jobsData struct {
	Form   jobsForm
	States []levee.State
	Query  string // the id-or-key search
	Jobs   []levee.JobStatus
	Next   string
	// Searched is true when Jobs are the search's results rather than the filter's page.
	Searched bool
	Problem  string
}

func (d *Dashboard) jobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	data := jobsData{Form: jobsFormFrom(q), States: jobStates, Query: strings.TrimSpace(q.Get("q"))}
	p := page{Title: "Jobs", Nav: "jobs", Data: &data}
	if data.Query != "" {
		found, err := d.svc.JobFind(r.Context(), data.Query)
		switch {
		case errors.Is(err, admin.ErrNotFound), err == nil && len(found) == 0:
			data.Problem = "no job has the id or idempotency key " + strconvQuote(data.Query)
			d.render(w, r, http.StatusNotFound, "jobs", p)
			return
		case err != nil:
			d.fail(w, r, err)
			return
		case len(found) == 1:
			http.Redirect(w, r, d.opts.Prefix+"/jobs/"+url.PathEscape(found[0].ID), http.StatusSeeOther)
			return
		}
		data.Jobs, data.Searched = d.scrubJobs(identityFrom(r.Context()), found), true
		d.render(w, r, http.StatusOK, "jobs", p)
		return
	}
	f, err := data.Form.filter(time.Now())
	if err != nil {
		data.Problem = err.Error()
		d.render(w, r, http.StatusBadRequest, "jobs", p)
		return
	}
	pg, err := d.svc.JobList(r.Context(), f)
	if err != nil {
		data.Problem = err.Error()
		status := http.StatusBadGateway
		if errors.Is(err, admin.ErrBadFilter) {
			status = http.StatusBadRequest
		}
		d.render(w, r, status, "jobs", p)
		return
	}
	data.Jobs, data.Next = d.scrubJobs(identityFrom(r.Context()), pg.Jobs), pg.Next
	d.render(w, r, http.StatusOK, "jobs", p)
}

type jobData struct {
	Job         *levee.JobStatus
	Attempts    []leveetype.Attempt
	AttemptsErr string
	Dead        *leveetype.DeadJob
	// Payload is the indented payload when it may be shown; PayloadNote says why not.
	Payload     string
	PayloadNote string
	Result      string
	CanRetry    bool
	CanCancel   bool
}

func (d *Dashboard) job(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	if err := queue.ValidateID(id); err != nil {
		d.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	st, err := d.svc.JobGet(ctx, id)
	if errors.Is(err, levee.ErrJobNotFound) || errors.Is(err, admin.ErrNotFound) {
		d.deny(w, r, http.StatusNotFound, "no job "+id+": it is neither waiting in the stream nor in the ledger")
		return
	}
	if err != nil {
		d.fail(w, r, err)
		return
	}
	data := jobData{Job: st, Result: indent(st.Result)}
	data.CanRetry = st.State == levee.StateDead || st.State == levee.StateRetrying || st.State == levee.StateScheduled
	data.CanCancel = st.State == levee.StateQueued || st.State == levee.StateRetrying || st.State == levee.StateScheduled
	if data.Attempts, err = d.svc.JobAttempts(ctx, id); err != nil {
		data.AttemptsErr = err.Error()
	}
	if st.State == levee.StateDead {
		if dj, err := d.svc.DeadJobGet(ctx, id); err == nil {
			data.Dead = dj
		}
	}
	see := d.canSeePayload(identityFrom(ctx), st.Kind)
	if !see {
		// Results and errors can hold what the payload does (a token echoed back, a query
		// string): whoever may not see the kind's payloads does not see them either.
		scrubbed := *st
		scrubbed.Result, scrubbed.LastError = nil, hidden(st.LastError)
		data.Job, data.Result = &scrubbed, ""
		for i := range data.Attempts {
			data.Attempts[i].Error = hidden(data.Attempts[i].Error)
		}
		if data.Dead != nil {
			dead := *data.Dead
			dead.LastError = hidden(dead.LastError)
			data.Dead = &dead
		}
	}
	switch {
	case data.Dead == nil && st.State == levee.StateScheduled:
		data.PayloadNote = "The payload waits in the ledger with the job; this page shows payloads of dead jobs only."
	case data.Dead == nil:
		data.PayloadNote = "The payload is kept only in the dead-letter queue."
	case d.redact[st.Kind]:
		data.PayloadNote = "Payloads of kind " + st.Kind + " are redacted."
	case !see:
		data.PayloadNote = "Payloads are shown to operators only."
	default:
		data.Payload = indent(jsonview.RedactHeaders(data.Dead.Payload))
	}
	d.render(w, r, http.StatusOK, "job", page{Title: "Job " + id, Nav: "jobs", Poll: d.pollSeconds(), Data: data})
}

// dlqGroup counts the dead jobs of one kind and reason.
type dlqGroup struct {
	Kind, Reason   string
	Count          int
	Oldest, Newest time.Time
}

type dlqData struct {
	Form    dlqForm
	Groups  []dlqGroup
	Lines   []deadLine
	Total   int
	At      time.Time
	Problem string
	Back    string
}

func (d *Dashboard) dlqPage(w http.ResponseWriter, r *http.Request) {
	data := dlqData{Form: dlqFormFrom(r.URL.Query())}
	data.Back = "/dlq"
	if qs := data.Form.Query(); qs != "" {
		data.Back += "?" + qs
	}
	p := page{Title: "Dead-letter queue", Nav: "dlq", Poll: d.pollSeconds(), Data: &data}
	s, err := d.dlq.scan(r.Context(), data.Form, false)
	if err != nil {
		data.Problem = err.Error()
		d.render(w, r, http.StatusBadRequest, "dlq", p)
		return
	}
	data.Groups, data.Total, data.At = groupDead(s.Lines), len(s.Lines), s.At
	// Newest first, as an operator looks for what just died.
	me := identityFrom(r.Context())
	for i := len(s.Lines) - 1; i >= 0 && len(data.Lines) < maxListed; i-- {
		l := s.Lines[i]
		if !d.canSeePayload(me, l.Kind) {
			l.LastError = hidden(l.LastError)
		}
		data.Lines = append(data.Lines, l)
	}
	d.render(w, r, http.StatusOK, "dlq", p)
}

// groupDead counts lines by kind and reason, the biggest group first.
func groupDead(lines []deadLine) []dlqGroup {
	idx := map[[2]string]int{}
	var groups []dlqGroup
	for _, l := range lines {
		k := [2]string{l.Kind, l.Reason}
		i, ok := idx[k]
		if !ok {
			i = len(groups)
			idx[k] = i
			groups = append(groups, dlqGroup{Kind: l.Kind, Reason: l.Reason, Oldest: l.FailedAt})
		}
		g := &groups[i]
		g.Count++
		if l.FailedAt.Before(g.Oldest) {
			g.Oldest = l.FailedAt
		}
		if l.FailedAt.After(g.Newest) {
			g.Newest = l.FailedAt
		}
	}
	slices.SortStableFunc(groups, func(a, b dlqGroup) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Reason, b.Reason))
	})
	return groups
}

func (d *Dashboard) audit(w http.ResponseWriter, r *http.Request) {
	entries, err := d.svc.AuditList(r.Context(), 200)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	d.render(w, r, http.StatusOK, "audit", page{Title: "Audit log", Nav: "audit", Data: entries})
}

// indent pretty-prints JSON, or returns it as it is when it is not JSON.
func indent(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	return jsonview.Indent(raw, "", "  ") // bounded: json.Indent is quadratic in the nesting
}

// hidden stands for an error or result that the viewer may not see ("" stays "").
func hidden(s string) string {
	if s == "" {
		return ""
	}
	return "(hidden: errors and results are shown to those who may see the kind's payloads)"
}

// scrubJobs hides the errors of the jobs whose kind's payloads id may not see.
func (d *Dashboard) scrubJobs(id identity, jobs []leveetype.JobStatus) []leveetype.JobStatus {
	for i := range jobs {
		if !d.canSeePayload(id, jobs[i].Kind) {
			jobs[i].LastError = hidden(jobs[i].LastError)
			jobs[i].Result = nil
		}
	}
	return jobs
}

func strconvQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

// Scheduled reports whether the page lists scheduled jobs only: soonest due first.
func (j *jobsData) Scheduled() bool { return j.Form.State == string(levee.StateScheduled) }

// NextHref is the link to the page after this one.
func (j *jobsData) NextHref() string {
	v, _ := url.ParseQuery(j.Form.Query())
	v.Set("cursor", j.Next)
	return "/jobs?" + v.Encode()
}

// BulkHref is the link to the confirmation of action (replay or purge) on every job matching
// the filter.
func (d *dlqData) BulkHref(action string) string {
	v, _ := url.ParseQuery(d.Form.Query())
	v.Set("action", action)
	return "/dlq/bulk?" + v.Encode()
}
