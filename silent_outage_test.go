package levee_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// blackhole is a TCP proxy whose outage is silent, as a network partition or a failover to
// another primary is: while it is down, bytes on the connections it carries go nowhere (no
// RST, no FIN) and new connections wait; once up again, new connections work, and those
// that were carried through the outage stay dead (their peer is gone), so a client learns of
// each only by timing out on it.
type blackhole struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	up     chan struct{}
	conns  map[*hconn]struct{}
}

type hconn struct {
	dead     atomic.Bool
	upstream net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &blackhole{ln: ln, target: target, up: make(chan struct{}), conns: map[*hconn]struct{}{}}
	close(h.up)
	t.Cleanup(func() { _ = ln.Close() })
	go h.serve()
	return h
}

func (h *blackhole) Down() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down, h.up = true, make(chan struct{})
	for c := range h.conns {
		c.dead.Store(true)
		_ = c.upstream.Close() // the server forgets them; their clients are not told
	}
	clear(h.conns)
}

func (h *blackhole) Up() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = false
	close(h.up)
}

func (h *blackhole) serve() {
	for {
		in, err := h.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			h.mu.Lock()
			up := h.up
			h.mu.Unlock()
			<-up // a new connection waits out the outage
			out, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", h.target)
			if err != nil {
				_ = in.Close()
				return
			}
			c := &hconn{upstream: out}
			h.mu.Lock()
			h.conns[c] = struct{}{}
			h.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 && !c.dead.Load() {
						if _, werr := dst.Write(buf[:n]); werr != nil && !c.dead.Load() {
							return
						}
					}
					if err != nil {
						if c.dead.Load() {
							if dst == in || src == in {
								_, _ = io.Copy(io.Discard, in) // the client's side stays open, silent
							}
							return
						}
						_ = dst.Close()
						return
					}
				}
			}
			go pipe(out, in)
			go pipe(in, out)
		}()
	}
}

// A silent Postgres outage (a partition, a failover: no reset ever arrives) shorter than the
// lease does not cancel an attempt either (design rule 29). Found by review: every heartbeat
// try waited a whole h on a pooled connection carried through the outage, as dead as the one
// before, so the deadline passed although Postgres answered again long before (it failed 2 of
// 3 runs). Now a try is bounded well below h, and a try that times out drops the pool's idle
// connections, so the next one dials afresh.
func TestSilentBlipShorterThanTheLeaseKeepsTheAttempt(t *testing.T) {
	t.Parallel()
	srv := leveetest.Servers(t)[0]
	b := setup(t, srv)
	ctx := context.Background()
	dbURL, err := url.Parse(leveetest.DatabaseURL(t))
	require.NoError(t, err)
	hole := newBlackhole(t, dbURL.Host)
	dbURL.Host = hole.ln.Addr().String()
	pcfg, err := pgxpool.ParseConfig(dbURL.String())
	require.NoError(t, err)
	pcfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(func() { go pool.Close() }) // closing a dead connection waits for its write to time out
	// A worker that has run a few jobs at once holds a few idle connections.
	var warm sync.WaitGroup
	for range 6 {
		warm.Go(func() { _, _ = pool.Exec(ctx, "SELECT pg_sleep(0.2)") })
	}
	warm.Wait()

	const lease = 3 * time.Second
	var calls atomic.Int32
	started := make(chan struct{}, 4)
	var cause atomic.Value
	cfg := b.workerConfig(t)
	cfg.Pool = pool
	w, err := levee.NewWorker(cfg)
	require.NoError(t, err)
	require.NoError(t, w.Handle("charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		n := calls.Add(1)
		started <- struct{}{}
		if n > 1 {
			return "second call", nil
		}
		select {
		case <-time.After(8 * time.Second): // a slow downstream call
			return "done", nil
		case <-ctx.Done():
			cause.Store(context.Cause(ctx))
			return nil, ctx.Err()
		}
	}), levee.Policy{AckWait: lease, Timeout: time.Minute, MaxAttempts: 5}))
	run(t, w)

	res, err := b.client.Publish(ctx, "charge", map[string]int{"cents": 42})
	require.NoError(t, err)
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("never called")
	}
	// Right before a heartbeat is due: watch the lease move in Postgres, then wait most of h.
	admin := leveetest.Pool(t)
	q := "SELECT lease_until FROM " + pgx.Identifier{b.ns, "keys"}.Sanitize()
	var first, now time.Time
	require.NoError(t, admin.QueryRow(ctx, q).Scan(&first))
	for now = first; now.Equal(first); time.Sleep(5 * time.Millisecond) {
		require.NoError(t, admin.QueryRow(ctx, q).Scan(&now))
	}
	time.Sleep(lease/3 - 100*time.Millisecond)
	hole.Down()
	time.Sleep(lease / 2) // 1.5 s of a 3 s lease
	hole.Up()

	st := b.waitFinal(t, res.ID, 40*time.Second)
	c, _ := cause.Load().(error)
	t.Logf("final %s after %d calls; first call's context ended with %v", st.State, calls.Load(), c)
	require.False(t, errors.Is(c, levee.ErrLeaseLost), "a silent 1.5 s outage (lease 3 s) cancelled the attempt")
	require.EqualValues(t, 1, calls.Load())
}
