package fleet_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// Short fleet timings keep these tests quick; the waits below are bounded by them.
const (
	fleetTTL     = 3 * time.Second
	fleetRefresh = 250 * time.Millisecond
	// fleetSeen bounds how long a graceful change takes to show: a refresh, plus slack.
	fleetSeen = 12 * fleetRefresh
	// fleetExpired bounds how long a dead worker takes to drop out: its keys' TTL, a refresh,
	// and the server's expiry timer, plus slack.
	fleetExpired = fleetTTL + 4*fleetRefresh + time.Second
)

// fleetQueue returns a Queue in a fresh namespace on url; its fleet bucket is deleted at
// cleanup.
func fleetQueue(t *testing.T, url string) *queue.Queue {
	t.Helper()
	ns := leveetest.Namespace(t)
	nc := leveetest.Conn(t, url)
	q, err := queue.New(queue.Config{Conn: nc, Namespace: ns})
	require.NoError(t, err)
	t.Cleanup(func() {
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteKeyValue(ctx, strings.ToUpper(ns)+"_WORKERS")
	})
	return q
}

func fleetConfig(worker string, kinds ...string) fleet.Config {
	return fleet.Config{WorkerID: worker, Kinds: kinds, TTL: fleetTTL, Refresh: fleetRefresh}
}

type fleetChange struct {
	kind    string
	members int
}

// member is a joined Fleet with its changes on a channel.
type member struct {
	*fleet.Member
	changes chan fleetChange
}

func join(t *testing.T, q *queue.Queue, cfg fleet.Config) member {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	f, err := fleet.New(q).Join(ctx, cfg)
	require.NoError(t, err)
	m := member{Member: f, changes: make(chan fleetChange, 64)}
	f.OnChange(func(kind string, members int) {
		select {
		case m.changes <- fleetChange{kind, members}:
		default:
		}
	})
	return m
}

// run starts m.Run and returns a stop function that cancels it and waits for it; cleanup
// stops it too.
func run(t *testing.T, m member) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var err error
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Error("Fleet.Run did not return after its context ended")
			return
		}
		require.NoError(t, err)
	}
	t.Cleanup(stop)
	return stop
}

// waitChange waits for m to report kind's count as want, skipping earlier reports.
func waitChange(t *testing.T, m member, kind string, want int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case c := <-m.changes:
			if c.kind == kind && c.members == want {
				return
			}
		case <-deadline:
			t.Fatalf("no change of %q to %d members within %s (now %d)", kind, want, within, m.Members(kind))
		}
	}
}

func requireMembers(t *testing.T, kind string, want int, within time.Duration, ms ...member) {
	t.Helper()
	for _, m := range ms {
		require.Eventually(t, func() bool { return m.Members(kind) == want }, within, 10*time.Millisecond,
			"%s members: want %d, have %d", kind, want, m.Members(kind))
	}
}

func fleetMembers(t *testing.T, q *queue.Queue) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got, err := fleet.New(q).Members(ctx)
	require.NoError(t, err)
	return got
}

// requireFleet waits until a listing of the registry shows want (one listing can miss a key
// that is being re-put at that moment).
func requireFleet(t *testing.T, q *queue.Queue, want map[string][]string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, want, fleetMembers(t, q))
	}, fleetSeen, 20*time.Millisecond)
}

func TestFleet(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			q := fleetQueue(t, srv.URL)
			require.Empty(t, fleetMembers(t, q), "no bucket yet: no members")

			w1 := join(t, q, fleetConfig("w1", "a", "b"))
			require.Equal(t, 1, w1.Members("a"))
			w2 := join(t, q, fleetConfig("w2 host:1", "a")) // sanitised to w2_host_1
			require.Equal(t, 2, w2.Members("a"), "a newcomer counts at once")
			require.Equal(t, 1, w2.Members("b"))
			run(t, w1)
			run(t, w2)

			waitChange(t, w1, "a", 2, fleetSeen)
			requireMembers(t, "a", 2, fleetSeen, w1, w2)
			requireMembers(t, "b", 1, fleetSeen, w1, w2)
			require.Equal(t, 1, w1.Members("unserved"), "at least this worker")

			w3 := join(t, q, fleetConfig("w3", "a"))
			stop3 := run(t, w3)
			require.Equal(t, 3, w3.Members("a"))
			waitChange(t, w1, "a", 3, fleetSeen)
			waitChange(t, w2, "a", 3, fleetSeen)
			requireFleet(t, q, map[string][]string{"a": {"w1", "w2_host_1", "w3"}, "b": {"w1"}})

			// A clean stop deletes the keys: the others see it at their next refresh.
			stop3()
			waitChange(t, w1, "a", 2, fleetSeen)
			requireMembers(t, "a", 2, fleetSeen, w1, w2)
			requireFleet(t, q, map[string][]string{"a": {"w1", "w2_host_1"}, "b": {"w1"}})

			// A dead worker (joined, never refreshed) drops out when its key expires. Its own
			// TTL is ignored: the bucket's max age rules, and its refresh follows.
			dead := fleet.Config{WorkerID: "w4", Kinds: []string{"a"}, TTL: time.Hour}
			w4 := join(t, q, dead)
			require.Equal(t, fleetTTL/3, w4.Refresh())
			joined := time.Now()
			waitChange(t, w1, "a", 3, fleetSeen)
			waitChange(t, w1, "a", 2, fleetExpired)
			t.Logf("server %s: a dead worker dropped out %s after joining (TTL %s, refresh %s)",
				q.ServerVersion(), time.Since(joined).Round(time.Millisecond), fleetTTL, fleetRefresh)
			requireMembers(t, "a", 2, fleetSeen, w1, w2)
			require.NoError(t, w1.Err())
			require.NoError(t, w2.Err())
		})
	}
}

func TestFleetConfigErrors(t *testing.T) {
	t.Parallel()
	q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, leveetest.PrivateEmbedded(t)), Namespace: leveetest.Namespace(t)})
	require.NoError(t, err)
	tests := []struct {
		name string
		cfg  fleet.Config
		want string
	}{
		{"no worker id", fleet.Config{Kinds: []string{"a"}}, "WorkerID"},
		{"no kinds", fleet.Config{WorkerID: "w"}, "Kinds"},
		{"bad kind", fleet.Config{WorkerID: "w", Kinds: []string{"a.b"}}, "invalid kind"},
		{"short ttl", fleet.Config{WorkerID: "w", Kinds: []string{"a"}, TTL: 500 * time.Millisecond}, "TTL"},
		{"negative refresh", fleet.Config{WorkerID: "w", Kinds: []string{"a"}, Refresh: -time.Second}, "Refresh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := fleet.New(q).Join(t.Context(), tt.cfg)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestFleetRefreshMustBeBelowTTL(t *testing.T) {
	t.Parallel()
	q := fleetQueue(t, leveetest.PrivateEmbedded(t))
	_, err := fleet.New(q).Join(t.Context(), fleet.Config{WorkerID: "w", Kinds: []string{"a"}, TTL: 2 * time.Second, Refresh: 2 * time.Second})
	require.ErrorContains(t, err, "Refresh (2s) must be below the TTL")
}

// Entries sees every live worker even while the workers re-put their keys, as they all do at
// once after a breaker reset: a read that missed a key being re-put made `breaker reset
// --wait` count one worker of two (a CI run).
func TestEntriesWhileWorkersReannounce(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			q := fleetQueue(t, srv.URL)
			ms := []member{join(t, q, fleetConfig("w1", "a")), join(t, q, fleetConfig("w2", "a")), join(t, q, fleetConfig("w3", "a"))}
			for _, m := range ms {
				run(t, m)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			for _, m := range ms {
				go func() {
					for ctx.Err() == nil {
						m.Poke()
						time.Sleep(time.Millisecond)
					}
				}()
			}
			store := fleet.New(q)
			for i := range 150 {
				entries, err := store.Entries(t.Context())
				require.NoError(t, err)
				require.Len(t, entries["a"], 3, "read %d: %+v", i, entries["a"])
			}
		})
	}
}
