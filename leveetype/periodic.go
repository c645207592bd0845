package leveetype

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	_ "time/tzdata" // a zone's rules on a host without zoneinfo (a host's own zoneinfo is preferred)
)

// PeriodicJob is one periodic job: a job of Kind published at every tick of its schedule,
// once across the whole fleet. The idempotency key of each run is TickKey(Name, tick).
// WithDefaults fills its zero fields; Validate is its one check, for the Go API and the
// worker's YAML config alike (the yaml keys below).
//
// Time zones and daylight saving time, for a Cron in a Timezone that has them (Europe/Berlin):
//
//   - A local time that does not exist (spring forward: 02:00–03:00 on 2026-03-29 in Berlin)
//     has no tick: "30 2 * * *" does not run at all on that day, and "0 2 * * *" neither. The
//     next run is the next day's. A job that must run every day should not be scheduled in
//     the hour the clocks skip (in Europe, 02:00–03:00), or should use Timezone UTC.
//   - A local time that happens twice (fall back: 02:00–03:00 on 2026-10-25 in Berlin) runs
//     once, at its first occurrence (02:30 CEST, 00:30 UTC), when the cron's hour field names
//     certain hours ("30 2 * * *", "0 */6 * * *"). A cron that fires in every hour of the
//     day (hour field "*" or "0-23": "*/10 * * * *", "30 * * * *") runs by the clock as it
//     passes: in the repeated hour too, so that its runs stay evenly spaced.
//
// The same holds for changes of half an hour (Australia/Lord_Howe) or at midnight
// (America/Havana). Every is not affected: its ticks are instants, multiples of Every since
// the Unix epoch.
type PeriodicJob struct {
	// Name identifies the job across the fleet and in its runs' idempotency keys: 1 to
	// MaxPeriodicNameLen characters of [a-z0-9_-], starting with a letter or digit (as a kind,
	// but longer). Required; unique among a fleet's periodic jobs.
	Name string `yaml:"name" json:"name"`
	// Kind is the kind of the jobs published. Required. No worker needs to serve it for the
	// ticks to be published: the jobs wait in the stream until one does.
	Kind string `yaml:"kind" json:"kind"`
	// Cron is a standard 5-field cron expression (minute hour day-of-month month day-of-week,
	// e.g. "0 2 * * *"), read by github.com/robfig/cron/v3 and matched against the local
	// time in Timezone. Descriptors such as @daily and @every are refused, and so is a
	// CRON_TZ= prefix. Exactly one of Cron and Every is set.
	Cron string `yaml:"cron" json:"cron,omitempty"`
	// Every ticks at every multiple of Every since the Unix epoch (1970-01-01T00:00:00Z), so
	// that every worker computes the same ticks: every: 10m ticks at :00, :10, :20 in UTC.
	// At least 1s. Exactly one of Cron and Every is set. In JSON it is a duration string
	// ("10m").
	Every time.Duration `yaml:"every" json:"every,omitempty"`
	// Timezone is the IANA name of the zone Cron is read in (Europe/Berlin). Default UTC.
	// Only for Cron: Every refuses any zone but UTC.
	Timezone string `yaml:"timezone" json:"timezone,omitempty"`
	// Payload is the JSON payload of each run. Default null. In the worker's YAML config it is
	// any YAML value (a map, a list, a string, a number), converted to compact JSON.
	Payload json.RawMessage `yaml:"-" json:"payload"`
	// CatchUp says which ticks run after the fleet missed some (a downtime). Default
	// CatchUpLatest.
	CatchUp CatchUp `yaml:"catch_up" json:"catch_up"`
}

// CatchUp says which missed ticks of a periodic job run once the fleet is back; see DueTicks.
type CatchUp string

// The catch-up modes of a periodic job (PeriodicJob.CatchUp).
const (
	// CatchUpSkip runs no missed tick: only a tick that is on time runs.
	CatchUpSkip CatchUp = "skip"
	// CatchUpLatest runs the latest missed tick, once, for all the missed ones. The default.
	CatchUpLatest CatchUp = "latest"
	// CatchUpAll runs every missed tick, oldest first, a bounded number per pass.
	CatchUpAll CatchUp = "all"
)

// The defaults and bounds of a periodic job.
const (
	DefaultPeriodicTimezone = "UTC"
	DefaultCatchUp          = CatchUpLatest
	// MaxPeriodicNameLen bounds a periodic job's name, in bytes.
	MaxPeriodicNameLen = 100
	// MinEvery is the shortest PeriodicJob.Every.
	MinEvery = time.Second
)

// WithDefaults returns p with its zero fields set to their defaults: Timezone UTC, CatchUp
// latest, Payload null.
func (p PeriodicJob) WithDefaults() PeriodicJob {
	if p.Timezone == "" {
		p.Timezone = DefaultPeriodicTimezone
	}
	if p.CatchUp == "" {
		p.CatchUp = DefaultCatchUp
	}
	if len(p.Payload) == 0 {
		p.Payload = json.RawMessage("null")
	}
	return p
}

// PeriodicError is an impossible value of a periodic job. Key names the field as the YAML
// config spells it (cron, every, catch_up), or is "" for the job as a whole, so that the
// config can point at its line.
type PeriodicError struct {
	Name string
	Key  string
	Msg  string
}

func (e *PeriodicError) Error() string {
	s := "periodic job"
	if e.Name != "" {
		s += " " + e.Name
	}
	if e.Key != "" {
		s += ": " + e.Key
	}
	return s + " " + e.Msg
}

var periodicNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// ValidatePeriodicName reports whether name can name a periodic job: 1 to MaxPeriodicNameLen
// characters of [a-z0-9_-], starting with a letter or digit.
func ValidatePeriodicName(name string) error {
	if len(name) > MaxPeriodicNameLen || !periodicNameRE.MatchString(name) {
		return fmt.Errorf("invalid name %q: a periodic job's name is 1-%d characters of [a-z0-9_-], starting with a letter or digit", name, MaxPeriodicNameLen)
	}
	return nil
}

// Validate reports the first impossible value of p, with its defaults filled in
// (WithDefaults), as a *PeriodicError.
func (p PeriodicJob) Validate() error {
	p = p.WithDefaults()
	bad := p.errorf
	switch {
	case p.Name == "":
		return bad("name", "is required: give the job a unique name such as nightly-settlement")
	case ValidatePeriodicName(p.Name) != nil:
		return bad("name", "%.120q is invalid: use 1-%d characters of [a-z0-9_-], starting with a letter or digit", p.Name, MaxPeriodicNameLen)
	case p.Kind == "":
		return bad("kind", "is required: name the kind of the jobs to publish")
	case ValidateKind(p.Kind) != nil:
		_, why, _ := strings.Cut(ValidateKind(p.Kind).Error(), ": ")
		return bad("kind", "%q is invalid: %s", p.Kind, why)
	case p.CatchUp != CatchUpSkip && p.CatchUp != CatchUpLatest && p.CatchUp != CatchUpAll:
		return bad("catch_up", "must be %s, %s or %s, got %q", CatchUpSkip, CatchUpLatest, CatchUpAll, p.CatchUp)
	case !json.Valid(p.Payload):
		return bad("payload", "is not valid JSON")
	}
	_, err := p.Schedule()
	return err
}

// errorf is a *PeriodicError about key of p; it names p when p's name is valid.
func (p PeriodicJob) errorf(key, format string, args ...any) error {
	name := p.Name
	if ValidatePeriodicName(name) != nil {
		name = ""
	}
	return &PeriodicError{Name: name, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// cronCheckFrom is where Validate looks for a cron's first tick.
var cronCheckFrom = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// loadLocation loads an IANA time zone. "Local" is refused: each worker may have its own.
func loadLocation(name string) (*time.Location, error) {
	if name == "Local" {
		return nil, errors.New(`"Local" differs from worker to worker: use an IANA name such as Europe/Berlin, or UTC`)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%q is not a time zone: use an IANA name such as Europe/Berlin, or UTC", name)
	}
	return loc, nil
}

// Spec describes p's schedule for display: `cron "0 2 * * *" Europe/Berlin` or `every 10m`.
func (p PeriodicJob) Spec() string {
	if p.Cron == "" {
		return "every " + shortDuration(p.Every)
	}
	return fmt.Sprintf("cron %q %s", p.Cron, p.WithDefaults().Timezone)
}

// shortDuration formats d as time.Duration does, without zero trailing units: 10m, 1h30m, 1h.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalJSON writes p with Every as a duration string ("10m").
func (p PeriodicJob) MarshalJSON() ([]byte, error) {
	type plain PeriodicJob
	v := struct {
		plain
		Every string `json:"every,omitempty"`
	}{plain: plain(p)}
	if p.Every != 0 {
		v.Every = shortDuration(p.Every)
	}
	// Without HTML escapes, so that the payload stays as written ("&", not "\u0026").
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON reads p as MarshalJSON writes it.
func (p *PeriodicJob) UnmarshalJSON(b []byte) error {
	type plain PeriodicJob
	v := struct {
		*plain
		Every string `json:"every,omitempty"`
	}{plain: (*plain)(p)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	p.Every = 0
	if v.Every != "" {
		d, err := time.ParseDuration(v.Every)
		if err != nil {
			return fmt.Errorf("periodic job %s: invalid every %q: use a duration such as 10m", p.Name, v.Every)
		}
		p.Every = d
	}
	return nil
}

// TickKey returns the idempotency key of the run of the periodic job name at tick:
// periodic:<name>:<tick in RFC 3339, UTC>, e.g. periodic:nightly-settlement:2026-12-24T01:00:00Z
// (fractions of a second appear only if the tick has them). For a valid name it is a valid
// idempotency key, of at most 140 bytes (up to the year 9999).
func TickKey(name string, tick time.Time) string {
	return "periodic:" + name + ":" + tick.UTC().Format(time.RFC3339Nano)
}

// Schedule is a periodic job's schedule (PeriodicJob.Schedule).
type Schedule interface {
	// Next returns the first tick strictly after after, in UTC, or the zero Time if there is
	// none (a cron whose date does not come within a century).
	Next(after time.Time) time.Time
}

// Schedule returns p's schedule, or the error Validate gives for its cron, every or timezone,
// as a *PeriodicError.
func (p PeriodicJob) Schedule() (Schedule, error) {
	p = p.WithDefaults()
	bad := p.errorf
	switch {
	case p.Cron != "" && p.Every != 0:
		return nil, bad("every", "and cron are both set: give one of them")
	case p.Cron == "" && p.Every == 0:
		return nil, bad("", `has no schedule: set cron (e.g. "0 2 * * *") or every (e.g. 10m)`)
	case p.Every != 0 && p.Every < MinEvery:
		return nil, bad("every", "must be at least %s, got %s", MinEvery, p.Every)
	case p.Every%time.Millisecond != 0:
		// Ticks are stored to the microsecond: a finer one would be stored as another instant.
		return nil, bad("every", "must be a whole number of milliseconds, got %s", p.Every)
	}
	loc, err := loadLocation(p.Timezone)
	if err != nil {
		return nil, bad("timezone", "%v", err)
	}
	if p.Every != 0 {
		if loc != time.UTC {
			return nil, bad("timezone", "%q is only for cron: every ticks at multiples of %s since the Unix epoch, in UTC; remove timezone, or use cron", p.Timezone, shortDuration(p.Every))
		}
		return everySchedule{d: p.Every}, nil
	}
	s, err := parseCron(p.Cron, loc)
	if err != nil {
		return nil, bad("cron", "%v", err)
	}
	if (cronSchedule{spec: s.spec, loc: time.UTC}).Next(cronCheckFrom).IsZero() { // in UTC: no periods to take in turn
		return nil, bad("cron", "%q never fires: there is no such date (check day-of-month and month)", p.Cron)
	}
	return s, nil
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// cronHint ends the errors about a cron expression.
const cronHint = `use 5 fields: minute hour day-of-month month day-of-week, e.g. "0 2 * * *"`

func parseCron(expr string, loc *time.Location) (cronSchedule, error) {
	s := strings.TrimSpace(expr)
	switch {
	case strings.HasPrefix(s, "@"):
		// Also keeps "@every 10m" apart from every:, which aligns its ticks to the epoch.
		return cronSchedule{}, fmt.Errorf("%q is a descriptor, which is not supported: %s, or every: for a fixed interval", expr, cronHint)
	case strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ="):
		// Also keeps "TZ=UTC" (no space) from robfig's parser, which it makes panic.
		return cronSchedule{}, fmt.Errorf("%q names a time zone: give it with the timezone key instead", expr)
	}
	parsed, err := cronParser.Parse(s)
	if err != nil {
		return cronSchedule{}, fmt.Errorf("%q does not parse: %s; %s", expr, strings.Join(strings.Fields(err.Error()), " "), cronHint)
	}
	spec, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return cronSchedule{}, fmt.Errorf("%q does not parse: %s", expr, cronHint)
	}
	// The spec matches local times written as UTC ones: robfig's own handling of zones loops
	// for ever in some (a zone whose clocks skip midnight) and misses days in others (a
	// half-hour change), so cronSchedule keeps the zone to itself.
	spec.Location = time.UTC
	const allHours = 1<<24 - 1
	return cronSchedule{spec: spec, loc: loc, everyHour: spec.Hour&allHours == allHours}, nil
}

// cronSchedule is a cron expression in a time zone. Its ticks are the instants whose local
// time the expression matches, less the local times that do not exist (spring forward) and,
// unless it fires in every hour of the day, the second occurrence of a local time that
// happens twice (fall back). See PeriodicJob.
//
// Next takes the zone's periods of constant UTC offset (time.Time.ZoneBounds) one after the
// other: within one, local time is UTC shifted by the offset, and robfig's SpecSchedule.Next
// finds the first matching local time in UTC, where no clock ever jumps.
type cronSchedule struct {
	spec      *cron.SpecSchedule // Location UTC
	loc       *time.Location
	everyHour bool
}

// cronHorizon is how far ahead Next looks for a tick, in years.
const cronHorizon = 100

// Next returns the first tick strictly after after, in UTC, or the zero Time if there is
// none within cronHorizon years.
func (c cronSchedule) Next(after time.Time) time.Time {
	horizon := after.AddDate(cronHorizon, 0, 0)
	// Ticks are looked for strictly after from, in the period of constant offset that holds
	// at the instant in.
	from, in := after, after
	// Each round returns or moves on: to the next period, past a repeated hour, or five years.
	for range 10_000 {
		if from.After(horizon) {
			break
		}
		local := in.In(c.loc)
		_, off := local.Zone()
		start, end := local.ZoneBounds()
		w := c.spec.Next(shift(from, off))
		if w.IsZero() {
			// robfig looks five years ahead at most: go on from there.
			w = time.Date(shift(from, off).Year()+5, time.December, 31, 23, 59, 59, 0, time.UTC)
			if next := shift(w, -off); end.IsZero() || next.Before(end) {
				from, in = next, next
				continue
			}
		}
		tick := shift(w, -off)
		if !end.IsZero() && !tick.Before(end) {
			from, in = end.Add(-time.Nanosecond), end
			continue
		}
		if !c.everyHour && !start.IsZero() {
			// The clocks went back at start: the local times of the first prevOff-off
			// seconds since then happened before it, and ran then.
			_, prevOff := start.Add(-time.Nanosecond).Zone()
			if repeatEnd := start.Add(time.Duration(prevOff-off) * time.Second); tick.Before(repeatEnd) {
				from, in = repeatEnd.Add(-time.Nanosecond), repeatEnd
				continue
			}
		}
		return tick.UTC()
	}
	return time.Time{}
}

// shift returns t moved by off seconds, in UTC: the local time at t, for the offset off, as a
// UTC time (or, with -off, back).
func shift(t time.Time, off int) time.Time {
	return time.Unix(t.Unix()+int64(off), int64(t.Nanosecond())).UTC()
}

// everySchedule ticks at the multiples of d since the Unix epoch.
type everySchedule struct{ d time.Duration }

// Next returns the first multiple of d since the epoch strictly after after.
func (e everySchedule) Next(after time.Time) time.Time {
	q := e.ticksUpTo(after)
	return e.tick(q.Add(q, big.NewInt(1)))
}

// latest returns the last multiple of d since the epoch at or before t.
func (e everySchedule) latest(t time.Time) time.Time { return e.tick(e.ticksUpTo(t)) }

// ticksUpTo returns floor(t / d), t in nanoseconds since the epoch: exact for any time, where
// int64 nanoseconds last only from 1678 to 2262.
func (e everySchedule) ticksUpTo(t time.Time) *big.Int {
	ns := new(big.Int).Mul(big.NewInt(t.Unix()), big.NewInt(int64(time.Second)))
	ns.Add(ns, big.NewInt(int64(t.Nanosecond())))
	return ns.Div(ns, big.NewInt(int64(e.d))) // Euclidean: the floor, for d > 0
}

// tick returns the q-th multiple of d since the epoch, in UTC.
func (e everySchedule) tick(q *big.Int) time.Time {
	ns := new(big.Int).Mul(q, big.NewInt(int64(e.d)))
	sec, nsec := new(big.Int).DivMod(ns, big.NewInt(int64(time.Second)), new(big.Int))
	return time.Unix(sec.Int64(), nsec.Int64()).UTC()
}

// NextRuns returns the first n ticks of s after from (fewer if s has no more).
func NextRuns(s Schedule, from time.Time, n int) []time.Time {
	var out []time.Time
	for t := from; len(out) < n; {
		next := s.Next(t)
		if next.IsZero() || !next.After(t) {
			break
		}
		out = append(out, next)
		t = next
	}
	return out
}

// maxWalk bounds the ticks DueTicks walks through to find the latest due tick of a schedule
// it cannot compute directly (a cron); see latestDue.
const maxWalk = 100_000

// DueTicks decides what a periodic job runs at now. next is its stored next tick: the first
// tick not yet run (a zero next means none is stored: nothing runs, and newNext is
// s.Next(now)). The due ticks are next, s.Next(next), … up to and including now; all times
// returned are in UTC.
//
//   - CatchUpAll runs them all, oldest first, at most limit per call (limit < 1 counts as 1);
//     when more are due, newNext is the tick after the last one run, so that the next call
//     runs the rest.
//   - CatchUpLatest runs only the latest due tick.
//   - CatchUpSkip runs the latest due tick only if it is on time: now - tick <= grace.
//
// Otherwise newNext is s.Next(now), the first tick strictly after now (zero if s has none).
// If next is after now, nothing is due and newNext is next. An unknown catchUp counts as
// CatchUpLatest.
//
// The cost does not grow with the ticks missed: for every: schedules the latest due tick is
// computed; for a cron, DueTicks looks back from now over windows of 1m, 4m, 16m, … (a cron
// fires at most once a minute, so a window holds few ticks) and walks forward through at
// most maxWalk (100,000) ticks; should a schedule of some other type have more in the last
// window, the latest walked to is run.
func DueTicks(s Schedule, next, now time.Time, catchUp CatchUp, grace time.Duration, limit int) (run []time.Time, newNext time.Time) {
	if next.IsZero() {
		return nil, s.Next(now)
	}
	if next = next.UTC(); next.After(now) {
		return nil, next
	}
	if catchUp == CatchUpAll {
		limit = max(limit, 1)
		for t := next; ; {
			run = append(run, t)
			n := s.Next(t)
			if n.IsZero() || !n.After(t) || n.After(now) {
				return run, s.Next(now)
			}
			if len(run) == limit {
				return run, n
			}
			t = n
		}
	}
	latest := latestDue(s, next, now)
	if catchUp == CatchUpSkip && now.Sub(latest) > grace {
		return nil, s.Next(now)
	}
	return []time.Time{latest}, s.Next(now)
}

// latestDue returns the last tick at or before now of the ticks next, s.Next(next), …, given
// that next is at or before now.
func latestDue(s Schedule, next, now time.Time) time.Time {
	if e, ok := s.(everySchedule); ok {
		if t := e.latest(now); t.After(next) {
			return t
		}
		return next
	}
	span := now.Sub(next) // saturates at the longest Duration
	for w := time.Minute; w < span; w *= 4 {
		if t := s.Next(now.Add(-w).Add(-time.Nanosecond)); !t.IsZero() && !t.After(now) && !t.Before(next) {
			return walkTo(s, t, now)
		}
		if w > span/4 {
			break
		}
	}
	return walkTo(s, next, now)
}

// walkTo follows s from tick t, at or before now, to the last tick at or before now, through
// at most maxWalk ticks.
func walkTo(s Schedule, t, now time.Time) time.Time {
	for range maxWalk {
		n := s.Next(t)
		if n.IsZero() || !n.After(t) || n.After(now) {
			break
		}
		t = n
	}
	return t
}
