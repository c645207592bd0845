package dashboard

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/levee-dev/levee/admin"
)

// The activity chart's geometry, in SVG user units.
const (
	chartW, chartH = 600, 120
	chartTop       = 14 // room for the scale label
	chartBottom    = 16 // room for the time labels
)

// Chart colours, as SVG attributes (the CSP allows no inline style).
const (
	colourOK     = "#2f9e44"
	colourFailed = "#e03131"
	colourAxis   = "#868e96"
)

// activityChart draws the last hour's succeeded and failed attempts, one stacked bar per
// bucket, as an inline SVG. Each bar has a title with its minute and counts.
func activityChart(buckets []admin.ActivityBucket) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="succeeded and failed jobs per minute over the last hour">`, chartW, chartH)
	peak := 0
	for _, k := range buckets {
		peak = max(peak, k.Succeeded+k.Failed)
	}
	plotH := chartH - chartTop - chartBottom
	base := chartH - chartBottom
	fmt.Fprintf(&b, `<line x1="0" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1"/>`, base, chartW, base, colourAxis)
	if len(buckets) > 0 {
		slot := float64(chartW) / float64(len(buckets))
		bar := max(slot-1, 1)
		for i, k := range buckets {
			x := float64(i) * slot
			okH, failH := 0.0, 0.0
			if peak > 0 {
				okH = float64(k.Succeeded) / float64(peak) * float64(plotH)
				failH = float64(k.Failed) / float64(peak) * float64(plotH)
			}
			fmt.Fprintf(&b, `<g><title>%s: %d succeeded, %d failed</title>`, k.Start.UTC().Format("15:04"), k.Succeeded, k.Failed)
			if okH > 0 {
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, x, float64(base)-okH, bar, okH, colourOK)
			}
			if failH > 0 {
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, x, float64(base)-okH-failH, bar, failH, colourFailed)
			}
			b.WriteString(`</g>`)
		}
		first, last := buckets[0].Start.UTC(), buckets[len(buckets)-1].Start.UTC()
		fmt.Fprintf(&b, `<text x="0" y="%d" font-size="10" fill="%s">%s</text>`, chartH-3, colourAxis, first.Format("15:04"))
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="%s" text-anchor="end">%s UTC</text>`, chartW, chartH-3, colourAxis, last.Format("15:04"))
	}
	fmt.Fprintf(&b, `<text x="0" y="10" font-size="10" fill="%s">max %d/min</text>`, colourAxis, peak)
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built here from numbers and times only
}
