package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/every"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures one worker's membership in the fleet.
type Config struct {
	// WorkerID names this worker, unique in the fleet (host and pid, say). Required.
	// Characters other than [-/_=.a-zA-Z0-9], and dots that a KV key cannot hold (leading,
	// trailing, doubled), become '_' in its keys.
	WorkerID string
	// Kinds are the kinds this worker serves. At least one.
	Kinds []string
	// TTL is how long a worker that stopped refreshing (crashed, partitioned) still counts.
	// It is the max age of the bucket when JoinFleet creates it; a bucket that exists keeps its
	// own, which is then the TTL. Default 15s; at least 1s.
	TTL time.Duration
	// Refresh is how often Run re-announces this worker and recounts the fleet. Default TTL/3
	// (of the bucket's max age); it must be below the TTL.
	Refresh time.Duration
	// StatusFunc, if set, is called at each announcement for each kind; its answer is
	// published in the kind's entry, for operators (FleetEntries). Default nil: no status.
	StatusFunc func(kind string) KindStatus
}

// KindStatus is what a worker publishes of one kind in its fleet entry.
type KindStatus struct {
	// Breaker is the circuit breaker's state: closed, open or half_open.
	Breaker string `json:"breaker,omitempty"`
	// BreakerUntil is when an open breaker goes half-open.
	BreakerUntil *time.Time `json:"breaker_until,omitempty"`
	// BreakerFleet is true when the breaker is the fleet's (scope fleet); BreakerGen is the
	// generation of the shared record the worker has applied, and BreakerCutOff is true while
	// it cannot reach that record and decides alone.
	BreakerFleet  bool   `json:"breaker_fleet,omitempty"`
	BreakerGen    uint64 `json:"breaker_gen,omitempty"`
	BreakerCutOff bool   `json:"breaker_cut_off,omitempty"`
	// BreakerCalls and BreakerFailures are the outcomes in the breaker's window: the
	// fleet's as this worker has heard of them, or this worker's own.
	BreakerCalls    int `json:"breaker_calls,omitempty"`
	BreakerFailures int `json:"breaker_failures,omitempty"`
	// Rate is the kind's configured fleet-wide rate limit, "" for none.
	Rate string `json:"rate,omitempty"`
	// InFlight counts the attempts this worker runs.
	InFlight int `json:"in_flight"`
	// Paused is true once this worker has stopped pulling the kind for a pause.
	Paused bool `json:"paused"`
}

// Entry is one worker's entry for one kind in the fleet registry.
type Entry struct {
	Worker      string    `json:"worker"`
	Kind        string    `json:"kind"`
	StartedAt   time.Time `json:"started_at"`
	RefreshedAt time.Time `json:"refreshed_at"`
	KindStatus
}

// defaultFleetTTL is Config.TTL's default.
const defaultFleetTTL = 15 * time.Second

func (c Config) validate() error {
	switch {
	case c.WorkerID == "":
		return errors.New("fleet: WorkerID is required")
	case len(c.Kinds) == 0:
		return errors.New("fleet: Kinds must name at least one kind")
	case c.TTL != 0 && c.TTL < time.Second:
		return fmt.Errorf("fleet: TTL must be at least 1s, got %s", c.TTL)
	case c.Refresh < 0:
		return fmt.Errorf("fleet: Refresh must not be negative, got %s", c.Refresh)
	}
	for _, k := range c.Kinds {
		if err := queue.ValidateKind(k); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
	}
	return nil
}

// Member is this worker's membership in the registry of live workers, a KV bucket
// <NS>_WORKERS (LEVEE_WORKERS) holding one key <kind>.<worker-id> per kind a worker serves.
// Each worker re-puts its keys every Refresh; the bucket's max age (the TTL) drops the keys
// of a worker that stopped doing so. Members counts the keys of a kind, so that the kind's
// fleet-wide rate can be shared: executor.Limiter.SetShare(fleet.Members(kind)).
//
// Accuracy. Counts are as of each worker's last refresh, so the shares do not always add up
// to the rate:
//   - while a worker joins, the others keep their larger share until their next refresh
//     (at most Refresh later), so the fleet may briefly exceed the rate by up to one share
//     times Refresh, plus the newcomer's burst;
//   - when a worker stops cleanly it deletes its keys and the others take up its share at
//     their next refresh; when it dies, its share goes unused until its keys expire (at most
//     TTL) and the others have refreshed.
//
// Build one with Store.Join, then call Run. A Member is safe for concurrent use.
type Member struct {
	prevListed map[string][]string // the previous listing, touched only by Run
	kv         jetstream.KeyValue
	bucket     string
	worker     string
	kinds      []string
	keys       []string // one per kind, same order
	refresh    time.Duration
	started    time.Time
	status     func(kind string) KindStatus
	poke       chan struct{}

	mu       sync.Mutex
	counts   map[string]int
	members  map[string][]string // kind → sorted worker tokens, as counted
	onChange func(kind string, members int)
	err      error
}

// Join announces this worker in the fleet registry, creating the bucket if it is missing
// (an existing bucket is never changed), and counts the members of each kind. Call Run next to
// stay in the fleet.
func (s *Store) Join(ctx context.Context, cfg Config) (*Member, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	bucket := s.q.Names().FleetBucket()
	kv, err := s.ensureFleetBucket(ctx, bucket, cmp.Or(cfg.TTL, defaultFleetTTL))
	if err != nil {
		return nil, err
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("status of bucket %s: %w", bucket, queue.Translate(err))
	}
	ttl := status.TTL()
	if ttl <= 0 {
		return nil, fmt.Errorf("fleet: bucket %s has no max age, so dead workers would count forever; recreate it with one", bucket)
	}
	refresh := cmp.Or(cfg.Refresh, ttl/3)
	if refresh >= ttl {
		return nil, fmt.Errorf("fleet: Refresh (%s) must be below the TTL, the max age of bucket %s (%s)", refresh, bucket, ttl)
	}
	worker := fleetKeyToken(cfg.WorkerID)
	kinds := slices.Compact(slices.Sorted(slices.Values(cfg.Kinds)))
	keys := make([]string, len(kinds))
	for i, k := range kinds {
		keys[i] = k + "." + worker
	}
	f := &Member{
		kv:      kv,
		bucket:  bucket,
		worker:  cfg.WorkerID,
		kinds:   kinds,
		keys:    keys,
		refresh: refresh,
		started: time.Now().UTC(),
		counts:  map[string]int{},
		status:  cfg.StatusFunc,
		poke:    make(chan struct{}, 1),
	}
	if err := f.announce(ctx); err != nil {
		return nil, err
	}
	members, err := listFleet(ctx, kv)
	if err != nil {
		return nil, fmt.Errorf("list bucket %s: %w", bucket, err)
	}
	for kind, ids := range members {
		f.counts[kind] = len(ids)
	}
	f.members = members
	return f, nil
}

func (s *Store) ensureFleetBucket(ctx context.Context, bucket string, ttl time.Duration) (jetstream.KeyValue, error) {
	// Of two workers creating it, the second uses the first's, perhaps with another TTL.
	return s.keyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Levee workers by kind: <kind>.<worker-id>, re-put while the worker lives",
		History:     1,
		TTL:         ttl,
	}, true)
}

// Refresh returns how often Run refreshes.
func (f *Member) Refresh() time.Duration { return f.refresh }

// OnChange sets fn to be called, from Run's goroutine, when the count of one of this worker's
// kinds changes; fn gets the new count, at least 1. Set it before Run; the counts at join are
// read with Members.
func (f *Member) OnChange(fn func(kind string, members int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onChange = fn
}

// Members returns the number of live workers of kind at the last count, at least 1 (this
// worker).
func (f *Member) Members(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return max(1, f.counts[kind])
}

// Leads reports whether this worker leads kind at the last count: it has the smallest worker
// id (as a KV key token) among the live workers of kind, itself included. Levee gives a
// leader the chores one worker of the fleet is enough for (the stranded-message sweep, the
// DLQ depth metric). Every worker decides from its own last listing, so while the fleet
// changes two workers may lead for up to a refresh or two, or none for as long; the chores
// are harmless when done twice. With kind "" it reports whether this worker leads the whole
// fleet (the smallest id among all live workers).
func (f *Member) Leads(kind string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	self := fleetKeyToken(f.worker)
	if kind != "" {
		ids := f.members[kind]
		return len(ids) == 0 || self <= ids[0]
	}
	for _, ids := range f.members {
		if len(ids) > 0 && ids[0] < self {
			return false
		}
	}
	return true
}

// Err returns the error of the last refresh, nil if it succeeded. Refreshes are retried every
// Refresh; meanwhile the counts stay as they were.
func (f *Member) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// Run keeps this worker in the fleet until ctx ends: every Refresh it re-puts its keys and
// recounts the members of each kind, calling the OnChange function for each count that
// changed. When ctx ends it deletes its keys (best effort, for at most 2s) so that the others
// take up its share at once, and returns nil. Call it once.
func (f *Member) Run(ctx context.Context) error {
	every.DoOrWake(ctx, f.refresh, false, f.poke, func(ctx context.Context) bool {
		f.refreshOnce(ctx)
		return true
	})
	f.leave(context.WithoutCancel(ctx))
	return nil
}

// Poke makes Run announce this worker at once (its status changed), without waiting for the
// next refresh. It never blocks.
func (f *Member) Poke() {
	select {
	case f.poke <- struct{}{}:
	default:
	}
}

// refreshOnce re-puts the keys, recounts, and reports the changes.
func (f *Member) refreshOnce(ctx context.Context) {
	err := f.announce(ctx)
	listed, lerr := listFleet(ctx, f.kv)
	if lerr != nil {
		err = errors.Join(err, fmt.Errorf("list bucket %s: %w", f.bucket, lerr))
	}
	// A key being re-put while the bucket is listed can be missed by that one listing, so a
	// worker counts as gone only when two listings in a row miss it.
	members := unionFleet(f.prevListed, listed)
	if lerr == nil {
		f.prevListed = listed
	}
	if ctx.Err() != nil {
		return // stopping: the errors say nothing about the fleet
	}
	type change struct {
		kind    string
		members int
	}
	var changes []change
	f.mu.Lock()
	f.err = err
	if lerr == nil {
		for _, kind := range f.kinds {
			if old, now := max(1, f.counts[kind]), max(1, len(members[kind])); old != now {
				changes = append(changes, change{kind, now})
			}
		}
		clear(f.counts)
		for kind, ids := range members {
			f.counts[kind] = len(ids)
		}
		f.members = members
	}
	fn := f.onChange
	f.mu.Unlock()
	if fn != nil {
		for _, c := range changes {
			fn(c.kind, c.members)
		}
	}
}

// unionFleet merges two listings: kind → sorted, distinct worker ids.
func unionFleet(a, b map[string][]string) map[string][]string {
	out := make(map[string][]string, len(b))
	for _, m := range []map[string][]string{a, b} {
		for kind, ids := range m {
			out[kind] = append(out[kind], ids...)
		}
	}
	for kind, ids := range out {
		slices.Sort(ids)
		out[kind] = slices.Compact(ids)
	}
	return out
}

// announce puts this worker's keys.
func (f *Member) announce(ctx context.Context) error {
	now := time.Now().UTC()
	var errs []error
	for i, kind := range f.kinds {
		e := Entry{Worker: f.worker, Kind: kind, StartedAt: f.started, RefreshedAt: now}
		if f.status != nil {
			e.KindStatus = f.status(kind)
		}
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if _, err := f.kv.Put(ctx, f.keys[i], v); err != nil {
			errs = append(errs, fmt.Errorf("put %s in bucket %s: %w", f.keys[i], f.bucket, queue.Translate(err)))
		}
	}
	return errors.Join(errs...)
}

// leave deletes this worker's keys, giving up after 2s: a key left behind expires anyway.
func (f *Member) leave(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, key := range f.keys {
		_ = f.kv.Delete(ctx, key)
	}
}

// Members returns the live workers of each kind, by the worker ids of their keys, sorted.
// It is empty if no worker has joined the fleet yet.
func (s *Store) Members(ctx context.Context) (map[string][]string, error) {
	bucket := s.q.Names().FleetBucket()
	kv, err := s.js().KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return map[string][]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up bucket %s: %w", bucket, queue.Translate(err))
	}
	members, err := listFleet(ctx, kv)
	if err != nil {
		return nil, fmt.Errorf("list bucket %s: %w", bucket, err)
	}
	return members, nil
}

// Entries returns the entries of the live workers, by kind, sorted by worker id, for
// operators (one get per worker and kind; Members is cheaper). The keys come from the bucket's
// stream in one request, not from a watch of the bucket: a watch's initial values can miss a
// key that its worker re-puts meanwhile, and workers re-put at once on any change of state,
// such as the one a breaker reset causes (`breaker reset --wait` counted one worker of two).
// A key being re-put always holds a message: the new one is stored before the old goes.
func (s *Store) Entries(ctx context.Context) (map[string][]Entry, error) {
	bucket := s.q.Names().FleetBucket()
	out := map[string][]Entry{}
	kv, err := s.js().KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up bucket %s: %w", bucket, queue.Translate(err))
	}
	st, err := s.js().Stream(ctx, queue.KVStream(bucket))
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", bucket, queue.Translate(err))
	}
	prefix := queue.KVKeyPrefix(bucket)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", bucket, queue.Translate(err))
	}
	for subject := range info.State.Subjects {
		key := strings.TrimPrefix(subject, prefix)
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			continue // the worker left (or its entry expired) since the listing
		case err != nil:
			return nil, fmt.Errorf("get %s in bucket %s: %w", key, bucket, queue.Translate(err))
		}
		var fe Entry
		if json.Unmarshal(e.Value(), &fe) != nil {
			continue
		}
		fe.Kind, _, _ = strings.Cut(key, ".")
		out[fe.Kind] = append(out[fe.Kind], fe)
	}
	for _, es := range out {
		slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.Worker, b.Worker) })
	}
	return out, nil
}

// listFleet reads the registry's keys: kind → sorted worker ids.
func listFleet(ctx context.Context, kv jetstream.KeyValue) (map[string][]string, error) {
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, queue.Translate(err)
	}
	members := map[string][]string{}
	for _, key := range keys { // sorted, so the ids of each kind are too
		kind, worker, ok := strings.Cut(key, ".")
		if ok {
			members[kind] = append(members[kind], worker)
		}
	}
	return members, nil
}

// fleetKeyToken makes s usable in a KV key: characters outside [-/_=.a-zA-Z0-9], and dots
// at either end or after another dot, become '_'.
func fleetKeyToken(s string) string {
	rs := []rune(s)
	for i, r := range rs {
		ok := r == '-' || r == '/' || r == '_' || r == '=' ||
			'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
			r == '.' && i > 0 && i < len(rs)-1 && rs[i-1] != '.'
		if !ok {
			rs[i] = '_'
		}
	}
	return string(rs)
}
