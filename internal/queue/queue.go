package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig sets the limits of streams this package creates. It never changes an existing
// stream: operators own a stream once it exists.
type StreamConfig struct {
	// MaxBytes bounds the work stream's size; 0 means no limit. When reached, publishers get
	// ErrStreamFull (Discard=New): queued work is never evicted.
	MaxBytes int64
	// MaxMsgs bounds the work stream's message count; 0 means no limit.
	MaxMsgs int64
	// Duplicates is JetStream's deduplication window for Nats-Msg-Id. Default 2m.
	Duplicates time.Duration
	// Replicas is the stream replication factor. Default 1.
	Replicas int
}

// Config configures a Queue.
type Config struct {
	// Conn is a connected NATS connection. Required.
	Conn *nats.Conn
	// Namespace prefixes every name. Default "levee".
	Namespace string
	// MaxPayload bounds payloads accepted on publish and on delivery. Default DefaultMaxPayload.
	MaxPayload int
	// Stream holds the limits of streams created here.
	Stream StreamConfig
	// PublishAsyncMaxPending bounds in-flight async publishes. Default 4000.
	PublishAsyncMaxPending int
}

// publishAckTimeout bounds the wait for an async publish's PubAck. Without it, a job sent to a
// server that dies before answering waits for its answer forever (found by the chaos suite's
// cluster scenario); with it, the job gets an error and the publisher sends it again with the
// same id, which the stream's dedup window stores once.
const publishAckTimeout = 10 * time.Second

// Queue is Levee's view of JetStream. It is safe for concurrent use.
type Queue struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	names      Names
	maxPayload int
	stream     StreamConfig
	termReason bool
	// dlqMaxMsgSize caches the DLQ stream's max message size (0 or below: none), read at
	// dlqReadAt (zero: not read yet).
	dlqMu         sync.Mutex
	dlqMaxMsgSize int
	dlqReadAt     time.Time
}

// New returns a Queue over cfg.Conn. It does not create anything; call EnsureStreams.
func New(cfg Config) (*Queue, error) {
	if cfg.Conn == nil {
		return nil, errors.New("queue: Config.Conn is required")
	}
	names, err := NewNames(cmp.Or(cfg.Namespace, "levee"))
	if err != nil {
		return nil, err
	}
	if cfg.MaxPayload < 0 {
		return nil, fmt.Errorf("queue: Config.MaxPayload must not be negative, got %d", cfg.MaxPayload)
	}
	js, err := jetstream.New(cfg.Conn, jetstream.WithPublishAsyncMaxPending(cmp.Or(cfg.PublishAsyncMaxPending, 4000)),
		jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	st := cfg.Stream
	st.Duplicates = cmp.Or(st.Duplicates, 2*time.Minute)
	st.Replicas = cmp.Or(st.Replicas, 1)
	return &Queue{
		nc:         cfg.Conn,
		js:         js,
		names:      names,
		maxPayload: cmp.Or(cfg.MaxPayload, DefaultMaxPayload),
		stream:     st,
		termReason: ServerAtLeast(cfg.Conn.ConnectedServerVersion(), 2, 10, 4),
	}, nil
}

// Names returns the queue's names.
func (q *Queue) Names() Names { return q.names }

// MaxPayload returns the payload bound.
func (q *Queue) MaxPayload() int { return q.maxPayload }

// JetStream and Conn are the Queue's connection, for the fleet's KV buckets and subjects
// (package fleet); StreamReplicas is the replicas its streams are created with.
func (q *Queue) JetStream() jetstream.JetStream { return q.js }

// Conn returns the Queue's NATS connection.
func (q *Queue) Conn() *nats.Conn { return q.nc }

// StreamReplicas returns the replicas the Queue creates streams with.
func (q *Queue) StreamReplicas() int { return q.stream.Replicas }

// ServerVersion returns the connected server's version, e.g. "2.9.10".
func (q *Queue) ServerVersion() string { return q.nc.ConnectedServerVersion() }

// SupportsTermReason reports whether the server honours TermWithReason (2.10.4 and later).
// Older servers ignore such a term entirely, so Levee sends a plain Term to them.
func (q *Queue) SupportsTermReason() bool { return q.termReason }

// CheckJetStream reports ErrJetStreamDisabled if the server has no JetStream.
func (q *Queue) CheckJetStream(ctx context.Context) error {
	_, err := q.js.AccountInfo(ctx)
	return Translate(err)
}

// EnsureStreams creates the work and dead-letter streams if they are missing. Existing streams
// are left exactly as they are.
func (q *Queue) EnsureStreams(ctx context.Context) error {
	if err := q.EnsureJobsStream(ctx); err != nil {
		return err
	}
	return q.ensureStream(ctx, jetstream.StreamConfig{
		Name:        q.names.DLQStream(),
		Description: "Levee dead letters: every job that cannot succeed, kept until an operator decides",
		Subjects:    []string{q.names.DLQSubjects()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		Duplicates:  q.stream.Duplicates,
		Replicas:    q.stream.Replicas,
		MaxMsgs:     -1,
		MaxBytes:    -1,
	})
}

// EnsureJobsStream creates the work stream if it is missing; an existing one is not changed.
func (q *Queue) EnsureJobsStream(ctx context.Context) error {
	return q.ensureStream(ctx, jetstream.StreamConfig{
		Name:        q.names.JobsStream(),
		Description: "Levee jobs, one subject per job: " + q.names.JobsSubjects(),
		Subjects:    []string{q.names.JobsSubjects()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		Duplicates:  q.stream.Duplicates,
		Replicas:    q.stream.Replicas,
		MaxMsgs:     cmp.Or(q.stream.MaxMsgs, -1),
		MaxBytes:    cmp.Or(q.stream.MaxBytes, -1),
	})
}

func (q *Queue) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) error {
	_, err := q.js.Stream(ctx, cfg.Name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up stream %s: %w", cfg.Name, Translate(err))
	}
	_, err = q.js.CreateStream(ctx, cfg)
	if err == nil || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil
	}
	if ExistsAfterRace(ctx, func() error { _, err := q.js.Stream(ctx, cfg.Name); return err }) {
		return nil
	}
	return fmt.Errorf("create stream %s: %w", cfg.Name, Translate(err))
}

// ExistsAfterRace reports whether what a create just failed to make exists after all, by
// lookup. Of workers starting together, all but one lose the race to create a stream (a KV
// bucket is one), and NATS 2.9 may tell a loser "subjects overlap with an existing stream"
// (the winner's) rather than "already in use": whatever the create's error, what exists now
// is the one to use. In a cluster the winner's may take a moment to be found, so the lookup
// is tried three times, 100 ms apart.
func ExistsAfterRace(ctx context.Context, lookup func() error) bool {
	for try := 0; ; try++ {
		if lookup() == nil {
			return true
		}
		if try == 2 {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DeleteStreams removes the namespace's streams and its fleet registry bucket. Tests use it
// to clean up.
func (q *Queue) DeleteStreams(ctx context.Context) error {
	var errs []error
	for _, name := range []string{q.names.JobsStream(), q.names.DLQStream(), q.names.AdvisoriesStream()} {
		if err := q.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, err)
		}
	}
	for _, bucket := range []string{q.names.FleetBucket(), q.names.ControlBucket(), q.names.BreakersBucket()} {
		if err := q.js.DeleteKeyValue(ctx, bucket); err != nil &&
			!errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ConsumerConfig configures the durable pull consumer of one kind.
type ConsumerConfig struct {
	Kind string
	// AckWait is how long a delivered message may go without ack or heartbeat before it is
	// redelivered. Default 30s.
	AckWait time.Duration
	// MaxDeliver is the safety net for messages that crash workers; attempts are counted in
	// Postgres. Default 100.
	MaxDeliver int
	// MaxAckPending bounds messages in flight across the fleet for the kind. Default 1000.
	MaxAckPending int
}

// EnsureConsumer creates the kind's durable consumer, or updates an existing one to the kind's
// policy, and returns a Puller on it. An existing consumer that an update cannot make right
// (its ack policy, filter, deliver policy, a push consumer) refuses with a *SetupError
// (design rule 34; CheckSetup reports the same beforehand, with the warnings).
func (q *Queue) EnsureConsumer(ctx context.Context, cfg ConsumerConfig) (*Puller, error) {
	if err := ValidateKind(cfg.Kind); err != nil {
		return nil, err
	}
	want := q.kindConsumerConfig(cfg)
	stream := q.names.JobsStream()
	cur, err := q.js.Consumer(ctx, stream, want.Durable)
	switch {
	case err == nil:
		have := cur.CachedInfo().Config
		if err := FatalSetup(q.checkConsumer(have, want)); err != nil {
			return nil, err
		}
		want = mergeConsumer(have, want)
	case errors.Is(err, jetstream.ErrNotPullConsumer):
		return nil, &SetupError{Problems: []SetupProblem{q.pushConsumer(want.Durable)}}
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("look up consumer %s on %s: %w", want.Durable, stream, Translate(err))
	}
	cons, err := q.js.CreateOrUpdateConsumer(ctx, stream, want)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", want.Durable, stream, Translate(err))
	}
	return &Puller{q: q, cons: cons, kind: cfg.Kind}, nil
}

// ConsumerExists reports whether some worker has ever served kind (its consumer exists).
func (q *Queue) ConsumerExists(ctx context.Context, kind string) (bool, error) {
	_, err := q.js.Consumer(ctx, q.names.JobsStream(), q.names.Consumer(kind))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return false, nil
	}
	return false, fmt.Errorf("look up consumer for kind %q: %w", kind, Translate(err))
}

// Queued is a job found waiting in the work stream.
type Queued struct {
	Envelope
	Sequence uint64
	// Data and Header are the message as stored, for a dead-letter copy.
	Data   []byte
	Header nats.Header
}

// FindQueued returns job id if it is still in the work stream, or ErrNotFound. It needs no
// Postgres: it gets the last message on <ns>.jobs.*.<id>.
func (q *Queue) FindQueued(ctx context.Context, id string) (*Queued, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	stream, err := q.js.Stream(ctx, q.names.JobsStream())
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", q.names.JobsStream(), Translate(err))
	}
	raw, err := stream.GetLastMsgForSubject(ctx, q.names.AnyKindSubject(id))
	if err != nil {
		return nil, Translate(err)
	}
	env, err := q.names.Decode(raw.Subject, raw.Header, raw.Data, raw.Time, q.maxPayload)
	if err != nil && env.ID == "" {
		return nil, err
	}
	return &Queued{Envelope: env, Sequence: raw.Sequence, Data: raw.Data, Header: raw.Header}, nil
}

// ServerAtLeast reports whether a server version string such as "2.10.4" or "2.11.0-beta" is
// at least major.minor.patch. An unparsable version counts as old.
func ServerAtLeast(version string, major, minor, patch int) bool {
	version, _, _ = strings.Cut(version, "-")
	parts := strings.SplitN(version, ".", 3)
	want := [3]int{major, minor, patch}
	for i := range 3 {
		if i >= len(parts) {
			return false
		}
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return false
		}
		if n != want[i] {
			return n > want[i]
		}
	}
	return true
}

// DLQUsage reports how full the dead-letter stream is: its message and byte counts and, when
// the stream has limits, the larger of the two fractions used (0 without limits).
func (q *Queue) DLQUsage(ctx context.Context) (msgs, bytes uint64, used float64, err error) {
	stream, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return 0, 0, 0, Translate(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, 0, 0, Translate(err)
	}
	st, cfg := info.State, info.Config
	if cfg.MaxMsgs > 0 {
		used = max(used, float64(st.Msgs)/float64(cfg.MaxMsgs))
	}
	if cfg.MaxBytes > 0 {
		used = max(used, float64(st.Bytes)/float64(cfg.MaxBytes))
	}
	return st.Msgs, st.Bytes, used, nil
}

// Connected reports whether the NATS connection is up.
func (q *Queue) Connected() bool { return q.nc.IsConnected() }
