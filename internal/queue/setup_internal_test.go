package queue

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func TestSubjectCovers(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"levee.jobs.>", "levee.jobs.>", true},
		{">", "levee.jobs.>", true},
		{"levee.>", "levee.jobs.>", true},
		{"*.jobs.>", "levee.jobs.>", true},
		{"levee.jobs.*.*", "levee.jobs.>", false},
		{"levee.jobs.>", "levee.jobs.charge.*", true},
		{"levee.jobs.>", "levee.jobs", false},
		{"levee.jobs.*", "levee.jobs.>", false},
		{"levee.jobs.charge.*", "levee.jobs.*.*", false},
		{"levee.jobs.*.*", "levee.jobs.charge.*", true},
		{"levee.dlq.>", "levee.jobs.>", false},
		{"other.>", "levee.jobs.x", false},
	} {
		require.Equal(t, c.want, subjectCovers(c.pattern, c.s), "%s covers %s", c.pattern, c.s)
	}
}

// The rules of design rule 34, stream by stream, without a server.
func TestCheckStreamRules(t *testing.T) {
	q := &Queue{names: Names{ns: "levee"}, stream: StreamConfig{Replicas: 1}}
	ours := jetstream.StreamConfig{Name: "LEVEE_JOBS", Subjects: []string{"levee.jobs.>"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew, Duplicates: 2 * time.Minute, Replicas: 1, MaxMsgs: -1, MaxBytes: -1, MaxMsgsPerSubject: -1}
	require.Empty(t, q.checkStream(ours, roleJobs))

	settings := func(ps []SetupProblem) map[string]bool {
		out := map[string]bool{}
		for _, p := range ps {
			out[p.Setting] = p.Fatal
		}
		return out
	}
	c := ours
	c.Discard = jetstream.DiscardOld
	require.Equal(t, map[string]bool{"discard": false}, settings(q.checkStream(c, roleJobs)), "without limits, a warning")
	c.MaxBytes = 1 << 30
	require.Equal(t, map[string]bool{"discard": true}, settings(q.checkStream(c, roleJobs)), "with a limit, it evicts jobs")

	c = ours
	c.MaxAge, c.DenyDelete, c.Subjects = time.Hour, true, []string{"levee.jobs.>", "other.>"}
	require.Equal(t, map[string]bool{"max age": true, "deny delete": true, "subjects": false}, settings(q.checkStream(c, roleJobs)))

	c = ours
	c.Subjects = []string{"levee.jobs.charge.*"}
	p := q.checkStream(c, roleJobs)
	require.Equal(t, map[string]bool{"subjects": true}, settings(p))
	require.Contains(t, p[0].Message, "nats stream edit LEVEE_JOBS --subjects 'levee.jobs.>'")

	dlq := ours
	dlq.Name, dlq.Subjects, dlq.Retention = "LEVEE_DLQ", []string{"levee.dlq.>"}, jetstream.LimitsPolicy
	require.Empty(t, q.checkStream(dlq, roleDLQ))
	dlq.MaxAge = 30 * 24 * time.Hour
	require.Equal(t, map[string]bool{"max age": false}, settings(q.checkStream(dlq, roleDLQ)), "an operator may age dead jobs out")
	dlq.MaxAge, dlq.Retention = 0, jetstream.InterestPolicy
	require.Equal(t, map[string]bool{"retention": true}, settings(q.checkStream(dlq, roleDLQ)))
}
