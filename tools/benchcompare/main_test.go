package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestRunAlternatesAndReportsRatios runs two stand-in commands printing fixed figures and
// checks the ratios, the medians, and that the order alternates between rounds.
func TestRunAlternatesAndReportsRatios(t *testing.T) {
	log := t.TempDir() + "/order"
	levee := []string{"sh", "-c", `echo levee >>` + log + `; echo '{"e2e_jobs_per_sec": 3000, "work_jobs_per_sec": 4000, "latency_ms": {"p99": 9}}'`}
	river := []string{"sh", "-c", `echo river >>` + log + `; echo '{"e2e_jobs_per_sec": 2000, "work_jobs_per_sec": 8000, "latency_ms": {"p99": 7}}'`}
	var out strings.Builder
	jsonOut := t.TempDir() + "/rounds.json"
	if err := run(context.Background(), &out, 3, levee, river, 0, jsonOut); err != nil {
		t.Fatal(err)
	}
	var rounds []map[string]measured
	if raw, err := os.ReadFile(jsonOut); err != nil || json.Unmarshal(raw, &rounds) != nil {
		t.Fatalf("--json-out: %v\n%s", err, raw)
	}
	if len(rounds) != 3 || rounds[1]["river"].WorkJobsPerSec != 8000 || rounds[2]["levee"].P99MS != 9 {
		t.Errorf("--json-out rounds = %+v", rounds)
	}
	if !strings.Contains(out.String(), "end to end: 1.50 (median of 3 rounds); working a backlog: 0.50") {
		t.Errorf("report lacks the ratios:\n%s", out.String())
	}
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Fields(string(raw)), []string{"levee", "river", "river", "levee", "levee", "river"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("order = %v, want %v", got, want)
	}
}

func TestRunFailsOnBadOutput(t *testing.T) {
	bad := []string{"sh", "-c", "echo not json"}
	ok := []string{"sh", "-c", `echo '{}'`}
	err := run(context.Background(), &strings.Builder{}, 1, bad, ok, 0, "")
	if err == nil || !strings.Contains(err.Error(), "not one JSON object") {
		t.Fatalf("err = %v, want one naming the bad output", err)
	}
}

// TestServerCPU finds this test binary by its name and sees the CPU it burns.
func TestServerCPU(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Skip("no /proc here:", err)
	}
	name := strings.TrimSpace(string(comm))
	before := serverCPU(name)
	// Spin until the accounting shows 0.05 s more; a busy machine only makes it take longer.
	deadline := time.Now().Add(20 * time.Second)
	for serverCPU(name)-before < 0.05 {
		if time.Now().After(deadline) {
			t.Fatalf("CPU of %q did not grow by 0.05 s in 20 s of spinning", name)
		}
		for x := range 1_000_000 {
			_ = x * x
		}
	}
	if got := serverCPU("no-such-process-name"); got != 0 {
		t.Errorf("CPU of a missing process = %v, want 0", got)
	}
}

// Without an e2e phase (--no-e2e), a run works jobs jobs, not twice that.
func TestCPUPerJobWithoutE2E(t *testing.T) {
	f := figures{Jobs: 100, cpuBench: 1}
	if b, _, _, _ := f.cpuPerJob(); b != 10_000 {
		t.Errorf("bench CPU per job = %v µs, want 10000 (1 s over 100 jobs)", b)
	}
	f.E2EJobsPerSec = 1
	if b, _, _, _ := f.cpuPerJob(); b != 5_000 {
		t.Errorf("with e2e: %v µs, want 5000 (1 s over 200 jobs)", b)
	}
}
