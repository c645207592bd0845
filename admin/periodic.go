package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/leveetype"
)

// PeriodicEntry is one periodic job as the ledger holds it. Its JSON form is what
// `enqueue periodic list --json` prints, one object per line.
type PeriodicEntry struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Schedule is the schedule as written: `cron "0 2 * * *" Europe/Berlin` or `every 10m`.
	Schedule string            `json:"schedule"`
	CatchUp  leveetype.CatchUp `json:"catch_up"`
	Payload  json.RawMessage   `json:"payload"`
	// LastRun is the last tick enqueued (null before the first); NextRun the next one.
	LastRun *time.Time `json:"last_run"`
	NextRun time.Time  `json:"next_run"`
	Paused  bool       `json:"paused"`
	// UpdatedAt is when a worker or an operator last wrote the entry.
	UpdatedAt time.Time `json:"updated_at"`
}

func publicPeriodic(e idempotency.PeriodicEntry) PeriodicEntry {
	d := e.Def.WithDefaults()
	out := PeriodicEntry{
		Name: d.Name, Kind: d.Kind, Schedule: d.Spec(), CatchUp: d.CatchUp, Payload: d.Payload,
		NextRun: e.NextRun.UTC(), Paused: e.Paused, UpdatedAt: e.UpdatedAt.UTC(),
	}
	if e.LastRun != nil {
		t := e.LastRun.UTC()
		out.LastRun = &t
	}
	return out
}

// PeriodicList returns every periodic job the ledger holds (registered by a worker, paused or
// not), by name.
func (c *Client) PeriodicList(ctx context.Context) ([]PeriodicEntry, error) {
	if c.conn.Ledger == nil {
		return nil, ErrDatabaseRequired
	}
	entries, err := c.conn.Ledger.ListPeriodic(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]PeriodicEntry, len(entries))
	for i, e := range entries {
		out[i] = publicPeriodic(e)
	}
	return out, nil
}

// PeriodicPause stops the periodic job name from enqueueing ticks across the fleet, until
// PeriodicResume; it is audited. An unknown name returns an error wrapping ErrNotFound.
func (c *Client) PeriodicPause(ctx context.Context, name string, by leveetype.Actor) (*PeriodicEntry, error) {
	return c.periodicPause(ctx, name, true, by)
}

// PeriodicResume lets a paused periodic job enqueue ticks again: its next tick is the first
// after now (the ticks due while it was paused do not run). It is audited.
func (c *Client) PeriodicResume(ctx context.Context, name string, by leveetype.Actor) (*PeriodicEntry, error) {
	return c.periodicPause(ctx, name, false, by)
}

// PeriodicDelete removes the periodic job name from the ledger, audited: no tick of it is
// enqueued any more (runs enqueued already stay scheduled). A worker that starts with the
// entry in its config writes it again, so take it out of every config first; a worker that
// runs meanwhile does not bring it back. An unknown name returns an error wrapping
// ErrNotFound.
func (c *Client) PeriodicDelete(ctx context.Context, name string, by leveetype.Actor) error {
	if c.conn.Ledger == nil {
		return ErrDatabaseRequired
	}
	if err := leveetype.ValidatePeriodicName(name); err != nil {
		return err
	}
	if err := c.conn.Ledger.DeletePeriodic(ctx, name); errors.Is(err, idempotency.ErrNotFound) {
		return notFound(fmt.Sprintf("no periodic job %q (enqueue periodic list shows them)", name))
	} else if err != nil {
		return err
	}
	return c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "periodic_delete", Target: name})
}

func (c *Client) periodicPause(ctx context.Context, name string, paused bool, by leveetype.Actor) (*PeriodicEntry, error) {
	if c.conn.Ledger == nil {
		return nil, ErrDatabaseRequired
	}
	if err := leveetype.ValidatePeriodicName(name); err != nil {
		return nil, err
	}
	e, err := c.conn.Ledger.PausePeriodic(ctx, name, paused)
	if errors.Is(err, idempotency.ErrNotFound) {
		return nil, notFound(fmt.Sprintf("no periodic job %q (enqueue periodic list shows them)", name))
	}
	if err != nil {
		return nil, err
	}
	action := "periodic_resume"
	if paused {
		action = "periodic_pause"
	}
	if err := c.AuditRecord(ctx, AuditRecordParams{By: by, Action: action, Target: name}); err != nil {
		return nil, err
	}
	out := publicPeriodic(*e)
	return &out, nil
}

// notFound is an error that matches ErrNotFound without saying "job not found".
type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == ErrNotFound }
