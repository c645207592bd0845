package dashboard

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/age"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/queue"
)

// dlqForm is the DLQ filter as the forms and URLs carry it: the same choices as
// `enqueue dlq list` (--kind, --reason, --since, --older-than).
type dlqForm struct {
	Kind      string
	Reason    string
	Since     string // died within the last DURATION
	OlderThan string // died longer ago than DURATION
}

func dlqFormFrom(v url.Values) dlqForm {
	return dlqForm{
		Kind: strings.TrimSpace(v.Get("kind")), Reason: strings.TrimSpace(v.Get("reason")),
		Since: strings.TrimSpace(v.Get("since")), OlderThan: strings.TrimSpace(v.Get("older_than")),
	}
}

// filter is the admin.DeadJobListParams the form means at now, or an error naming the bad field.
func (f dlqForm) filter(now time.Time) (admin.DeadJobListParams, error) {
	out := admin.DeadJobListParams{Kind: f.Kind, Reason: f.Reason}
	if f.Kind != "" {
		if err := queue.ValidateKind(f.Kind); err != nil {
			return out, err
		}
	}
	if f.Reason != "" {
		if err := executor.CheckReason(f.Reason); err != nil {
			return out, err
		}
	}
	since, older, err := ages(f.Since, f.OlderThan)
	if err != nil {
		return out, err
	}
	if since > 0 {
		out.Since = now.Add(-since)
	}
	if older > 0 {
		out.Before = now.Add(-older)
	}
	return out, nil
}

// Query is the form as URL query parameters (empty ones left out).
func (f dlqForm) Query() string {
	v := url.Values{}
	set(v, "kind", f.Kind)
	set(v, "reason", f.Reason)
	set(v, "since", f.Since)
	set(v, "older_than", f.OlderThan)
	return v.Encode()
}

// String describes the filter for people and the audit log.
func (f dlqForm) String() string {
	var parts []string
	for _, p := range [][2]string{{"kind", f.Kind}, {"reason", f.Reason}, {"since", f.Since}, {"older-than", f.OlderThan}} {
		if p[1] != "" {
			parts = append(parts, p[0]+"="+p[1])
		}
	}
	if len(parts) == 0 {
		return "every dead job"
	}
	return strings.Join(parts, " ")
}

// jobsForm is the jobs page's filter.
type jobsForm struct {
	State     string
	Kind      string
	Since     string // enqueued within the last DURATION
	OlderThan string // enqueued longer ago than DURATION
	Limit     string // page size; "" is the service's default (50)
	Cursor    string
}

func jobsFormFrom(v url.Values) jobsForm {
	return jobsForm{
		State: strings.TrimSpace(v.Get("state")), Kind: strings.TrimSpace(v.Get("kind")),
		Since: strings.TrimSpace(v.Get("since")), OlderThan: strings.TrimSpace(v.Get("older_than")),
		Limit: strings.TrimSpace(v.Get("limit")), Cursor: v.Get("cursor"),
	}
}

// allStates are the states the overview counts, in a job's order.
var allStates = []levee.State{levee.StateScheduled, levee.StateQueued, levee.StateRunning, levee.StateRetrying, levee.StateSucceeded, levee.StateDead}

// jobStates are the states the jobs page filters on: the ledger's. Queued jobs wait in NATS,
// counted per kind on the kinds page.
var jobStates = []levee.State{levee.StateScheduled, levee.StateRunning, levee.StateRetrying, levee.StateSucceeded, levee.StateDead}

// errQueuedNotListed answers a jobs filter on the queued state.
var errQueuedNotListed = errors.New("queued jobs wait in NATS, not in the ledger, so they are not listed: " +
	"the Kinds page counts them per kind, and the search box finds one by id or key")

func (f jobsForm) filter(now time.Time) (admin.JobListParams, error) {
	out := admin.JobListParams{State: levee.State(f.State), Kind: f.Kind, Cursor: f.Cursor}
	if f.State == string(levee.StateQueued) {
		return out, errQueuedNotListed
	}
	if f.State != "" && !slices.Contains(jobStates, out.State) {
		return out, fmt.Errorf("unknown state %q: choose scheduled, running, retrying, succeeded or dead", f.State)
	}
	if f.Limit != "" {
		n, err := strconv.Atoi(f.Limit)
		if err != nil || n <= 0 {
			return out, fmt.Errorf("limit %q: give a number of jobs per page", f.Limit)
		}
		out.Limit = n
	}
	since, older, err := ages(f.Since, f.OlderThan)
	if err != nil {
		return out, err
	}
	if since > 0 {
		out.Since = now.Add(-since)
	}
	if older > 0 {
		out.Until = now.Add(-older)
	}
	return out, nil
}

// Query is the filter as URL query parameters, without the cursor.
func (f jobsForm) Query() string {
	v := url.Values{}
	set(v, "state", f.State)
	set(v, "kind", f.Kind)
	set(v, "since", f.Since)
	set(v, "older_than", f.OlderThan)
	set(v, "limit", f.Limit)
	return v.Encode()
}

func set(v url.Values, k, s string) {
	if s != "" {
		v.Set(k, s)
	}
}

// ages reads the since and older-than fields.
func ages(sinceText, olderText string) (since, older time.Duration, err error) {
	if sinceText != "" {
		if since, err = age.Parse(sinceText); err != nil {
			return 0, 0, fmt.Errorf("since %q: %w", sinceText, err)
		}
	}
	if olderText != "" {
		if older, err = age.Parse(olderText); err != nil {
			return 0, 0, fmt.Errorf("older than %q: %w", olderText, err)
		}
	}
	if since > 0 && older > 0 && since <= older {
		return 0, 0, fmt.Errorf("since %s and older than %s select nothing: since must be the longer one", sinceText, olderText)
	}
	return since, older, nil
}
