package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/levee-dev/levee/internal/config"
	"github.com/levee-dev/levee/leveetype"
)

// checkRuns is how many next runs --check-config shows per periodic job.
const checkRuns = 3

// checkPayloadMax bounds the payload --check-config shows, in bytes.
const checkPayloadMax = 200

// printPeriodic is --check-config's look at the file's periodic jobs: each one's schedule
// and its next runs after now, in UTC and, for a cron in another zone, in local time.
func printPeriodic(w io.Writer, f *config.File, now time.Time) {
	for _, p := range f.Periodic {
		fmt.Fprintf(w, "\nperiodic %s: kind %s, %s, catch_up %s\n", p.Name, p.Kind, p.Spec(), p.CatchUp)
		s, err := p.Schedule()
		if err != nil { // the file was validated; not expected
			fmt.Fprintf(w, "  error: %v\n", err)
			continue
		}
		runs := leveetype.NextRuns(s, now, checkRuns)
		if len(runs) == 0 {
			fmt.Fprintln(w, "  next runs: none within a century")
			continue
		}
		utc := make([]string, len(runs))
		for i, r := range runs {
			utc[i] = r.Format(time.RFC3339Nano)
		}
		fmt.Fprintf(w, "  next runs: %s\n", strings.Join(utc, ", "))
		if p.Cron != "" && p.Timezone != "UTC" {
			loc := zone(p.Timezone)
			local := make([]string, len(runs))
			for i, r := range runs {
				local[i] = r.In(loc).Format("2006-01-02 15:04 MST")
			}
			fmt.Fprintf(w, "  in %s: %s\n", p.Timezone, strings.Join(local, ", "))
		}
		payload := string(p.Payload)
		if len(payload) > checkPayloadMax {
			cut := checkPayloadMax
			for cut > 0 && !utf8.RuneStart(payload[cut]) {
				cut--
			}
			payload = payload[:cut] + "…"
		}
		fmt.Fprintf(w, "  payload: %s\n", payload)
		if !slices.ContainsFunc(f.Kinds, func(k config.Kind) bool { return k.Name == p.Kind }) {
			fmt.Fprintf(w, "  kind %s is not in this file: a worker with another config must serve it\n", p.Kind)
		}
	}
}

// zone loads a time zone that Validate has accepted, or UTC.
func zone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.UTC
	}
	return loc
}
