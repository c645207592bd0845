package leveetype_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones below, whatever the machine's zoneinfo; the worker binary embeds it too

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func utcs(ss ...string) []time.Time {
	out := make([]time.Time, len(ss))
	for i, s := range ss {
		out[i] = utc(s)
	}
	return out
}

func schedule(t *testing.T, p leveetype.PeriodicJob) leveetype.Schedule {
	t.Helper()
	p.Name, p.Kind = "job", "kind"
	require.NoError(t, p.Validate())
	s, err := p.Schedule()
	require.NoError(t, err)
	return s
}

func cronIn(t *testing.T, expr, tz string) leveetype.Schedule {
	t.Helper()
	return schedule(t, leveetype.PeriodicJob{Cron: expr, Timezone: tz})
}

func every(t *testing.T, d time.Duration) leveetype.Schedule {
	t.Helper()
	return schedule(t, leveetype.PeriodicJob{Every: d})
}

// The runs of a cron, in its zone, across the changes of daylight saving time. A local time
// the clocks skip has no run; one they repeat runs once, unless the cron fires every hour.
func TestCronNextRuns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, cron, tz, from string
		want                 []string
	}{
		{"utc daily", "0 2 * * *", "", "2026-12-03T10:07:13Z",
			[]string{"2026-12-04T02:00:00Z", "2026-12-05T02:00:00Z", "2026-12-06T02:00:00Z"}},
		{"utc strictly after", "0 2 * * *", "UTC", "2026-12-04T02:00:00Z",
			[]string{"2026-12-05T02:00:00Z"}},
		{"utc just before", "0 2 * * *", "UTC", "2026-12-04T01:59:59.999Z",
			[]string{"2026-12-04T02:00:00Z"}},
		{"utc every 15 minutes", "*/15 * * * *", "UTC", "2026-12-31T23:40:00Z",
			[]string{"2026-12-31T23:45:00Z", "2027-01-01T00:00:00Z", "2027-01-01T00:15:00Z"}},
		{"utc weekdays", "30 9 * * mon-fri", "UTC", "2026-12-04T10:00:00Z", // a Friday
			[]string{"2026-12-07T09:30:00Z", "2026-12-08T09:30:00Z"}},
		{"utc first of the month", "0 0 1 * *", "UTC", "2026-01-15T00:00:00Z",
			[]string{"2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"}},
		{"leap day", "0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z",
			[]string{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"}},
		// 2100 is no leap year: eight years apart, beyond robfig's five-year search.
		{"leap day across 2100", "0 0 29 2 *", "UTC", "2097-01-01T00:00:00Z",
			[]string{"2104-02-29T00:00:00Z"}},
		{"berlin winter", "0 2 * * *", "Europe/Berlin", "2026-12-03T10:00:00Z",
			[]string{"2026-12-04T01:00:00Z", "2026-12-05T01:00:00Z"}},
		{"berlin summer", "0 2 * * *", "Europe/Berlin", "2026-07-01T10:00:00Z",
			[]string{"2026-07-02T00:00:00Z"}},
		// Spring forward: on 2026-03-29 02:00 CET becomes 03:00 CEST; 02:30 does not exist
		// that day, and the job does not run on it.
		{"berlin spring 02:30 skipped", "30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z",
			[]string{"2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"}},
		{"berlin spring 02:00 skipped", "0 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
			[]string{"2026-03-30T00:00:00Z"}},
		{"berlin spring 03:00 runs", "0 3 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"}},
		{"berlin spring hourly", "30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z",
			[]string{"2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z", "2026-03-29T02:30:00Z"}}, // 01:30 CET, 03:30 CEST, 04:30 CEST
		// Fall back: on 2026-10-25 03:00 CEST becomes 02:00 CET; 02:30 happens twice (00:30
		// and 01:30 UTC) and the job runs at the first only.
		{"berlin autumn 02:30 once", "30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z",
			[]string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"}},
		{"berlin autumn from between the two", "30 2 * * *", "Europe/Berlin", "2026-10-25T00:45:00Z",
			[]string{"2026-10-26T01:30:00Z"}},
		{"berlin autumn from the second", "30 2 * * *", "Europe/Berlin", "2026-10-25T01:29:00Z",
			[]string{"2026-10-26T01:30:00Z"}},
		{"berlin autumn several in the hour", "*/20 2 * * *", "Europe/Berlin", "2026-10-24T23:00:00Z",
			[]string{"2026-10-25T00:00:00Z", "2026-10-25T00:20:00Z", "2026-10-25T00:40:00Z", "2026-10-26T01:00:00Z"}},
		// A cron that fires in every hour runs through the repeated hour by the clock.
		{"berlin autumn hourly", "30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z",
			[]string{"2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"}},
		{"berlin autumn every 20 minutes", "*/20 * * * *", "Europe/Berlin", "2026-10-25T00:30:00Z",
			[]string{"2026-10-25T00:40:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:20:00Z", "2026-10-25T01:40:00Z"}},
		// New York: 2026-03-08 02:00 EST becomes 03:00 EDT; 2026-11-01 02:00 EDT becomes 01:00 EST.
		{"new york weekdays across spring", "0 9 * * 1-5", "America/New_York", "2026-03-06T00:00:00Z",
			[]string{"2026-03-06T14:00:00Z", "2026-03-09T13:00:00Z", "2026-03-10T13:00:00Z"}},
		{"new york spring 02:30 skipped", "30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z",
			[]string{"2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"}},
		{"new york autumn 01:30 once", "30 1 * * *", "America/New_York", "2026-10-31T00:00:00Z",
			[]string{"2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"new york midnight", "0 0 * * *", "America/New_York", "2026-12-03T12:00:00Z",
			[]string{"2026-12-04T05:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := cronIn(t, tc.cron, tc.tz)
			got := leveetype.NextRuns(s, utc(tc.from), len(tc.want))
			require.Equal(t, utcs(tc.want...), got)
			for _, g := range got {
				require.Equal(t, time.UTC, g.Location(), "ticks are in UTC")
			}
			// Next depends only on the instant, not on the zone it is given in.
			berlin, err := time.LoadLocation("Europe/Berlin")
			require.NoError(t, err)
			require.Equal(t, got[0], s.Next(utc(tc.from).In(berlin)))
		})
	}
}

// The ticks of every are the multiples of it since the Unix epoch: the same on every worker,
// whenever and from wherever each one computes them.
func TestEveryIsAlignedToTheEpoch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		every time.Duration
		from  string
		want  []string
	}{
		{10 * time.Minute, "2026-12-03T10:07:13Z", []string{"2026-12-03T10:10:00Z", "2026-12-03T10:20:00Z", "2026-12-03T10:30:00Z"}},
		{10 * time.Minute, "2026-12-03T10:10:00Z", []string{"2026-12-03T10:20:00Z"}},
		{10 * time.Minute, "2026-12-03T10:09:59.999999999Z", []string{"2026-12-03T10:10:00Z"}},
		{time.Hour, "2026-12-03T10:07:13Z", []string{"2026-12-03T11:00:00Z"}},
		{24 * time.Hour, "2026-12-03T10:07:13Z", []string{"2026-12-04T00:00:00Z"}},
		{time.Second, "2026-12-03T10:07:13.5Z", []string{"2026-12-03T10:07:14Z", "2026-12-03T10:07:15Z"}},
		{1500 * time.Millisecond, "1970-01-01T00:00:00Z", []string{"1970-01-01T00:00:01.5Z", "1970-01-01T00:00:03Z"}},
		{7 * time.Second, "1970-01-01T00:00:00Z", []string{"1970-01-01T00:00:07Z"}},
		{7 * time.Second, "1969-12-31T23:59:59Z", []string{"1970-01-01T00:00:00Z", "1970-01-01T00:00:07Z"}},
		{time.Hour, "1600-06-01T10:30:00Z", []string{"1600-06-01T11:00:00Z"}},        // before int64 nanoseconds begin
		{time.Hour, "3000-06-01T10:30:00Z", []string{"3000-06-01T11:00:00Z"}},        // and after they end
		{90 * time.Minute, "2026-12-03T00:00:00Z", []string{"2026-12-03T01:30:00Z"}}, // 1970 + k·90m
	} {
		t.Run(tc.every.String()+" from "+tc.from, func(t *testing.T) {
			t.Parallel()
			got := leveetype.NextRuns(every(t, tc.every), utc(tc.from), len(tc.want))
			require.Equal(t, utcs(tc.want...), got)
		})
	}

	// Two workers, two schedules, different clocks and zones: the same ticks.
	rng := rand.New(rand.NewPCG(1, 2))
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	require.NoError(t, err)
	for range 1000 {
		d := time.Second + time.Duration(rng.Int64N(int64(48*time.Hour))).Truncate(time.Millisecond)
		a, b := every(t, d), every(t, d)
		from := utc("2026-01-01T00:00:00Z").Add(time.Duration(rng.Int64N(int64(365 * 24 * time.Hour))))
		next := a.Next(from)
		require.True(t, next.After(from))
		require.LessOrEqual(t, next.Sub(from), d)
		require.Equal(t, next, b.Next(from.In(tokyo)))
		require.Equal(t, next, b.Next(next.Add(-time.Nanosecond)), "the same tick from just before it")
		require.Equal(t, next, b.Next(next.Add(-d)), "from the tick before it")
		require.Zero(t, next.UnixNano()%int64(d), "a multiple of %s since the epoch", d)
	}
}

func TestNextRunsStopsWhenTheScheduleEnds(t *testing.T) {
	t.Parallel()
	require.Empty(t, leveetype.NextRuns(every(t, time.Minute), utc("2026-01-01T00:00:00Z"), 0))
	require.Len(t, leveetype.NextRuns(every(t, time.Minute), utc("2026-01-01T00:00:00Z"), 5), 5)
	require.Empty(t, leveetype.NextRuns(stuck{}, utc("2026-01-01T00:00:00Z"), 3), "a schedule that does not move on ends")
}

// stuck is a schedule whose ticks have ended.
type stuck struct{}

func (stuck) Next(time.Time) time.Time { return time.Time{} }

// hidden hides a schedule's type from DueTicks, which then takes the path it takes for a cron.
type hidden struct{ leveetype.Schedule }

func TestDueTicks(t *testing.T) {
	t.Parallel()
	minute := every(t, time.Minute)
	t0 := utc("2026-12-03T10:00:00Z")
	m := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	year := utc("2025-12-03T10:00:00Z")
	for _, tc := range []struct {
		name     string
		s        leveetype.Schedule
		next     time.Time
		now      time.Time
		catchUp  leveetype.CatchUp
		grace    time.Duration
		limit    int
		wantRun  []time.Time
		wantNext time.Time
	}{
		{"not yet", minute, m(1), m(0).Add(59 * time.Second), leveetype.CatchUpAll, 0, 10, nil, m(1)},
		{"not yet latest", minute, m(1), m(0), leveetype.CatchUpLatest, 0, 10, nil, m(1)},
		{"nothing stored", minute, time.Time{}, m(0).Add(time.Second), leveetype.CatchUpAll, 0, 10, nil, m(1)},
		{"on the tick", minute, m(0), m(0), leveetype.CatchUpLatest, 0, 10, []time.Time{m(0)}, m(1)},
		{"on time all", minute, m(0), m(0).Add(2 * time.Second), leveetype.CatchUpAll, 0, 10, []time.Time{m(0)}, m(1)},
		{"on time skip", minute, m(0), m(0).Add(2 * time.Second), leveetype.CatchUpSkip, 5 * time.Second, 10, []time.Time{m(0)}, m(1)},
		{"late skip", minute, m(0), m(0).Add(6 * time.Second), leveetype.CatchUpSkip, 5 * time.Second, 10, nil, m(1)},

		{"missed all", minute, m(0), m(2).Add(30 * time.Second), leveetype.CatchUpAll, 0, 10, []time.Time{m(0), m(1), m(2)}, m(3)},
		{"missed all exactly the limit", minute, m(0), m(2).Add(30 * time.Second), leveetype.CatchUpAll, 0, 3, []time.Time{m(0), m(1), m(2)}, m(3)},
		{"missed all over the limit", minute, m(0), m(2).Add(30 * time.Second), leveetype.CatchUpAll, 0, 2, []time.Time{m(0), m(1)}, m(2)},
		{"missed all limit 0 is 1", minute, m(0), m(2).Add(30 * time.Second), leveetype.CatchUpAll, 0, 0, []time.Time{m(0)}, m(1)},
		{"missed latest", minute, m(0), m(2).Add(30 * time.Second), leveetype.CatchUpLatest, 0, 10, []time.Time{m(2)}, m(3)},
		{"missed skip on time", minute, m(0), m(2).Add(30 * time.Second), leveetype.CatchUpSkip, time.Minute, 10, []time.Time{m(2)}, m(3)},
		{"missed skip late", minute, m(0), m(2).Add(30 * time.Second), leveetype.CatchUpSkip, 10 * time.Second, 10, nil, m(3)},
		{"unknown catch-up is latest", minute, m(0), m(2).Add(30 * time.Second), "", 0, 10, []time.Time{m(2)}, m(3)},

		// A year down, a tick a second: latest and skip do not walk 31 million ticks.
		{"year every 1s latest", every(t, time.Second), year, t0.Add(500 * time.Millisecond), leveetype.CatchUpLatest, 0, 10,
			[]time.Time{t0}, t0.Add(time.Second)},
		{"year every 1s skip", every(t, time.Second), year, t0.Add(500 * time.Millisecond), leveetype.CatchUpSkip, time.Second, 10,
			[]time.Time{t0}, t0.Add(time.Second)},
		{"year every 1s all", every(t, time.Second), year, t0.Add(500 * time.Millisecond), leveetype.CatchUpAll, 0, 3,
			[]time.Time{year, year.Add(time.Second), year.Add(2 * time.Second)}, year.Add(3 * time.Second)},
		{"year every 1s, hidden", hidden{every(t, time.Second)}, year, t0.Add(500 * time.Millisecond), leveetype.CatchUpLatest, 0, 10,
			[]time.Time{t0}, t0.Add(time.Second)},
		{"year every minute cron", cronIn(t, "* * * * *", "UTC"), year, m(0).Add(30 * time.Second), leveetype.CatchUpLatest, 0, 10,
			[]time.Time{m(0)}, m(1)},
		{"three years nightly berlin", cronIn(t, "0 2 * * *", "Europe/Berlin"), utc("2023-12-04T01:00:00Z"), utc("2026-12-03T12:00:00Z"),
			leveetype.CatchUpLatest, 0, 10, utcs("2026-12-03T01:00:00Z"), utc("2026-12-04T01:00:00Z")},
		{"leap day latest", cronIn(t, "0 0 29 2 *", "UTC"), utc("2004-02-29T00:00:00Z"), utc("2026-12-03T12:00:00Z"),
			leveetype.CatchUpLatest, 0, 10, utcs("2024-02-29T00:00:00Z"), utc("2028-02-29T00:00:00Z")},
		// Dense ticks, then a long gap before now: the look back widens until it finds them.
		{"dense then a gap", cronIn(t, "* 3 * * *", "UTC"), utc("2026-12-01T03:00:00Z"), utc("2026-12-03T23:00:00Z"),
			leveetype.CatchUpLatest, 0, 10, utcs("2026-12-03T03:59:00Z"), utc("2026-12-04T03:00:00Z")},
		{"all across the autumn change", cronIn(t, "30 2 * * *", "Europe/Berlin"), utc("2026-10-24T00:30:00Z"), utc("2026-10-26T12:00:00Z"),
			leveetype.CatchUpAll, 0, 10, utcs("2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"), utc("2026-10-27T01:30:00Z")},
		{"schedule ended", stuck{}, m(0), m(5), leveetype.CatchUpAll, 0, 10, []time.Time{m(0)}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			run, next := leveetype.DueTicks(tc.s, tc.next, tc.now, tc.catchUp, tc.grace, tc.limit)
			require.Equal(t, tc.wantRun, run)
			require.Equal(t, tc.wantNext, next)
			require.Less(t, time.Since(start), time.Second, "the cost does not grow with the ticks missed")
		})
	}
}

// Catching up with CatchUpAll over several passes runs every tick once, in order.
func TestDueTicksAllOverPasses(t *testing.T) {
	t.Parallel()
	s := every(t, time.Minute)
	now := utc("2026-12-03T10:00:30Z")
	next := utc("2026-12-03T09:00:00Z")
	var all []time.Time
	for pass := 0; ; pass++ {
		require.Less(t, pass, 100)
		run, n := leveetype.DueTicks(s, next, now, leveetype.CatchUpAll, 0, 7)
		all = append(all, run...)
		if len(run) < 7 {
			require.Equal(t, utc("2026-12-03T10:01:00Z"), n)
			break
		}
		next = n
	}
	require.Equal(t, leveetype.NextRuns(s, utc("2026-12-03T08:59:59Z"), 61), all)
}

func TestPeriodicValidate(t *testing.T) {
	t.Parallel()
	good := leveetype.PeriodicJob{Name: "nightly-settlement", Kind: "settle", Cron: "0 2 * * *", Timezone: "Europe/Berlin"}
	require.NoError(t, good.Validate())
	require.NoError(t, leveetype.PeriodicJob{Name: "n", Kind: "k", Every: 10 * time.Minute, Timezone: "UTC"}.Validate())
	require.NoError(t, leveetype.PeriodicJob{Name: strings.Repeat("a", 100), Kind: "k", Every: time.Second,
		Payload: json.RawMessage(`{"a":[1,2]}`), CatchUp: leveetype.CatchUpAll}.Validate())

	for _, tc := range []struct {
		name string
		mod  func(*leveetype.PeriodicJob)
		key  string
		want string
	}{
		{"no name", func(p *leveetype.PeriodicJob) { p.Name = "" }, "name", "is required"},
		{"bad name", func(p *leveetype.PeriodicJob) { p.Name = "Nightly Settlement" }, "name", `"Nightly Settlement" is invalid: use 1-100 characters`},
		{"colon in name", func(p *leveetype.PeriodicJob) { p.Name = "a:b" }, "name", "is invalid"},
		{"long name", func(p *leveetype.PeriodicJob) { p.Name = strings.Repeat("a", 101) }, "name", "is invalid"},
		{"no kind", func(p *leveetype.PeriodicJob) { p.Kind = "" }, "kind", "is required"},
		{"bad kind", func(p *leveetype.PeriodicJob) { p.Kind = "Bad.Kind" }, "kind", `"Bad.Kind" is invalid: a kind is 1-64 characters`},
		{"no schedule", func(p *leveetype.PeriodicJob) { p.Cron = "" }, "", "has no schedule: set cron"},
		{"both", func(p *leveetype.PeriodicJob) { p.Every = time.Hour }, "every", "and cron are both set"},
		{"every too short", func(p *leveetype.PeriodicJob) { p.Cron, p.Timezone, p.Every = "", "", 500*time.Millisecond }, "every", "must be at least 1s, got 500ms"},
		{"every finer than a millisecond", func(p *leveetype.PeriodicJob) { p.Cron, p.Timezone, p.Every = "", "", 1333333300*time.Nanosecond }, "every", "must be a whole number of milliseconds, got 1.3333333s"},
		{"every negative", func(p *leveetype.PeriodicJob) { p.Cron, p.Timezone, p.Every = "", "", -time.Minute }, "every", "must be at least 1s"},
		{"every in a zone", func(p *leveetype.PeriodicJob) { p.Cron, p.Every = "", 24*time.Hour }, "timezone", `"Europe/Berlin" is only for cron: every ticks at multiples of 24h since the Unix epoch`},
		{"cron fields", func(p *leveetype.PeriodicJob) { p.Cron = "0 2 * *" }, "cron", `"0 2 * *" does not parse: expected exactly 5 fields, found 4`},
		{"cron seconds", func(p *leveetype.PeriodicJob) { p.Cron = "0 0 2 * * *" }, "cron", "expected exactly 5 fields, found 6"},
		{"cron range", func(p *leveetype.PeriodicJob) { p.Cron = "0 24 * * *" }, "cron", "above maximum (23)"},
		{"cron step", func(p *leveetype.PeriodicJob) { p.Cron = "*/0 * * * *" }, "cron", "does not parse"},
		{"cron word", func(p *leveetype.PeriodicJob) { p.Cron = "daily" }, "cron", `"daily" does not parse`},
		{"cron descriptor", func(p *leveetype.PeriodicJob) { p.Cron = "@daily" }, "cron", `"@daily" is a descriptor, which is not supported`},
		{"cron @every", func(p *leveetype.PeriodicJob) { p.Cron = "@every 10m" }, "cron", "or every: for a fixed interval"},
		{"cron TZ", func(p *leveetype.PeriodicJob) { p.Cron = "CRON_TZ=Asia/Tokyo 0 2 * * *" }, "cron", "give it with the timezone key"},
		{"cron TZ alone", func(p *leveetype.PeriodicJob) { p.Cron = "TZ=UTC" }, "cron", "give it with the timezone key"}, // robfig panics on it
		{"cron never", func(p *leveetype.PeriodicJob) { p.Cron = "0 0 31 4 *" }, "cron", `"0 0 31 4 *" never fires: there is no such date`},
		{"cron newline", func(p *leveetype.PeriodicJob) { p.Cron = "x\ny" }, "cron", `"x\ny" does not parse`},
		{"timezone", func(p *leveetype.PeriodicJob) { p.Timezone = "Mars/Olympus" }, "timezone", `"Mars/Olympus" is not a time zone: use an IANA name`},
		{"timezone path", func(p *leveetype.PeriodicJob) { p.Timezone = "../etc/passwd" }, "timezone", "is not a time zone"},
		{"timezone local", func(p *leveetype.PeriodicJob) { p.Timezone = "Local" }, "timezone", "differs from worker to worker"},
		{"catch_up", func(p *leveetype.PeriodicJob) { p.CatchUp = "some" }, "catch_up", `must be skip, latest or all, got "some"`},
		{"payload", func(p *leveetype.PeriodicJob) { p.Payload = json.RawMessage(`{"a":`) }, "payload", "is not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := good
			tc.mod(&p)
			err := p.Validate()
			var pe *leveetype.PeriodicError
			require.True(t, errors.As(err, &pe), "%v", err)
			require.Equal(t, tc.key, pe.Key, pe.Msg)
			require.Contains(t, pe.Msg, tc.want)
			require.NotContains(t, err.Error(), "\n", "errors are one line")
			require.True(t, strings.HasPrefix(err.Error(), "periodic job"), err.Error())
			if tc.key == "cron" || tc.key == "timezone" || (tc.key == "every" && p.Cron == "") {
				_, serr := p.Schedule()
				require.Error(t, serr, "Schedule refuses what Validate refuses of the schedule")
			}
		})
	}
}

func TestPeriodicDefaultsSpecAndJSON(t *testing.T) {
	t.Parallel()
	p := leveetype.PeriodicJob{Name: "n", Kind: "k", Cron: "0 2 * * *"}.WithDefaults()
	require.Equal(t, "UTC", p.Timezone)
	require.Equal(t, leveetype.CatchUpLatest, p.CatchUp)
	require.Equal(t, json.RawMessage("null"), p.Payload)
	require.Equal(t, p, p.WithDefaults(), "set fields are kept")

	require.Equal(t, `cron "0 2 * * *" UTC`, p.Spec())
	require.Equal(t, `cron "0 2 * * *" Europe/Berlin`, leveetype.PeriodicJob{Cron: "0 2 * * *", Timezone: "Europe/Berlin"}.Spec())
	for d, want := range map[time.Duration]string{10 * time.Minute: "every 10m", time.Hour: "every 1h", 90 * time.Minute: "every 1h30m",
		1500 * time.Millisecond: "every 1.5s", 61 * time.Second: "every 1m1s", 25 * time.Hour: "every 25h"} {
		require.Equal(t, want, leveetype.PeriodicJob{Every: d}.Spec())
	}

	in := leveetype.PeriodicJob{Name: "n", Kind: "k", Every: 90 * time.Minute, Payload: json.RawMessage(`{"a":1}`), CatchUp: leveetype.CatchUpAll}
	b, err := json.Marshal(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"n","kind":"k","every":"1h30m","payload":{"a":1},"catch_up":"all"}`, string(b))
	var out leveetype.PeriodicJob
	require.NoError(t, json.Unmarshal(b, &out))
	require.Equal(t, in, out)
	require.Error(t, json.Unmarshal([]byte(`{"every":"soon"}`), &out))
}

func TestTickKey(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	tick := time.Date(2026, 12, 24, 2, 0, 0, 0, berlin)
	require.Equal(t, "periodic:nightly-settlement:2026-12-24T01:00:00Z", leveetype.TickKey("nightly-settlement", tick))
	require.Equal(t, "periodic:n:1970-01-01T00:00:01.5Z", leveetype.TickKey("n", time.Unix(1, 5e8)), "a fraction of a second is kept")

	// Any valid name makes a valid idempotency key, and distinct ticks distinct keys.
	longest := strings.Repeat("z", leveetype.MaxPeriodicNameLen)
	require.NoError(t, leveetype.ValidatePeriodicName(longest))
	for _, name := range []string{"a", "0", "a-b_c", longest} {
		key := leveetype.TickKey(name, time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC))
		require.NoError(t, queue.ValidateKey(key))
		require.LessOrEqual(t, len(key), 140)
	}
	s := every(t, 1500*time.Millisecond)
	seen := map[string]bool{}
	for _, tick := range leveetype.NextRuns(s, utc("2026-01-01T00:00:00Z"), 100) {
		key := leveetype.TickKey("n", tick)
		require.False(t, seen[key], key)
		seen[key] = true
	}
}

// A schedule is a fixed set of ticks: whichever instant a worker asks from, it is given the
// same next tick, in every zone, across every change of the clocks (Lord Howe moves them by
// half an hour; Santiago at midnight).
func TestCronTicksAreTheSameFromAnyInstant(t *testing.T) {
	t.Parallel()
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Havana", "America/Santiago", "Asia/Kolkata", "Pacific/Chatham"}
	crons := []string{"0 2 * * *", "30 2 * * *", "*/7 * * * *", "30 * * * *", "0 0 * * *", "15 1-3 * * 0", "0 0 1,15 * *", "59 23 * * *", "*/20 2 * * *"}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tz := range zones {
		for _, c := range crons {
			s := cronIn(t, c, tz)
			for range 200 {
				from := utc("2026-01-01T00:00:00Z").Add(time.Duration(rng.Int64N(int64(2 * 365 * 24 * time.Hour))))
				next := s.Next(from)
				require.True(t, next.After(from), "%s %s from %s: %s", c, tz, from, next)
				require.Equal(t, next, s.Next(next.Add(-time.Nanosecond)), "%s %s: %s is a tick", c, tz, next)
				between := from.Add(time.Duration(rng.Int64N(int64(next.Sub(from)))))
				require.Equal(t, next, s.Next(between), "%s %s: from %s and from %s", c, tz, from, between)
			}
		}
	}
}

// The ticks of a cron are what a clock on the wall says, checked minute by minute around
// every change of the clocks in 2026: a local time the expression matches is a tick, unless
// it happened before (then only a cron of every hour runs again). Zones that skip midnight
// (Havana, Santiago), move by half an hour (Lord Howe) or by two hours (Troll) included.
func TestCronMatchesTheWallClock(t *testing.T) {
	t.Parallel()
	crons := map[string]bool{ // expression: fires in every hour
		"30 2 * * *": false, "0 0 * * *": false, "0 1 * * *": false, "45 23 * * *": false, "*/20 2 * * *": false,
		"*/15 * * * *": true, "30 * * * *": true,
	}
	for _, tz := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Havana", "America/Santiago", "Antarctica/Troll"} {
		t.Run(tz, func(t *testing.T) {
			t.Parallel()
			loc, err := time.LoadLocation(tz)
			require.NoError(t, err)
			wall := func(i time.Time) time.Time {
				_, off := i.In(loc).Zone()
				return time.Unix(i.Unix()+int64(off), 0).UTC()
			}
			var changes []time.Time
			for x := time.Date(2026, 1, 1, 0, 0, 0, 0, loc); ; {
				_, end := x.ZoneBounds()
				if end.IsZero() || end.Year() > 2026 {
					break
				}
				changes, x = append(changes, end), end
			}
			require.NotEmpty(t, changes)
			for expr, everyHour := range crons {
				s, inUTC := cronIn(t, expr, tz), cronIn(t, expr, "UTC")
				for _, change := range changes {
					from, to := change.Add(-30*time.Hour).Truncate(time.Minute), change.Add(30*time.Hour)
					seen := map[time.Time]bool{}
					for i := from.Add(-5 * time.Hour); i.Before(from); i = i.Add(time.Minute) {
						seen[wall(i)] = true
					}
					var want []time.Time
					for i := from; i.Before(to); i = i.Add(time.Minute) {
						w := wall(i)
						if inUTC.Next(w.Add(-time.Nanosecond)).Equal(w) && (everyHour || !seen[w]) {
							want = append(want, i.UTC())
						}
						seen[w] = true
					}
					var got []time.Time
					for n := s.Next(from.Add(-time.Nanosecond)); n.Before(to); n = s.Next(n) {
						got = append(got, n)
					}
					require.Equal(t, want, got, "%q around %s", expr, change)
				}
			}
		})
	}
}
