package levee

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// DefaultNATSURL and DefaultDatabaseURL are the services Levee uses when none are given.
const (
	DefaultNATSURL     = core.DefaultNATSURL
	DefaultDatabaseURL = core.DefaultDatabaseURL
	DefaultNamespace   = core.DefaultNamespace
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
// done. Package admin's Client shares a Client's connections for operator actions.
type Client struct {
	conn *core.Conn
	// outbox writes the jobs that wait (delayed, PublishTx) into the namespace's schema.
	outbox *idempotency.Outbox
}

func init() {
	core.ConnOf = func(client any) *core.Conn { return client.(*Client).conn }
}

// NewClient connects to NATS (and Postgres, if configured) and returns a Client.
func NewClient(ctx context.Context, cfg ClientConfig) (*Client, error) {
	conn, err := core.Open(ctx, core.Options{
		NATSURL: cfg.NATSURL, NATSOptions: cfg.NATSOptions, Conn: cfg.Conn, DatabaseURL: cfg.DatabaseURL,
		Pool: cfg.Pool, Namespace: cfg.Namespace, MaxPayload: cfg.MaxPayload, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	ob := idempotency.NewOutbox(conn.Q.Names().Namespace())
	if conn.Ledger != nil {
		ob = conn.Ledger.Outbox()
	}
	return &Client{conn: conn, outbox: ob}, nil
}

// Close closes the connections the Client opened.
func (c *Client) Close() { c.conn.Close() }

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
	// CheckKey asks the ledger, before Publish publishes, whether the key was used before
	// (it needs ClientConfig.DatabaseURL or Pool; PublishBatch refuses it): with another payload, Publish refuses with
	// ErrKeyReused, as the job would be dead-lettered with reason
	// key_reused_with_different_payload; with the same one, the result says KeyDuplicate.
	CheckKey bool
	// Delay, if positive, or RunAt, if in the future, makes the job wait in the ledger until
	// then (give one of them): it needs ClientConfig.DatabaseURL or Pool. A RunAt in the past
	// runs now.
	Delay time.Duration
	RunAt time.Time
}

// PublishResult says what happened to one published job. Its JSON form is what
// `enqueue publish --json` prints.
type PublishResult struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// Duplicate is true when the stream already held this id within its deduplication
	// window: the job is stored once (the first payload), and this is not an error. It is
	// about the id; KeyDuplicate is about the key.
	Duplicate bool `json:"duplicate"`
	// PayloadDiffers, for a Duplicate, says whether the payload published first, which the
	// stream keeps, differs from this one, which was dropped; absent when it cannot be told
	// (the first job has left the stream and there is no ledger).
	PayloadDiffers *bool `json:"payload_differs,omitempty"`
	// KeyDuplicate, with CheckKey, says whether the key was used before with this payload:
	// the job will not run, and takes the first job's outcome. Absent without CheckKey.
	KeyDuplicate *bool `json:"key_duplicate,omitempty"`
	// RunAt is when a job that waits in the ledger is due (a delayed job, or one published
	// with PublishTx); null for a job published to the stream at once, and for a Duplicate.
	RunAt *time.Time `json:"run_at"`
	// Err is set by PublishBatch for a job that was refused.
	Err error `json:"-"`
}

// PublishOption sets per-call publish options.
type PublishOption func(*JobSpec)

// WithID sets the job id (default: a new ULID).
func WithID(id string) PublishOption { return func(s *JobSpec) { s.ID = id } }

// WithKey sets the idempotency key (default: the job id).
func WithKey(key string) PublishOption { return func(s *JobSpec) { s.Key = key } }

// WithKeyCheck asks the ledger whether the job's key was used before; see JobSpec.CheckKey.
func WithKeyCheck() PublishOption { return func(s *JobSpec) { s.CheckKey = true } }

// WithDelay makes the job wait d before it runs: it is stored in the ledger and published by
// a worker's dispatcher when due (design rule 42), so it needs the ledger (ClientConfig's
// DatabaseURL or Pool). It must not be negative; zero publishes at once.
func WithDelay(d time.Duration) PublishOption { return func(s *JobSpec) { s.Delay = d } }

// WithRunAt makes the job run at t (not before; within a second of it while workers run). A t
// in the past runs now. Like WithDelay, it needs the ledger.
func WithRunAt(t time.Time) PublishOption { return func(s *JobSpec) { s.RunAt = t } }

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
	runAt, err := spec.runAt(time.Now())
	if err != nil {
		return PublishResult{}, err
	}
	out := PublishResult{ID: env.ID, Kind: env.Kind, Key: env.Key}
	if !runAt.IsZero() && c.conn.Ledger == nil {
		return PublishResult{}, fmt.Errorf("a delayed job waits in the ledger: %w", core.ErrDatabaseRequired)
	}
	if spec.CheckKey {
		if out.KeyDuplicate, err = c.checkKey(ctx, env); err != nil {
			return PublishResult{}, err
		}
	}
	if !runAt.IsZero() {
		// Refused now rather than found unpublishable when due.
		if err := c.conn.Q.Fits(env); err != nil {
			return PublishResult{}, err
		}
		res, err := c.schedule(ctx, c.conn.Ledger.Pool(), []queue.Envelope{env}, []time.Time{runAt}, idempotency.OriginDelay)
		if err != nil {
			return PublishResult{}, err
		}
		out.Duplicate, out.RunAt = res[0].Duplicate, res[0].RunAt
		return out, nil
	}
	if err := c.conn.EnsureStreams(ctx); err != nil {
		return PublishResult{}, err
	}
	res, err := c.conn.Q.Publish(ctx, env)
	if err != nil {
		return PublishResult{}, core.TranslatePublish(err)
	}
	out.Duplicate = res.Duplicate
	if res.Duplicate {
		out.PayloadDiffers = c.payloadDiffers(ctx, env)
	}
	return out, nil
}

// checkKey asks the ledger whether env's key was used before: nil error and false when not,
// true when with the same payload, and an error wrapping ErrKeyReused when with another.
func (c *Client) checkKey(ctx context.Context, env queue.Envelope) (*bool, error) {
	if c.conn.Ledger == nil {
		return nil, fmt.Errorf("checking the key needs the ledger: %w", core.ErrDatabaseRequired)
	}
	stored, err := c.conn.Ledger.PayloadHash(ctx, env.Kind, env.Key)
	if err != nil {
		return nil, err
	}
	used := stored != nil
	if used && !bytes.Equal(stored, env.PayloadHash()) {
		return nil, fmt.Errorf("%w: key %q of kind %s was used with another payload; this job would be dead-lettered (key_reused_with_different_payload): give another key", ErrKeyReused, env.Key, env.Kind)
	}
	return &used, nil
}

// payloadDiffers tells, for a duplicate id, whether the payload kept (in the stream, else the
// key's in the ledger) differs from env's; nil when neither can tell.
func (c *Client) payloadDiffers(ctx context.Context, env queue.Envelope) *bool {
	var differs bool
	if q, err := c.conn.Q.FindQueued(ctx, env.ID); err == nil {
		differs = !bytes.Equal(q.Payload, env.Payload)
		return &differs
	}
	if c.conn.Ledger != nil {
		if stored, err := c.conn.Ledger.PayloadHash(ctx, env.Kind, env.Key); err == nil && stored != nil {
			differs = !bytes.Equal(stored, env.PayloadHash())
			return &differs
		}
	}
	return nil
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
		if err == nil && spec.CheckKey {
			err = errors.New("JobSpec.CheckKey is for Publish: PublishBatch does not check keys, so it refuses the job")
		}
		if err == nil && (spec.Delay != 0 || !spec.RunAt.IsZero()) {
			err = errors.New("JobSpec.Delay and RunAt are for Publish and PublishBatchTx: PublishBatch publishes at once, so it refuses the job")
		}
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
	if err := c.conn.EnsureStreams(ctx); err != nil {
		return results, err
	}
	_, err := c.conn.Q.PublishBatch(ctx, envs, func(i int, r queue.PublishResult) {
		res := &results[idx[i]]
		res.Duplicate, res.Err = r.Duplicate, core.TranslatePublish(r.Err)
		if onDone != nil {
			onDone(*res)
		}
	})
	return results, err
}

// KindServed reports whether any worker has ever served kind (its consumer exists). Publishing
// to a kind no worker serves is allowed: the jobs wait in the stream.
func (c *Client) KindServed(ctx context.Context, kind string) (bool, error) {
	if err := c.conn.EnsureStreams(ctx); err != nil {
		return false, err
	}
	return c.conn.Q.ConsumerExists(ctx, kind)
}

// Status reports what Levee knows of job id: from the ledger when the job was picked up, else
// from the work stream (queued), which needs no Postgres. It returns ErrJobNotFound for an id
// in neither.
func (c *Client) Status(ctx context.Context, id string) (*JobStatus, error) {
	return c.conn.Status(ctx, id)
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
	return queue.NewEnvelope(spec.Kind, id, spec.Key, raw, spec.MaxAttempts, c.conn.Q.MaxPayload())
}

// runAt returns when spec's job is due if it must wait (zero: publish now), or an error for a
// negative delay or both a delay and a time.
func (spec JobSpec) runAt(now time.Time) (time.Time, error) {
	switch {
	case spec.Delay < 0:
		return time.Time{}, fmt.Errorf("invalid delay %s: give a positive duration, or none to run now", spec.Delay)
	case spec.Delay > 0 && !spec.RunAt.IsZero():
		return time.Time{}, errors.New("give a delay or a time to run at, not both")
	case spec.Delay > 0:
		return now.Add(spec.Delay), nil
	case spec.RunAt.After(now):
		return spec.RunAt, nil
	}
	return time.Time{}, nil
}

// PublishTx publishes one job in tx, a transaction on the ledger's database: the job exists
// only if tx commits, and is then published to its stream by a worker's dispatcher, within
// about 100 ms while workers run (design rule 43), exactly once in effect (the stream drops a
// second publish of the id, and the ledger a second claim of the key). With WithDelay or
// WithRunAt it waits until then. The Client needs no DatabaseURL for this: it writes into
// the schema of its namespace through tx. WithKeyCheck is refused.
func (c *Client) PublishTx(ctx context.Context, tx pgx.Tx, kind string, payload any, opts ...PublishOption) (PublishResult, error) {
	spec := JobSpec{Kind: kind, Payload: payload}
	for _, o := range opts {
		o(&spec)
	}
	res, err := c.PublishBatchTx(ctx, tx, []JobSpec{spec})
	if err != nil {
		return PublishResult{}, err
	}
	return res[0], res[0].Err
}

// PublishBatchTx publishes jobs in tx like PublishTx, in one statement. results[i] answers
// jobs[i]; an invalid job has Err set and is not stored, while the others are. The error is
// non-nil when the statement failed: then tx is aborted, as any failed statement leaves a
// Postgres transaction, and nothing was stored.
func (c *Client) PublishBatchTx(ctx context.Context, tx pgx.Tx, jobs []JobSpec) ([]PublishResult, error) {
	if tx == nil {
		return nil, errors.New("PublishTx needs a transaction: begin one on the ledger's database and pass it")
	}
	now := time.Now()
	results := make([]PublishResult, len(jobs))
	envs := make([]queue.Envelope, 0, len(jobs))
	at := make([]time.Time, 0, len(jobs))
	idx := make([]int, 0, len(jobs))
	for i, spec := range jobs {
		env, err := c.envelope(spec)
		var runAt time.Time
		if err == nil {
			runAt, err = spec.runAt(now)
		}
		if err == nil && spec.CheckKey {
			err = errors.New("JobSpec.CheckKey is for Publish: PublishTx does not check keys, so it refuses the job")
		}
		if err == nil {
			err = c.conn.Q.Fits(env) // refused now rather than found unpublishable when due
		}
		if err != nil {
			results[i] = PublishResult{ID: spec.ID, Kind: spec.Kind, Key: spec.Key, Err: err}
			continue
		}
		envs, at, idx = append(envs, env), append(at, runAt), append(idx, i)
	}
	if len(envs) == 0 {
		return results, nil
	}
	res, err := c.schedule(ctx, tx, envs, at, idempotency.OriginTx)
	if err != nil {
		return nil, err
	}
	for k, i := range idx {
		results[i] = res[k]
	}
	return results, nil
}

// schedule stores envs in the ledger through db, each due at runAt[i] (zero: when db's
// transaction commits).
func (c *Client) schedule(ctx context.Context, db idempotency.DBTX, envs []queue.Envelope, runAt []time.Time, origin string) ([]PublishResult, error) {
	rows := make([]idempotency.ScheduledJob, len(envs))
	for i, env := range envs {
		rows[i] = idempotency.ScheduledJob{ID: env.ID, Kind: env.Kind, Key: env.Key, Payload: env.Payload,
			MaxAttempts: env.MaxAttempts, RunAt: runAt[i], Origin: origin}
	}
	stored, err := c.outbox.Insert(ctx, db, rows)
	if err != nil {
		return nil, err
	}
	out := make([]PublishResult, len(envs))
	for i, env := range envs {
		out[i] = PublishResult{ID: env.ID, Kind: env.Kind, Key: env.Key, Duplicate: stored[i].IsZero()}
		if !stored[i].IsZero() {
			t := stored[i].UTC()
			out[i].RunAt = &t
		}
	}
	return out, nil
}
