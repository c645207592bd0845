// Command scale draws how Levee's and River's cost grows with work (make bench-scale): from
// the JSON files tools/benchcompare --json-out wrote, one per point, it draws jobs per second
// and machine CPU per job against the backlog (one worker) and against the workers (on a
// backlog of --workers-jobs), as one PNG of four panels, and prints the figures as a Markdown
// table. It is a module of its own so that the plotting library never enters Levee's go.mod.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"io"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// measured is one system's figures in one round, as benchcompare --json-out writes them.
type measured struct {
	Jobs           int     `json:"jobs"`
	Workers        int     `json:"workers"`
	WorkJobsPerSec float64 `json:"work_jobs_per_sec"`
	CPUBenchUS     float64 `json:"cpu_bench_us_per_job"`
	CPUPostgresUS  float64 `json:"cpu_postgres_us_per_job"`
	CPUNATSUS      float64 `json:"cpu_nats_us_per_job"`
	CPUTotalUS     float64 `json:"cpu_total_us_per_job"`
}

// point is one configuration measured for both systems.
type point struct {
	jobs, workers int
	levee, river  measured
}

func main() {
	var (
		workersJobs = flag.Int("workers-jobs", 100000, "the backlog of the workers series")
		out         = flag.String("png", "docs/img/bench-scale.png", "the chart to write")
	)
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "scale: give the JSON files of tools/benchcompare --json-out")
		os.Exit(2)
	}
	points, err := load(flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
	var byBacklog, byWorkers []point
	for _, p := range points {
		if p.workers == 1 {
			byBacklog = append(byBacklog, p)
		}
		if p.jobs == *workersJobs {
			byWorkers = append(byWorkers, p)
		}
	}
	slices.SortFunc(byBacklog, func(a, b point) int { return a.jobs - b.jobs })
	slices.SortFunc(byWorkers, func(a, b point) int { return a.workers - b.workers })
	if err := draw4(*out, byBacklog, byWorkers, *workersJobs); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
	table(os.Stdout, byBacklog, byWorkers)
}

// load reads the files: each holds the rounds of one point; the first round is used.
func load(files []string) ([]point, error) {
	var points []point
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var rounds []map[string]measured
		if err := json.Unmarshal(raw, &rounds); err != nil || len(rounds) == 0 {
			return nil, fmt.Errorf("%s: not benchcompare --json-out rounds (%v)", f, err)
		}
		l, r := rounds[0]["levee"], rounds[0]["river"]
		points = append(points, point{jobs: l.Jobs, workers: max(l.Workers, 1), levee: l, river: r})
	}
	return points, nil
}

var (
	leveeColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	riverColor = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// panel is one plot: y of each system against x, over points.
func panel(title, xLabel, yLabel string, logX bool, points []point, x func(point) float64, y func(measured) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text, p.Y.Label.Text = xLabel, yLabel
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	for _, s := range []struct {
		name string
		c    color.Color
		of   func(point) measured
	}{{"Levee", leveeColor, func(p point) measured { return p.levee }}, {"River", riverColor, func(p point) measured { return p.river }}} {
		xys := make(plotter.XYs, len(points))
		for i, pt := range points {
			xys[i].X, xys[i].Y = x(pt), y(s.of(pt))
		}
		line, dots, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		line.Color, line.Width = s.c, vg.Points(1.5)
		dots.Color, dots.Shape = s.c, draw.CircleGlyph{}
		p.Add(line, dots)
		p.Legend.Add(s.name, line, dots)
	}
	p.Legend.Top = true
	p.Y.Max *= 1.25 // room for the legend above the lines
	return p, nil
}

func draw4(path string, byBacklog, byWorkers []point, workersJobs int) error {
	jobs := func(p point) float64 { return float64(p.jobs) }
	workers := func(p point) float64 { return float64(p.workers) }
	rate := func(m measured) float64 { return m.WorkJobsPerSec }
	cpu := func(m measured) float64 { return m.CPUTotalUS }
	specs := []struct {
		title, x, y string
		log         bool
		pts         []point
		xf          func(point) float64
		yf          func(measured) float64
	}{
		{"Work rate against the backlog (1 worker)", "jobs waiting", "jobs/s", true, byBacklog, jobs, rate},
		{"Machine CPU per job against the backlog", "jobs waiting", "µs per job (process + Postgres + NATS)", true, byBacklog, jobs, cpu},
		{fmt.Sprintf("Work rate against the workers (%d jobs)", workersJobs), "workers (River: clients)", "jobs/s", false, byWorkers, workers, rate},
		{"Machine CPU per job against the workers", "workers (River: clients)", "µs per job (process + Postgres + NATS)", false, byWorkers, workers, cpu},
	}
	plots := make([][]*plot.Plot, 2)
	for i, s := range specs {
		p, err := panel(s.title, s.x, s.y, s.log, s.pts, s.xf, s.yf)
		if err != nil {
			return err
		}
		plots[i/2] = append(plots[i/2], p)
	}
	img := vgimg.New(vg.Points(1100), vg.Points(760))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 2, PadX: vg.Points(18), PadY: vg.Points(18),
		PadTop: vg.Points(10), PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	canvases := plot.Align(plots, tiles, dc)
	for r := range plots {
		for c := range plots[r] {
			plots[r][c].Draw(canvases[r][c])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func table(w io.Writer, byBacklog, byWorkers []point) {
	fmt.Fprintln(w, "| backlog | workers | Levee jobs/s | River jobs/s | ratio | Levee µs/job (process, Postgres, NATS) | River µs/job (process, Postgres) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	seen := map[[2]int]bool{}
	for _, p := range append(slices.Clone(byBacklog), byWorkers...) {
		if seen[[2]int{p.jobs, p.workers}] {
			continue
		}
		seen[[2]int{p.jobs, p.workers}] = true
		ratio := 0.0
		if p.river.WorkJobsPerSec > 0 {
			ratio = p.levee.WorkJobsPerSec / p.river.WorkJobsPerSec
		}
		fmt.Fprintf(w, "| %d | %d | %.0f | %.0f | %.2f | %.0f (%.0f, %.0f, %.0f) | %.0f (%.0f, %.0f) |\n",
			p.jobs, p.workers, p.levee.WorkJobsPerSec, p.river.WorkJobsPerSec, ratio,
			p.levee.CPUTotalUS, p.levee.CPUBenchUS, p.levee.CPUPostgresUS, p.levee.CPUNATSUS,
			p.river.CPUTotalUS, p.river.CPUBenchUS, p.river.CPUPostgresUS)
	}
}
