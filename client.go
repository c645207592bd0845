package levee

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// DefaultNATSURL and DefaultDatabaseURL are the services Levee uses when none are given.
const (
	DefaultNATSURL     = "nats://127.0.0.1:4222"
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultNamespace   = "levee"
)

// ClientConfig configures a Client. Publishing needs only NATS; Status also reads Postgres
// when a database is configured.
type ClientConfig struct {
	// NATSURL is used when Conn is nil. Default DefaultNATSURL.
	NATSURL string
	// NATSOptions are extra options (credentials, TLS) for connections made from NATSURL.
	NATSOptions []nats.Option
	// Conn is an existing NATS connection; the Client does not close it.
	Conn *nats.Conn
	// DatabaseURL, if set (and Pool is nil), lets Status read the ledger.
	DatabaseURL string
	// Pool is an existing Postgres pool; the Client does not close it.
	Pool *pgxpool.Pool
	// Namespace prefixes streams and subjects and names the Postgres schema. Default "levee".
	Namespace string
	// MaxPayload bounds payloads. Default 1 MiB.
	MaxPayload int
	// Logger receives the log lines of operator actions (see Audit). Default slog.Default().
	Logger *slog.Logger
}

// Client publishes jobs and reports their status. It is safe for concurrent use. Close it when
// done.
type Client struct {
	q         *queue.Queue
	ledger    *idempotency.Ledger
	closers   []func()
	streamsMu sync.Mutex
	streamsOK bool
	setupOK   bool // the streams were checked (design rule 34)
	logger    *slog.Logger
	overview  overviewCache
}

// NewClient connects to NATS (and Postgres, if configured) and returns a Client.
func NewClient(ctx context.Context, cfg ClientConfig) (*Client, error) {
	c := &Client{logger: cmp.Or(cfg.Logger, slog.Default())}
	nc := cfg.Conn
	if nc == nil {
		var err error
		nc, err = connectNATS(cmp.Or(cfg.NATSURL, DefaultNATSURL), "levee-client", cfg.NATSOptions)
		if err != nil {
			return nil, err
		}
		c.closers = append(c.closers, nc.Close)
	}
	q, err := queue.New(queue.Config{Conn: nc, Namespace: cmp.Or(cfg.Namespace, DefaultNamespace), MaxPayload: cfg.MaxPayload})
	if err != nil {
		c.Close()
		return nil, err
	}
	c.q = q
	pool := cfg.Pool
	if pool == nil && cfg.DatabaseURL != "" {
		pool, err = openPool(ctx, cfg.DatabaseURL, 4)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.closers = append(c.closers, pool.Close)
	}
	if pool != nil {
		c.ledger, err = idempotency.New(idempotency.Config{Pool: pool, Schema: q.Names().Namespace()})
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close closes the connections the Client opened.
func (c *Client) Close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

// JobSpec is a job to publish.
type JobSpec struct {
	Kind string
	// Payload is the job's payload: json.RawMessage or []byte are sent as they are (they must
	// be JSON), anything else is marshalled with encoding/json.
	Payload any
	// ID defaults to a new ULID.
	ID string
	// Key is the idempotency key; default ID.
	Key string
	// MaxAttempts overrides the kind's policy when > 0.
	MaxAttempts int
}

// PublishResult says what happened to one published job. Its JSON form is what
// `enqueue publish --json` prints.
type PublishResult struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// Duplicate is true when the stream already held this id within its deduplication
	// window: the job is stored once, and this is not an error.
	Duplicate bool `json:"duplicate"`
	// Err is set by PublishBatch for a job that was refused.
	Err error `json:"-"`
}

// PublishOption sets per-call publish options.
type PublishOption func(*JobSpec)

// WithID sets the job id (default: a new ULID).
func WithID(id string) PublishOption { return func(s *JobSpec) { s.ID = id } }

// WithKey sets the idempotency key (default: the job id).
func WithKey(key string) PublishOption { return func(s *JobSpec) { s.Key = key } }

// WithMaxAttempts overrides the kind's attempt budget for this job.
func WithMaxAttempts(n int) PublishOption { return func(s *JobSpec) { s.MaxAttempts = n } }

// Publish publishes one job of kind and waits until the stream stored it. It creates the work
// streams if they do not exist, and never changes existing ones.
func (c *Client) Publish(ctx context.Context, kind string, payload any, opts ...PublishOption) (PublishResult, error) {
	spec := JobSpec{Kind: kind, Payload: payload}
	for _, o := range opts {
		o(&spec)
	}
	env, err := c.envelope(spec)
	if err != nil {
		return PublishResult{}, err
	}
	if err := c.ensureStreams(ctx); err != nil {
		return PublishResult{}, err
	}
	res, err := c.q.Publish(ctx, env)
	if err != nil {
		return PublishResult{}, translatePublish(err)
	}
	return PublishResult{ID: env.ID, Kind: env.Kind, Key: env.Key, Duplicate: res.Duplicate}, nil
}

// PublishBatch publishes jobs asynchronously and waits for every answer. results[i] answers
// jobs[i]; a job that is invalid or refused has Err set while the others are published. The
// error is non-nil when nothing could be published (or ctx ended). onDone, if not nil, is
// called once per job as its answer arrives (for progress).
func (c *Client) PublishBatch(ctx context.Context, jobs []JobSpec, onDone func(PublishResult)) ([]PublishResult, error) {
	results := make([]PublishResult, len(jobs))
	envs := make([]queue.Envelope, 0, len(jobs))
	idx := make([]int, 0, len(jobs))
	for i, spec := range jobs {
		env, err := c.envelope(spec)
		if err != nil {
			results[i] = PublishResult{ID: spec.ID, Kind: spec.Kind, Key: spec.Key, Err: err}
			if onDone != nil {
				onDone(results[i])
			}
			continue
		}
		envs = append(envs, env)
		idx = append(idx, i)
		results[i] = PublishResult{ID: env.ID, Kind: env.Kind, Key: env.Key}
	}
	if len(envs) == 0 {
		return results, nil
	}
	if err := c.ensureStreams(ctx); err != nil {
		return results, err
	}
	_, err := c.q.PublishBatch(ctx, envs, func(i int, r queue.PublishResult) {
		res := &results[idx[i]]
		res.Duplicate, res.Err = r.Duplicate, translatePublish(r.Err)
		if onDone != nil {
			onDone(*res)
		}
	})
	return results, err
}

// KindServed reports whether any worker has ever served kind (its consumer exists). Publishing
// to a kind no worker serves is allowed: the jobs wait in the stream.
func (c *Client) KindServed(ctx context.Context, kind string) (bool, error) {
	if err := c.ensureStreams(ctx); err != nil {
		return false, err
	}
	return c.q.ConsumerExists(ctx, kind)
}

// Status reports what Levee knows of job id: from the ledger when the job was picked up, else
// from the work stream (queued), which needs no Postgres. It returns ErrJobNotFound for an id
// in neither.
func (c *Client) Status(ctx context.Context, id string) (*JobStatus, error) {
	if err := queue.ValidateID(id); err != nil {
		return nil, err
	}
	if c.ledger != nil {
		st, err := c.ledger.Status(ctx, id)
		if err == nil {
			return fromLedger(st), nil
		}
		if !errors.Is(err, idempotency.ErrNotFound) {
			return nil, err
		}
	}
	q, err := c.q.FindQueued(ctx, id)
	switch {
	case err == nil:
		at := q.EnqueuedAt
		return &JobStatus{State: StateQueued, ID: q.ID, Kind: q.Kind, Key: q.Key, EnqueuedAt: &at}, nil
	case errors.Is(err, queue.ErrNotFound), errors.Is(err, queue.ErrNoStream):
		if c.ledger == nil {
			return nil, fmt.Errorf("%w: %s is not waiting in the stream (without a database URL, running and finished jobs cannot be seen)", ErrJobNotFound, id)
		}
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	return nil, err
}

func fromLedger(st *idempotency.JobStatus) *JobStatus {
	s := &JobStatus{
		ID: st.JobID, Kind: st.Kind, Key: st.Key, Attempts: st.Attempts, Reason: st.Reason,
		LastError: st.LastError, NextAttempt: st.NextAttemptAt, EnqueuedAt: st.EnqueuedAt,
		StartedAt: st.StartedAt, FinishedAt: st.FinishedAt, DuplicateOf: st.DuplicateOf,
		FallbackOf: st.FallbackOf, FallbackTo: st.FallbackTo,
	}
	if st.Result != nil {
		s.Result = json.RawMessage(st.Result)
	}
	switch st.State {
	case idempotency.StateRunning:
		s.State = StateRunning
	case idempotency.StateRetrying:
		s.State = StateRetrying
	case idempotency.StateSucceeded:
		s.State = StateSucceeded
	case idempotency.StateDead:
		s.State = StateDead
	default:
		s.State = StateUnknown
	}
	if s.State != StateRetrying {
		s.NextAttempt = nil
	}
	return s
}

func (c *Client) envelope(spec JobSpec) (queue.Envelope, error) {
	var raw []byte
	switch p := spec.Payload.(type) {
	case json.RawMessage:
		raw = p
	case []byte:
		raw = p
	case nil:
		raw = []byte("null")
	default:
		var err error
		if raw, err = json.Marshal(p); err != nil {
			return queue.Envelope{}, fmt.Errorf("marshal payload: %w", err)
		}
	}
	id := spec.ID
	if id == "" {
		id = ulid.Make().String()
	}
	return queue.NewEnvelope(spec.Kind, id, spec.Key, raw, spec.MaxAttempts, c.q.MaxPayload())
}

func (c *Client) ensureStreams(ctx context.Context) error {
	c.streamsMu.Lock()
	defer c.streamsMu.Unlock()
	if c.streamsOK {
		return nil
	}
	if err := c.q.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := c.checkSetupLocked(ctx); err != nil {
		return err
	}
	c.streamsOK = true
	return nil
}

// checkSetup checks the namespace's existing streams against what Levee relies on, once per
// Client (design rule 34): it logs the harmless differences and returns a *SetupError (one
// line, wrapping ErrSetup) for those that break a guarantee, such as a work stream with
// memory storage.
func (c *Client) checkSetup(ctx context.Context) error {
	c.streamsMu.Lock()
	defer c.streamsMu.Unlock()
	return c.checkSetupLocked(ctx)
}

func (c *Client) checkSetupLocked(ctx context.Context) error {
	if c.setupOK {
		return nil
	}
	problems, err := c.q.CheckSetup(ctx, nil)
	if err != nil {
		return err
	}
	for _, p := range problems {
		if !p.Fatal {
			c.logger.Warn(p.Message, "stream", p.Stream, "setting", p.Setting)
		}
	}
	if err := queue.FatalSetup(problems); err != nil {
		return err
	}
	c.setupOK = true
	return nil
}

func translatePublish(err error) error {
	if errors.Is(err, queue.ErrStreamFull) {
		return fmt.Errorf("%w: %w", ErrStreamFull, err)
	}
	return err
}
