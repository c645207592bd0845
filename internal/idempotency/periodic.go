package idempotency

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// periodicHold is how long a worker that cannot read a due periodic job's definition leaves
// it to the others.
const periodicHold = time.Minute

// PeriodicEntry is one periodic job as the ledger holds it.
type PeriodicEntry struct {
	Def leveetype.PeriodicJob
	// NextRun is the first tick not enqueued yet; LastRun the last tick enqueued (nil before
	// the first).
	NextRun time.Time
	LastRun *time.Time
	Paused  bool
	// UpdatedAt is when a worker last wrote the entry (its definition, a tick, a pause).
	UpdatedAt time.Time
}

// RegisterPeriodic writes a worker's periodic jobs to the ledger (design rule 45). A new name
// gets its first tick after now; a changed schedule (cron, every or timezone) starts again
// after now; an unchanged one keeps its next tick, so that a restart neither skips nor repeats
// one. Entries of other names are left alone: a worker whose config lacks an entry never
// deletes it.
// maxPayload bounds the payloads, as the worker's own (0: the default).
func (l *Ledger) RegisterPeriodic(ctx context.Context, defs []leveetype.PeriodicJob, maxPayload int) error {
	if len(defs) == 0 {
		return nil
	}
	defs = slices.Clone(defs)
	slices.SortFunc(defs, func(a, b leveetype.PeriodicJob) int { return strings.Compare(a.Name, b.Name) })
	for i := range defs {
		defs[i] = defs[i].WithDefaults()
		if err := defs[i].Validate(); err != nil {
			return err
		}
		// The payload must make a job as published (compact JSON within the default bound).
		env, err := queue.NewEnvelope(defs[i].Kind, "periodic", leveetype.TickKey(defs[i].Name, time.Now()), defs[i].Payload, 0, maxPayload)
		if err != nil {
			return fmt.Errorf("periodic job %q: %w", defs[i].Name, err)
		}
		defs[i].Payload = env.Payload
	}
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var now time.Time
		if err := tx.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
			return err
		}
		for _, def := range defs {
			if err := l.registerOne(ctx, tx, def, now); err != nil {
				return fmt.Errorf("periodic job %q: %w", def.Name, err)
			}
		}
		return nil
	})
	if isUndefinedTable(err) {
		return ErrNotScheduled
	}
	if err != nil {
		return fmt.Errorf("register periodic jobs: %w", err)
	}
	return nil
}

func (l *Ledger) registerOne(ctx context.Context, tx pgx.Tx, def leveetype.PeriodicJob, now time.Time) error {
	sched, err := def.Schedule()
	if err != nil {
		return err
	}
	// Without HTML escapes: the payload is published as written.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(def); err != nil {
		return err
	}
	raw := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	next := sched.Next(now)
	if next.IsZero() {
		return errors.New("its schedule has no tick in the next 100 years")
	}
	tag, err := tx.Exec(ctx, l.q.upsertPeriodic, def.Name, string(raw), next)
	if err != nil || tag.RowsAffected() == 1 {
		return err // inserted (or failed)
	}
	var stored leveetype.PeriodicJob
	var storedRaw []byte
	if err := tx.QueryRow(ctx, l.q.lockPeriodic, def.Name).Scan(&storedRaw); err != nil {
		return err
	}
	if err := json.Unmarshal(storedRaw, &stored); err != nil {
		stored = leveetype.PeriodicJob{} // unreadable: rewritten, and started again
	}
	stored = stored.WithDefaults()
	sameSchedule := stored.Cron == def.Cron && stored.Every == def.Every && stored.Timezone == def.Timezone
	if sameSchedule && string(storedRaw) == string(raw) {
		return nil
	}
	var restart *time.Time
	if !sameSchedule {
		restart = &next
	}
	_, err = tx.Exec(ctx, l.q.redefinePeriodic, def.Name, string(raw), restart)
	return err
}

// TickPeriodic enqueues the due ticks of periodic jobs (design rule 45). For each unpaused
// entry whose next tick has passed and that no other dispatcher holds (FOR UPDATE SKIP
// LOCKED), it inserts the ticks its catch_up allows as scheduled rows (each with the key
// periodic:<name>:<tick>) and moves the entry's next tick on, in one transaction: each tick is
// enqueued once across the fleet. An entry whose stored definition this worker cannot read
// (written by another version, or in a zone it has no data for) is held for a minute, its
// next tick unmoved, for a worker that can, and reported in err. It returns the number of ticks enqueued.
func (l *Ledger) TickPeriodic(ctx context.Context, grace time.Duration, maxTicks int) (enqueued int, err error) {
	var bad []error
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, l.q.duePeriodic)
		if err != nil {
			return err
		}
		type due struct {
			name        string
			raw         []byte
			next, dbNow time.Time
		}
		var dues []due
		var d due
		if _, err := pgx.ForEachRow(rows, []any{&d.name, &d.raw, &d.next, &d.dbNow}, func() error {
			dues = append(dues, d)
			return nil
		}); err != nil {
			return err
		}
		var jobs []ScheduledJob
		for _, d := range dues {
			ticks, newNext, err := dueTicks(d.raw, d.next, d.dbNow, grace, maxTicks)
			if err != nil {
				// Left to a worker that can read it (another version, or with the zone's
				// data) for a while, its next tick unmoved: moving it on here would lose
				// that tick for the fleet, and leaving it due would keep it first in line,
				// ahead of the entries this worker can tick.
				bad = append(bad, fmt.Errorf("periodic job %q (left to other workers for %s): %w", d.name, periodicHold, err))
				if _, err := tx.Exec(ctx, l.q.holdPeriodic, d.name, periodicHold.Seconds()); err != nil {
					return err
				}
				continue
			}
			var def leveetype.PeriodicJob
			_ = json.Unmarshal(d.raw, &def) // read by dueTicks already
			for _, tick := range ticks {
				jobs = append(jobs, ScheduledJob{
					ID: ulid.MustNew(ulid.Timestamp(tick), rand.Reader).String(), Kind: def.Kind,
					Key: leveetype.TickKey(def.Name, tick), Payload: def.Payload, RunAt: tick,
					Origin: OriginPeriodic, Periodic: def.Name,
				})
			}
			var last *time.Time
			if len(ticks) > 0 {
				last = &ticks[len(ticks)-1]
			}
			if _, err := tx.Exec(ctx, l.q.advancePeriodic, d.name, newNext, last); err != nil {
				return err
			}
		}
		if len(jobs) > 0 {
			if _, err := l.outbox.Insert(ctx, tx, jobs); err != nil {
				return err
			}
		}
		enqueued = len(jobs)
		return nil
	})
	if isUndefinedTable(err) {
		return 0, ErrNotScheduled
	}
	if err != nil {
		return 0, fmt.Errorf("enqueue periodic ticks: %w", err)
	}
	return enqueued, errors.Join(bad...)
}

// dueTicks reads a stored definition and returns its due ticks and next tick.
func dueTicks(raw []byte, next, now time.Time, grace time.Duration, maxTicks int) ([]time.Time, time.Time, error) {
	var def leveetype.PeriodicJob
	if err := json.Unmarshal(raw, &def); err != nil {
		return nil, time.Time{}, fmt.Errorf("stored definition: %w", err)
	}
	def = def.WithDefaults()
	if err := def.Validate(); err != nil {
		return nil, time.Time{}, fmt.Errorf("stored definition: %w", err)
	}
	sched, err := def.Schedule()
	if err != nil {
		return nil, time.Time{}, err
	}
	// The stored next tick runs as a tick, under its own key, even when this worker's zone
	// rules would not have made it one (workers whose hosts have other zoneinfo versions):
	// one tick, run once, rather than none. every: is whole milliseconds, so its ticks are
	// stored exactly.
	// A tick later than half its period is a missed one, for catch_up skip, however long
	// grace is.
	grace = min(grace, sched.Next(next).Sub(next)/2)
	ticks, newNext := leveetype.DueTicks(sched, next, now, def.CatchUp, grace, maxTicks)
	if newNext.IsZero() {
		return nil, time.Time{}, errors.New("its schedule has no tick in the next 100 years")
	}
	return ticks, newNext, nil
}

// ListPeriodic returns every periodic job the ledger holds, by name.
func (l *Ledger) ListPeriodic(ctx context.Context) ([]PeriodicEntry, error) {
	rows, err := l.pool.Query(ctx, l.q.listPeriodic)
	if isUndefinedTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list periodic jobs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PeriodicEntry, error) {
		var e PeriodicEntry
		var raw []byte
		if err := r.Scan(&e.Def.Name, &raw, &e.NextRun, &e.LastRun, &e.Paused, &e.UpdatedAt); err != nil {
			return e, err
		}
		name := e.Def.Name
		if err := json.Unmarshal(raw, &e.Def); err != nil {
			e.Def = leveetype.PeriodicJob{Name: name}
		}
		return e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list periodic jobs: %w", err)
	}
	return out, nil
}

// PausePeriodic pauses (paused true) or resumes the periodic job name; ErrNotFound when the
// ledger has none. A paused job enqueues no tick; on resume its next tick is the first after
// now: the ticks it missed while paused do not run. It returns the entry as it is after.
func (l *Ledger) PausePeriodic(ctx context.Context, name string, paused bool) (*PeriodicEntry, error) {
	var out *PeriodicEntry
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var raw []byte
		var now time.Time
		err := tx.QueryRow(ctx, l.q.lockPeriodicNow, name).Scan(&raw, &now)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		var next *time.Time
		if !paused {
			var def leveetype.PeriodicJob
			if err := json.Unmarshal(raw, &def); err != nil {
				return fmt.Errorf("stored definition: %w", err)
			}
			sched, err := def.WithDefaults().Schedule()
			if err != nil {
				return err
			}
			n := sched.Next(now)
			next = &n
		}
		e := PeriodicEntry{}
		e.Def.Name = name
		if err := tx.QueryRow(ctx, l.q.pausePeriodic, name, paused, next).Scan(&e.NextRun, &e.LastRun, &e.Paused, &e.UpdatedAt); err != nil {
			return err
		}
		_ = json.Unmarshal(raw, &e.Def)
		out = &e
		return nil
	})
	if isUndefinedTable(err) {
		return nil, ErrNotFound
	}
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no periodic job %q (enqueue periodic list shows them)", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("pause periodic job %q: %w", name, err)
	}
	return out, nil
}

// DeletePeriodic removes the periodic job name from the ledger: no tick of it is enqueued
// any more (those enqueued already stay scheduled), until a worker that has it in its config
// starts and writes it again. It returns ErrNotFound when the ledger has none.
func (l *Ledger) DeletePeriodic(ctx context.Context, name string) error {
	tag, err := l.pool.Exec(ctx, l.q.deletePeriodic, name)
	if isUndefinedTable(err) || (err == nil && tag.RowsAffected() == 0) {
		return fmt.Errorf("%w: no periodic job %q", ErrNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("delete periodic job %q: %w", name, err)
	}
	return nil
}
