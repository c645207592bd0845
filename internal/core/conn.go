package core

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// The services and namespace Levee uses when none are given.
const (
	DefaultNATSURL     = "nats://127.0.0.1:4222"
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultNamespace   = "levee"
)

// The errors both public packages return (each re-exports them under its own name).
var (
	ErrJobNotFound      = errors.New("job not found")
	ErrStreamFull       = errors.New("work stream is full")
	ErrDatabaseRequired = errors.New("this needs the Postgres ledger: set ClientConfig.DatabaseURL (--database-url)")
)

// Options says how to reach the services; see levee.ClientConfig, which documents each field.
type Options struct {
	NATSURL     string
	NATSOptions []nats.Option
	Conn        *nats.Conn
	DatabaseURL string
	Pool        *pgxpool.Pool
	Namespace   string
	MaxPayload  int
	Logger      *slog.Logger
}

// Conn is one client's connections: the queue, the ledger (nil without a database) and the
// logger of operator actions.
type Conn struct {
	Q      *queue.Queue
	Ledger *idempotency.Ledger
	Logger *slog.Logger

	closers   []func()
	streamsMu sync.Mutex
	streamsOK bool
	setupOK   bool // the streams were checked (design rule 34)
}

// Open connects to NATS (and Postgres, if configured).
func Open(ctx context.Context, o Options) (*Conn, error) {
	c := &Conn{Logger: cmp.Or(o.Logger, slog.Default())}
	nc := o.Conn
	if nc == nil {
		var err error
		nc, err = ConnectNATS(cmp.Or(o.NATSURL, DefaultNATSURL), "levee-client", o.NATSOptions)
		if err != nil {
			return nil, err
		}
		c.closers = append(c.closers, nc.Close)
	}
	q, err := queue.New(queue.Config{Conn: nc, Namespace: cmp.Or(o.Namespace, DefaultNamespace), MaxPayload: o.MaxPayload})
	if err != nil {
		c.Close()
		return nil, err
	}
	c.Q = q
	pool := o.Pool
	if pool == nil && o.DatabaseURL != "" {
		pool, err = OpenPool(ctx, o.DatabaseURL, 4)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.closers = append(c.closers, pool.Close)
	}
	if pool != nil {
		c.Ledger, err = idempotency.New(idempotency.Config{Pool: pool, Schema: q.Names().Namespace()})
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close closes the connections Open made.
func (c *Conn) Close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

// EnsureStreams creates the namespace's streams once per Conn, and checks them.
func (c *Conn) EnsureStreams(ctx context.Context) error {
	c.streamsMu.Lock()
	defer c.streamsMu.Unlock()
	if c.streamsOK {
		return nil
	}
	if err := c.Q.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := c.checkSetupLocked(ctx); err != nil {
		return err
	}
	c.streamsOK = true
	return nil
}

// CheckSetup checks the namespace's existing streams against what Levee relies on, once per
// Conn (design rule 34): it logs the harmless differences and returns a *queue.SetupError
// (one line, wrapping queue.ErrSetup) for those that break a guarantee, such as a work stream
// with memory storage.
func (c *Conn) CheckSetup(ctx context.Context) error {
	c.streamsMu.Lock()
	defer c.streamsMu.Unlock()
	return c.checkSetupLocked(ctx)
}

func (c *Conn) checkSetupLocked(ctx context.Context) error {
	if c.setupOK {
		return nil
	}
	problems, err := c.Q.CheckSetup(ctx, nil)
	if err != nil {
		return err
	}
	for _, p := range problems {
		if !p.Fatal {
			c.Logger.Warn(p.Message, "stream", p.Stream, "setting", p.Setting)
		}
	}
	if err := queue.FatalSetup(problems); err != nil {
		return err
	}
	c.setupOK = true
	return nil
}

// TranslatePublish makes a full stream's error match ErrStreamFull.
func TranslatePublish(err error) error {
	if errors.Is(err, queue.ErrStreamFull) {
		return fmt.Errorf("%w: %w", ErrStreamFull, err)
	}
	return err
}

// Status reports what Levee knows of job id: from the ledger when the job was picked up, else
// from the work stream (queued), which needs no Postgres. It returns an error wrapping
// ErrJobNotFound for an id in neither.
func (c *Conn) Status(ctx context.Context, id string) (*leveetype.JobStatus, error) {
	if err := queue.ValidateID(id); err != nil {
		return nil, err
	}
	if c.Ledger != nil {
		st, err := c.Ledger.Status(ctx, id)
		if err == nil {
			return PublicStatus(st), nil
		}
		if !errors.Is(err, idempotency.ErrNotFound) {
			return nil, err
		}
	}
	q, err := c.Q.FindQueued(ctx, id)
	switch {
	case err == nil:
		at := q.EnqueuedAt
		return &leveetype.JobStatus{State: leveetype.StateQueued, ID: q.ID, Kind: q.Kind, Key: q.Key, EnqueuedAt: &at}, nil
	case errors.Is(err, queue.ErrNotFound), errors.Is(err, queue.ErrNoStream):
		if c.Ledger == nil {
			return nil, fmt.Errorf("%w: %s is not waiting in the stream (without a database URL, running and finished jobs cannot be seen)", ErrJobNotFound, id)
		}
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	return nil, err
}

// PublicStatus is the public status of a ledger row: a state the ledger does not know reads
// as unknown, and only a retrying job has a next attempt.
func PublicStatus(st *idempotency.JobStatus) *leveetype.JobStatus {
	s := st.JobStatus
	switch s.State {
	case leveetype.StateRunning, leveetype.StateRetrying, leveetype.StateSucceeded, leveetype.StateDead, leveetype.StateScheduled:
	default:
		s.State = leveetype.StateUnknown
	}
	if s.State != leveetype.StateRetrying {
		s.NextAttempt = nil
	}
	if s.State != leveetype.StateScheduled {
		s.RunAt = nil
	}
	return &s
}

// ConnOf returns the Conn of a *levee.Client; package levee sets it, so that package admin
// can share a Client's connections without levee exporting them.
var ConnOf func(client any) *Conn
