package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/config"
)

const periodicConfig = `kinds:
  ping: {handler: noop}
periodic:
  - name: nightly-settlement
    kind: settle
    cron: "0 2 * * *"
    timezone: Europe/Berlin
    payload: {"url": "https://api.example.com/settle", "body": {}}
  - name: heartbeat
    kind: ping
    every: 10m
    catch_up: skip
`

func TestPrintPeriodic(t *testing.T) {
	t.Parallel()
	f, err := config.Parse([]byte(periodicConfig))
	require.NoError(t, err)
	var out bytes.Buffer
	printPeriodic(&out, f, time.Date(2026, 3, 27, 10, 7, 13, 0, time.UTC))
	require.Equal(t, `
periodic nightly-settlement: kind settle, cron "0 2 * * *" Europe/Berlin, catch_up latest
  next runs: 2026-03-28T01:00:00Z, 2026-03-30T00:00:00Z, 2026-03-31T00:00:00Z
  in Europe/Berlin: 2026-03-28 02:00 CET, 2026-03-30 02:00 CEST, 2026-03-31 02:00 CEST
  payload: {"url":"https://api.example.com/settle","body":{}}
  kind settle is not in this file: a worker with another config must serve it

periodic heartbeat: kind ping, every 10m, catch_up skip
  next runs: 2026-03-27T10:10:00Z, 2026-03-27T10:20:00Z, 2026-03-27T10:30:00Z
  payload: null
`, out.String(), "02:00 does not exist in Berlin on 2026-03-29: no run that day")
}

// --check-config prints the next three runs of each periodic job after the kinds' policies.
func TestCheckConfigPrintsPeriodicRuns(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, periodicConfig)
	before := time.Now()
	code, stdout, stderr := runInProcess(t, "--config", cfg, "--check-config", "--nats-url", "nats://127.0.0.1:1")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "OK, 1 kind")
	require.Less(t, strings.Index(stdout, "\nping\n"), strings.Index(stdout, "\nperiodic nightly-settlement:"), "after the policies")
	require.Contains(t, stdout, "\nperiodic nightly-settlement: kind settle, cron \"0 2 * * *\" Europe/Berlin, catch_up latest\n")
	require.Contains(t, stdout, "\nperiodic heartbeat: kind ping, every 10m, catch_up skip\n")

	m := regexp.MustCompile(`(?m)^  next runs: (\S+), (\S+), (\S+)$`).FindAllStringSubmatch(stdout, -1)
	require.Len(t, m, 2, stdout)
	for _, runs := range m {
		prev := before
		for _, s := range runs[1:] {
			r, err := time.Parse(time.RFC3339, s)
			require.NoError(t, err)
			require.True(t, r.After(prev), "%s after %s", r, prev)
			prev = r
		}
	}
	require.Regexp(t, `(?m)^  in Europe/Berlin: \d{4}-\d\d-\d\d 02:00 CES?T, `, stdout)
}
