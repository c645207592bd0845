package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/leveetype"
)

// maxSelected bounds the dead jobs one replay or purge of selected entries acts on; more go
// through a bulk action.
const maxSelected = 500

func (d *Dashboard) retryJob(w http.ResponseWriter, r *http.Request, id identity) {
	job := r.PathValue("id")
	err := d.svc.JobRetry(r.Context(), job, id.actor())
	d.dlq.forget()
	d.logAction(id, "job.retry", job, err)
	d.redirect(w, r, back(r, "/jobs/"+url.PathEscape(job)), "job "+job+" will run again", err)
}

func (d *Dashboard) cancelJob(w http.ResponseWriter, r *http.Request, id identity) {
	job := r.PathValue("id")
	err := d.svc.JobCancel(r.Context(), job, id.actor())
	d.dlq.forget()
	d.logAction(id, "job.cancel", job, err)
	d.redirect(w, r, back(r, "/jobs/"+url.PathEscape(job)), "job "+job+" is cancelled", err)
}

func (d *Dashboard) pauseKind(w http.ResponseWriter, r *http.Request, id identity) {
	d.kindAction(w, r, id, "kind.pause", d.svc.KindPause, "is paused")
}

func (d *Dashboard) resumeKind(w http.ResponseWriter, r *http.Request, id identity) {
	d.kindAction(w, r, id, "kind.resume", d.svc.KindResume, "is resumed")
}

func (d *Dashboard) resetBreaker(w http.ResponseWriter, r *http.Request, id identity) {
	d.kindAction(w, r, id, "kind.reset_breaker", func(ctx context.Context, kind string, by leveetype.Actor) error {
		_, err := d.svc.BreakerReset(ctx, admin.BreakerResetParams{Kind: kind, By: by})
		return err
	}, "has its breaker closed")
}

func (d *Dashboard) kindAction(w http.ResponseWriter, r *http.Request, id identity, action string,
	do func(context.Context, string, leveetype.Actor) error, done string) {
	kind := r.PathValue("kind")
	err := do(r.Context(), kind, id.actor())
	d.logAction(id, action, kind, err)
	d.redirect(w, r, back(r, "/kinds"), "kind "+kind+" "+done, err)
}

func (d *Dashboard) dlqReplay(w http.ResponseWriter, r *http.Request, id identity) {
	d.dlqSelected(w, r, id, "dlq.replay", "replayed", func(ctx context.Context, dj leveetype.DeadJob) (string, error) {
		res, err := d.svc.DeadJobReplay(ctx, dj, admin.DeadJobReplayParams{By: id.actor()})
		return "key was " + keyState(res.KeyState), err
	})
}

func (d *Dashboard) dlqPurge(w http.ResponseWriter, r *http.Request, id identity) {
	d.dlqSelected(w, r, id, "dlq.purge", "purged", func(ctx context.Context, dj leveetype.DeadJob) (string, error) {
		return "", d.svc.DeadJobPurge(ctx, dj)
	})
}

// dlqSelected replays or purges the dead jobs whose ids the form lists, one by one, and audits
// each.
func (d *Dashboard) dlqSelected(w http.ResponseWriter, r *http.Request, id identity, action, verb string,
	do func(context.Context, leveetype.DeadJob) (string, error)) {
	if err := r.ParseForm(); err != nil {
		d.deny(w, r, http.StatusBadRequest, err.Error())
		return
	}
	ids := r.PostForm["id"]
	to := back(r, "/dlq")
	switch {
	case len(ids) == 0:
		d.redirect(w, r, to, "", errors.New("select dead jobs first, or use “all matching this filter”"))
		return
	case len(ids) > maxSelected:
		d.redirect(w, r, to, "", fmt.Errorf("%d jobs selected: select at most %d, or use “all matching this filter”", len(ids), maxSelected))
		return
	}
	ctx := r.Context()
	var errs []error
	for _, job := range ids {
		errs = append(errs, d.dlqOne(ctx, id, action, job, do))
	}
	d.dlq.forget()
	err := errors.Join(errs...)
	msg := fmt.Sprintf("%s %d dead job(s)", verb, len(ids))
	if err != nil {
		err = fmt.Errorf("%s %d of %d: %w", verb, len(ids)-countErrs(errs), len(ids), err)
	}
	d.redirect(w, r, to, msg, err)
}

// dlqOne replays or purges one dead job and writes it to the audit log.
func (d *Dashboard) dlqOne(ctx context.Context, id identity, action, job string,
	do func(context.Context, leveetype.DeadJob) (string, error)) error {
	dj, err := d.svc.DeadJobGet(ctx, job)
	if err != nil {
		return err
	}
	detail, err := do(ctx, *dj)
	if err != nil {
		d.logAction(id, action, job, err)
		return fmt.Errorf("%s: %w", job, err)
	}
	if aerr := d.svc.AuditRecord(ctx, admin.AuditRecordParams{By: id.actor(), Action: action, Target: job, Detail: detail}); aerr != nil {
		d.log.Error("dashboard: audit", "action", action, "target", job, "err", aerr)
	}
	return nil
}

func (d *Dashboard) logAction(id identity, action, target string, err error) {
	if err != nil {
		d.log.Warn("dashboard: action refused or failed", "actor", id.actor(), "action", action, "target", target, "err", err)
		return
	}
	d.log.Info("dashboard: action", "actor", id.actor(), "action", action, "target", target)
}

func keyState(s string) string {
	if s == "" {
		return "not in the ledger"
	}
	return s
}

func countErrs(errs []error) int {
	n := 0
	for _, e := range errs {
		if e != nil {
			n++
		}
	}
	return n
}
