package dashboard

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/leveetype"
)

// Bulk actions on the DLQ: "replay (or purge) all matching this filter". The confirmation page
// shows the filter and how many jobs match; the operator types that count; the server counts
// again and starts only if the count still matches, then works through the jobs matched at
// that moment in the background (jobs that die later are not touched). The page polls the
// task's progress. The audit log gets a line when it starts and one when it ends.

// maxTasks is how many finished tasks are remembered for their progress pages.
const maxTasks = 50

// maxTaskErrors is how many error messages a task keeps.
const maxTaskErrors = 20

// task is one bulk action in the background. Its fields after mu are guarded by mu.
type task struct {
	ID      string
	Action  string // replay or purge
	Filter  string
	Actor   leveetype.Actor
	Total   int
	Started time.Time

	mu       sync.Mutex
	done     int
	failed   int
	errs     []string
	finished time.Time
}

// taskProgress is a task's progress as the page and its JSON show it.
type taskProgress struct {
	ID       string    `json:"id"`
	Action   string    `json:"action"`
	Filter   string    `json:"filter"`
	Actor    string    `json:"actor"`
	Total    int       `json:"total"`
	Done     int       `json:"done"`
	Failed   int       `json:"failed"`
	Errors   []string  `json:"errors"`
	Started  time.Time `json:"started"`
	Finished bool      `json:"finished"`
	Percent  int       `json:"percent"`
}

func (t *task) progress() taskProgress {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := taskProgress{
		ID: t.ID, Action: t.Action, Filter: t.Filter, Actor: string(t.Actor), Total: t.Total,
		Done: t.done, Failed: t.failed, Errors: append([]string(nil), t.errs...), Started: t.Started,
		Finished: !t.finished.IsZero(), Percent: 100,
	}
	if t.Total > 0 {
		p.Percent = (t.done + t.failed) * 100 / t.Total
	}
	return p
}

func (t *task) record(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.done++
		return
	}
	t.failed++
	if len(t.errs) < maxTaskErrors {
		t.errs = append(t.errs, err.Error())
	}
}

// taskList holds the recent tasks by id.
type taskList struct {
	mu    sync.Mutex
	byID  map[string]*task
	order []string
}

func newTaskList() *taskList { return &taskList{byID: map[string]*task{}} }

func (l *taskList) add(t *task) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byID[t.ID] = t
	l.order = append(l.order, t.ID)
	for len(l.order) > maxTasks {
		old := l.byID[l.order[0]]
		if old.progress().Finished {
			delete(l.byID, l.order[0])
		}
		l.order = l.order[1:]
	}
}

func (l *taskList) get(id string) *task {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byID[id]
}

type bulkData struct {
	Action  string
	Form    dlqForm
	Count   int
	At      time.Time
	Problem string
}

// bulkAction reads and checks the action field.
func bulkAction(s string) (string, bool) {
	return s, s == "replay" || s == "purge"
}

func (d *Dashboard) bulkConfirm(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	action, ok := bulkAction(q.Get("action"))
	if !ok {
		d.deny(w, r, http.StatusBadRequest, "action must be replay or purge")
		return
	}
	data := bulkData{Action: action, Form: dlqFormFrom(q)}
	p := page{Title: "Confirm " + action, Nav: "dlq", Data: &data}
	s, err := d.dlq.scan(r.Context(), data.Form, false)
	if err != nil {
		data.Problem = err.Error()
		d.render(w, r, http.StatusBadRequest, "bulk", p)
		return
	}
	data.Count, data.At = len(s.Lines), s.At
	d.render(w, r, http.StatusOK, "bulk", p)
}

func (d *Dashboard) bulkStart(w http.ResponseWriter, r *http.Request, id identity) {
	action, ok := bulkAction(r.PostFormValue("action"))
	if !ok {
		d.deny(w, r, http.StatusBadRequest, "action must be replay or purge")
		return
	}
	data := bulkData{Action: action, Form: dlqFormFrom(r.PostForm)}
	p := page{Title: "Confirm " + action, Nav: "dlq", Data: &data}
	s, err := d.dlq.scan(r.Context(), data.Form, true)
	if err != nil {
		data.Problem = err.Error()
		d.render(w, r, http.StatusBadRequest, "bulk", p)
		return
	}
	data.Count, data.At = len(s.Lines), s.At
	typed, err := strconv.Atoi(strings.TrimSpace(r.PostFormValue("confirm")))
	switch {
	case data.Count == 0:
		data.Problem = "no dead job matches this filter now: nothing to " + action
	case err != nil || typed != data.Count:
		data.Problem = fmt.Sprintf("type the number of matching jobs, %d, to confirm (it may have changed since the page was drawn)", data.Count)
	}
	if data.Problem != "" {
		d.render(w, r, http.StatusConflict, "bulk", p)
		return
	}
	t := &task{ID: rand.Text()[:16], Action: action, Filter: data.Form.String(), Actor: id.actor(), Total: data.Count, Started: time.Now()}
	d.tasks.add(t)
	detail := fmt.Sprintf("%s all matching %s: %d jobs (task %s)", action, t.Filter, t.Total, t.ID)
	if err := d.svc.AuditRecord(r.Context(), admin.AuditRecordParams{By: t.Actor, Action: "dlq." + action + "_all", Target: t.Filter, Detail: detail}); err != nil {
		d.log.Error("dashboard: audit", "action", "dlq."+action+"_all", "err", err)
	}
	d.log.Info("dashboard: bulk action started", "actor", t.Actor, "action", action, "filter", t.Filter, "jobs", t.Total, "task", t.ID)
	d.wg.Go(func() { d.runTask(t, s.Lines) })
	http.Redirect(w, r, d.opts.Prefix+"/tasks/"+t.ID, http.StatusSeeOther)
}

// runTask works through lines, the jobs matched when the task started, until done or Close.
func (d *Dashboard) runTask(t *task, lines []deadLine) {
	ctx := d.ctx
	for _, l := range lines {
		if ctx.Err() != nil {
			p := t.progress()
			t.record(fmt.Errorf("stopped: the dashboard is shutting down (%d jobs not done)", t.Total-p.Done-p.Failed))
			break
		}
		t.record(d.bulkOne(ctx, t.Action, t.Actor, l))
	}
	d.dlq.forget()
	p := t.progress()
	// The audit entry is written before the task shows as finished, so that whoever saw it
	// finish finds it in the audit log.
	detail := fmt.Sprintf("%s all matching %s finished: %d done, %d failed of %d (task %s)", t.Action, t.Filter, p.Done, p.Failed, t.Total, t.ID)
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := d.svc.AuditRecord(actx, admin.AuditRecordParams{By: t.Actor, Action: "dlq." + t.Action + "_all.done", Target: t.Filter, Detail: detail}); err != nil {
		d.log.Error("dashboard: audit", "action", "dlq."+t.Action+"_all.done", "err", err)
	}
	t.mu.Lock()
	t.finished = time.Now()
	t.mu.Unlock()
	d.log.Info("dashboard: bulk action finished", "actor", t.Actor, "action", t.Action, "task", t.ID, "done", p.Done, "failed", p.Failed)
}

// bulkOne replays or purges the dead job l, unless it changed since it was matched.
func (d *Dashboard) bulkOne(ctx context.Context, action string, by leveetype.Actor, l deadLine) error {
	dj, err := d.svc.DeadJobGet(ctx, l.ID)
	if err != nil {
		return err
	}
	if dj.Sequence != l.Sequence {
		return fmt.Errorf("%s: replayed or purged meanwhile; left alone", l.ID)
	}
	if action == "purge" {
		return d.svc.DeadJobPurge(ctx, *dj)
	}
	_, err = d.svc.DeadJobReplay(ctx, *dj, admin.DeadJobReplayParams{By: by})
	if err != nil {
		return fmt.Errorf("%s: %w", l.ID, err)
	}
	return nil
}

func (d *Dashboard) task(w http.ResponseWriter, r *http.Request) {
	t := d.tasks.get(r.PathValue("id"))
	if t == nil {
		d.deny(w, r, http.StatusNotFound, "no such task: tasks are kept in memory, the last 50, until the dashboard restarts")
		return
	}
	p := t.progress()
	poll := 1
	if p.Finished {
		poll = 0
	}
	d.render(w, r, http.StatusOK, "task", page{Title: "Bulk " + t.Action, Nav: "dlq", Poll: poll, Data: p})
}

func (d *Dashboard) taskProgress(w http.ResponseWriter, r *http.Request) {
	t := d.tasks.get(r.PathValue("id"))
	if t == nil {
		http.Error(w, `{"error":"no such task"}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(t.progress())
}
