package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Streams and consumers that someone else created (design rule 34).
//
// Levee creates its streams when they are missing and never changes an existing one: once a
// stream exists, its operators own it. But a stream created beforehand (`nats stream add`,
// infrastructure as code) may lack what Levee's guarantees rest on, and would otherwise be
// used silently: a limits-retention work stream keeps every acked job forever, a
// memory-storage one loses every queued job when NATS restarts. CheckSetup compares what
// exists with what Levee relies on, and sorts each difference:
//
//   - Fatal: a setting that breaks a guarantee. The worker refuses to start, and `enqueue`
//     refuses the commands that use the streams, with one line naming the stream or
//     consumer, the setting, what Levee needs, and the fix.
//   - Warning: a difference that costs something but breaks nothing (a duplicate window
//     shorter than Levee's, fewer replicas than asked for). It is logged.
//
// What each stream needs:
//
//	                   jobs <NS>_JOBS          dead letters <NS>_DLQ     advisories <NS>_ADVISORIES
//	retention          work queue (fatal)      limits (fatal)            work queue (warning)
//	storage            file (fatal)            file (fatal)              file (fatal)
//	subjects           cover <ns>.jobs.>       cover <ns>.dlq.>          cover the jobs stream's
//	                   (fatal; others: warn)   (fatal; others: warn)     max-deliveries advisories (fatal)
//	discard            new, with limits (fatal; without limits: warning) -
//	max age            none (fatal)            none (warning)            -
//	duplicate window   at least 2m (warning)   at least 2m (warning)     -
//	replicas           at least --stream-replicas (warning), all three
//	no ack, sealed,    not set (fatal)         not set (fatal)           -
//	deny delete
//
// The kinds' consumers are Levee's: the worker serving a kind creates its consumer
// <ns>_<kind>, and updates an existing one to the kind's policy. It refuses a consumer it
// cannot make right by an update, because the server refuses to change the setting or
// because a wrong value means the consumer is not the kind's: ack policy other than explicit,
// a push consumer (deliver subject), a deliver policy other than all, a filter other than
// <ns>.jobs.<kind>.*. The fix is to delete the consumer (its jobs stay in the stream; the
// worker creates the consumer again and it delivers them). It updates, with a warning naming
// the old value, AckWait, MaxDeliver and MaxAckPending (the kind's ack_wait, max_deliveries
// and fleet_concurrency: workers of a kind must agree on them, and the last to start wins),
// and clears a BackOff list (design rule 5), HeadersOnly and an inactivity threshold. Every
// other setting of an existing consumer is kept as it is.

// SetupProblem is one way an existing stream or consumer differs from what Levee relies on.
type SetupProblem struct {
	// Fatal problems refuse the start; the others are warnings.
	Fatal bool
	// Stream names the stream; Consumer the consumer on it, or "" for the stream itself.
	Stream   string
	Consumer string
	// Setting names what differs, as `nats stream info` calls it: "storage", "retention",
	// "subjects", "discard", "max age", "duplicate window", "replicas", "ack policy", ...
	Setting string
	// Message says it all in one line: what there is, what Levee needs, and the fix.
	Message string
}

func (p SetupProblem) String() string { return p.Message }

// ErrSetup is wrapped by the error of a start refused for a fatal SetupProblem.
var ErrSetup = errors.New("a stream or consumer lacks what Levee relies on")

// SetupError is a start refused for fatal problems. Its message is one line.
type SetupError struct {
	Problems []SetupProblem // the fatal ones
}

func (e *SetupError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Message
	}
	return strings.Join(msgs, "; ")
}

// Is makes errors.Is(err, ErrSetup) true.
func (e *SetupError) Is(target error) bool { return target == ErrSetup }

// FatalSetup returns a *SetupError holding the fatal problems of ps, or nil if there is none.
func FatalSetup(ps []SetupProblem) error {
	var fatal []SetupProblem
	for _, p := range ps {
		if p.Fatal {
			fatal = append(fatal, p)
		}
	}
	if len(fatal) == 0 {
		return nil
	}
	return &SetupError{Problems: fatal}
}

// minDuplicates is the shortest duplicate window Levee is happy with: its own default.
const minDuplicates = 2 * time.Minute

// minDLQMsgSize is the smallest max message size a DLQ stream may have: room for a copy's
// Levee-* headers and the start of its payload.
const minDLQMsgSize = 1024

// streamRole says which of Levee's streams is checked.
type streamRole int

const (
	roleJobs streamRole = iota
	roleDLQ
	roleAdvisories
)

// CheckSetup checks the namespace's existing streams (jobs, dead letters, advisories) and the
// existing consumers of kinds against what Levee relies on (design rule 34; the table above).
// A stream or consumer that does not exist yet is no problem: Levee creates it right. It
// creates and changes nothing. The error reports a failure to look (NATS unreachable, say);
// FatalSetup turns the problems into the error that refuses a start.
func (q *Queue) CheckSetup(ctx context.Context, kinds []ConsumerConfig) ([]SetupProblem, error) {
	var out []SetupProblem
	for _, s := range []struct {
		name string
		role streamRole
	}{
		{q.names.JobsStream(), roleJobs},
		{q.names.DLQStream(), roleDLQ},
		{q.names.AdvisoriesStream(), roleAdvisories},
	} {
		stream, err := q.js.Stream(ctx, s.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up stream %s: %w", s.name, Translate(err))
		}
		out = append(out, q.checkStream(stream.CachedInfo().Config, s.role)...)
	}
	for _, k := range kinds {
		if err := ValidateKind(k.Kind); err != nil {
			return nil, err
		}
		name := q.names.Consumer(k.Kind)
		cons, err := q.js.Consumer(ctx, q.names.JobsStream(), name)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
			continue
		case errors.Is(err, jetstream.ErrNotPullConsumer):
			out = append(out, q.pushConsumer(name))
			continue
		case err != nil:
			return nil, fmt.Errorf("look up consumer %s: %w", name, Translate(err))
		}
		out = append(out, q.checkConsumer(cons.CachedInfo().Config, q.kindConsumerConfig(k))...)
	}
	return out, nil
}

// checkStream compares an existing stream's configuration with what Levee needs of it.
func (q *Queue) checkStream(cfg jetstream.StreamConfig, role streamRole) []SetupProblem {
	name := cfg.Name
	var out []SetupProblem
	add := func(fatal bool, setting, format string, args ...any) {
		out = append(out, SetupProblem{Fatal: fatal, Stream: name, Setting: setting,
			Message: "stream " + name + " " + fmt.Sprintf(format, args...)})
	}
	var (
		want    string // the subject the stream must cover
		purpose string // what the stream keeps, for the messages
	)
	switch role {
	case roleJobs:
		want, purpose = q.names.JobsSubjects(), "queued jobs"
	case roleDLQ:
		want, purpose = q.names.DLQSubjects(), "dead jobs"
	case roleAdvisories:
		want, purpose = q.names.AdvisorySubject(), "max-deliveries advisories"
	}

	if cfg.Storage != jetstream.FileStorage {
		add(true, "storage", "has %s storage; Levee needs file storage so that %s survive a NATS restart: recreate it with --storage file (nats stream edit cannot change storage)",
			strings.ToLower(cfg.Storage.String()), purpose)
	}
	switch {
	case role == roleJobs && cfg.Retention != jetstream.WorkQueuePolicy:
		add(true, "retention", "has %s retention; Levee needs work-queue retention, so that a job leaves the stream once acked and each job goes to one consumer: drain it, then recreate it with --retention work (nats stream edit cannot change retention)",
			retentionName(cfg.Retention))
	case role == roleDLQ && cfg.Retention != jetstream.LimitsPolicy:
		add(true, "retention", "has %s retention; Levee needs limits retention, so that dead jobs stay until an operator replays or purges them and can be read any number of times: recreate it with --retention limits (nats stream edit cannot change retention)",
			retentionName(cfg.Retention))
	case role == roleAdvisories && cfg.Retention != jetstream.WorkQueuePolicy:
		add(false, "retention", "has %s retention; Levee expects work-queue retention, so that settled advisories leave the stream (they stay until its max age now)",
			retentionName(cfg.Retention))
	}
	if !slices.ContainsFunc(cfg.Subjects, func(s string) bool { return subjectCovers(s, want) }) {
		add(true, "subjects", "has subjects %s; Levee needs them to cover %s: nats stream edit %s --subjects '%s'",
			subjectList(cfg.Subjects), want, name, want)
	} else if role != roleAdvisories {
		var extra []string
		for _, s := range cfg.Subjects {
			if !subjectCovers(want, s) {
				extra = append(extra, s)
			}
		}
		if len(extra) > 0 {
			add(false, "subjects", "also has subjects %s beyond %s: messages there are not Levee's and no Levee consumer takes them",
				subjectList(extra), want)
		}
	}
	if role == roleAdvisories {
		return append(out, q.checkReplicas(cfg)...)
	}

	limited := cfg.MaxMsgs > 0 || cfg.MaxBytes > 0 || cfg.MaxMsgsPerSubject > 0
	switch {
	case cfg.Discard != jetstream.DiscardNew && limited:
		add(true, "discard", "discards old messages when full (it has limits); Levee needs Discard=New, so that publishers get an error rather than %s being evicted: nats stream edit %s --discard new",
			purpose, name)
	case cfg.Discard != jetstream.DiscardNew:
		add(false, "discard", "discards old messages when full; it has no limits now, but with one it would evict %s: nats stream edit %s --discard new",
			purpose, name)
	}
	if role == roleDLQ && limited && cfg.Discard == jetstream.DiscardNew {
		add(false, "limits", "has limits (max msgs %d, max bytes %d, max msgs per subject %d): once full it refuses dead jobs, which then wait in the work stream, redelivered, until an operator makes room (enqueue dlq purge); Levee keeps every dead job when it has none: nats stream edit %s --max-msgs -1 --max-bytes -1 --max-msgs-per-subject -1",
			cfg.MaxMsgs, cfg.MaxBytes, cfg.MaxMsgsPerSubject, name)
	}
	if role == roleDLQ && cfg.MaxMsgSize > 0 && cfg.MaxMsgSize < minDLQMsgSize {
		add(true, "max message size", "has a max message size of %d bytes, below the %d a dead-letter copy's own headers need: no dead job could be kept: nats stream edit %s --max-msg-size -1",
			cfg.MaxMsgSize, minDLQMsgSize, name)
	} else if role == roleDLQ && cfg.MaxMsgSize > 0 {
		add(false, "max message size", "has a max message size of %d bytes: the copy of a larger dead job keeps only the start of its payload (marked %s) and cannot be replayed as it is: nats stream edit %s --max-msg-size -1",
			cfg.MaxMsgSize, HeaderPayloadTruncated, name)
	}
	if cfg.MaxAge > 0 {
		if role == roleJobs {
			add(true, "max age", "has max age %s; Levee needs none, since queued jobs older than that would be deleted without running: nats stream edit %s --max-age 0",
				cfg.MaxAge, name)
		} else {
			add(false, "max age", "has max age %s: dead jobs older than that are deleted, not kept until an operator replays or purges them (nats stream edit %s --max-age 0 keeps them)",
				cfg.MaxAge, name)
		}
	}
	if cfg.Duplicates < minDuplicates {
		add(false, "duplicate window", "has a duplicate window of %s, below Levee's %s: a publish retried after it stores a second copy (the ledger still runs the job once): nats stream edit %s --dupe-window %s",
			cfg.Duplicates, minDuplicates, name, minDuplicates)
	}
	if cfg.NoAck {
		add(true, "no ack", "does not acknowledge publishes (no ack); Levee waits for every acknowledgement: recreate it without --no-ack")
	}
	if cfg.Sealed {
		add(true, "sealed", "is sealed and stores nothing more: recreate it (a sealed stream cannot be unsealed)")
	}
	if cfg.DenyDelete {
		add(true, "deny delete", "denies message deletes; Levee deletes settled messages by sequence (stranded jobs, replayed and purged dead jobs): recreate it without --deny-delete (it cannot be turned off)")
	}
	return append(out, q.checkReplicas(cfg)...)
}

func (q *Queue) checkReplicas(cfg jetstream.StreamConfig) []SetupProblem {
	if cfg.Replicas >= q.stream.Replicas {
		return nil
	}
	return []SetupProblem{{Stream: cfg.Name, Setting: "replicas", Message: fmt.Sprintf(
		"stream %s has %d replicas, fewer than the %d asked for (--stream-replicas); Levee does not change an existing stream: nats stream edit %s --replicas %d",
		cfg.Name, cfg.Replicas, q.stream.Replicas, cfg.Name, q.stream.Replicas)}}
}

// kindConsumerConfig is the configuration Levee gives the consumer of a kind it creates.
func (q *Queue) kindConsumerConfig(cfg ConsumerConfig) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       q.names.Consumer(cfg.Kind),
		Description:   "Levee workers of kind " + cfg.Kind,
		FilterSubject: q.names.KindFilter(cfg.Kind),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cmp.Or(cfg.AckWait, 30*time.Second),
		MaxDeliver:    cmp.Or(cfg.MaxDeliver, 100),
		MaxAckPending: cmp.Or(cfg.MaxAckPending, 1000),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

func (q *Queue) pushConsumer(name string) SetupProblem {
	return SetupProblem{Fatal: true, Stream: q.names.JobsStream(), Consumer: name, Setting: "deliver subject",
		Message: fmt.Sprintf("consumer %s on %s is a push consumer; Levee pulls: %s",
			name, q.names.JobsStream(), q.recreateConsumer(name))}
}

func (q *Queue) recreateConsumer(name string) string {
	return fmt.Sprintf("delete it with nats consumer rm %s %s and the worker creates it again (its jobs stay in the stream)",
		q.names.JobsStream(), name)
}

// checkConsumer compares an existing kind consumer's configuration have with the one Levee
// gives it (want): fatal for what an update cannot fix, a warning for each value the update
// changes.
func (q *Queue) checkConsumer(have, want jetstream.ConsumerConfig) []SetupProblem {
	name, stream := want.Durable, q.names.JobsStream()
	var out []SetupProblem
	add := func(fatal bool, setting, format string, args ...any) {
		out = append(out, SetupProblem{Fatal: fatal, Stream: stream, Consumer: name, Setting: setting,
			Message: "consumer " + name + " on " + stream + " " + fmt.Sprintf(format, args...)})
	}
	fix := q.recreateConsumer(name)
	if have.DeliverSubject != "" {
		add(true, "deliver subject", "is a push consumer (deliver subject %s); Levee pulls: %s", have.DeliverSubject, fix)
	}
	if have.AckPolicy != jetstream.AckExplicitPolicy {
		add(true, "ack policy", "has ack policy %s; Levee needs explicit acks, one per job once its outcome is committed (the server cannot change an ack policy): %s",
			strings.TrimPrefix(strings.ToLower(have.AckPolicy.String()), "ack"), fix)
	}
	filters := have.FilterSubjects
	if have.FilterSubject != "" {
		filters = append([]string{have.FilterSubject}, filters...)
	}
	if len(filters) != 1 || filters[0] != want.FilterSubject {
		add(true, "filter subject", "filters %s; Levee needs %s, one kind per consumer: %s", subjectList(filters), want.FilterSubject, fix)
	}
	if have.DeliverPolicy != jetstream.DeliverAllPolicy {
		add(true, "deliver policy", "has deliver policy %s; Levee needs all, so that jobs stored before it was created are delivered (the server cannot change it): %s",
			deliverPolicyName(have.DeliverPolicy), fix)
	}
	if len(out) > 0 {
		return out // refused: nothing is updated
	}
	update := func(setting, what string, from, to any) {
		add(false, setting, "had %s %v; this worker sets %v (%s): workers of a kind must agree on it, and the last to start wins",
			setting, from, to, what)
	}
	if have.AckWait != want.AckWait {
		update("ack wait", "the lease Postgres keeps for the kind: ack_wait, plus ack_wait/3, plus a margin", have.AckWait, want.AckWait)
	}
	if have.MaxDeliver != want.MaxDeliver {
		update("max deliver", "the kind's max_deliveries", have.MaxDeliver, want.MaxDeliver)
	}
	if have.MaxAckPending != want.MaxAckPending {
		update("max ack pending", "the kind's fleet_concurrency", have.MaxAckPending, want.MaxAckPending)
	}
	if len(have.BackOff) > 0 {
		add(false, "backoff", "had a backoff list %v; this worker clears it: Levee computes retry delays itself (design rule 5)", have.BackOff)
	}
	if have.HeadersOnly {
		add(false, "headers only", "delivered headers only; this worker turns that off: a job needs its payload")
	}
	if have.InactiveThreshold > 0 {
		add(false, "inactive threshold", "had an inactive threshold of %s; this worker clears it: a kind's consumer outlives its workers", have.InactiveThreshold)
	}
	return out
}

// mergeConsumer is the update Levee makes to an existing kind consumer have: its own settings
// from want, every other setting as it was (so that the server accepts the update).
func mergeConsumer(have, want jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	cfg := have
	cfg.Durable, cfg.Name = want.Durable, want.Durable
	cfg.Description = want.Description
	cfg.AckWait, cfg.MaxDeliver, cfg.MaxAckPending = want.AckWait, want.MaxDeliver, want.MaxAckPending
	cfg.BackOff, cfg.HeadersOnly, cfg.InactiveThreshold = nil, false, 0
	return cfg
}

// subjectCovers reports whether every subject that s matches is matched by pattern too.
// Both may hold wildcards.
func subjectCovers(pattern, s string) bool {
	p, t := strings.Split(pattern, "."), strings.Split(s, ".")
	for i, tok := range p {
		if tok == ">" {
			return i < len(t)
		}
		if i >= len(t) || t[i] == ">" {
			return false
		}
		if tok != "*" && (t[i] == "*" || t[i] != tok) {
			return false
		}
	}
	return len(p) == len(t)
}

func subjectList(ss []string) string {
	if len(ss) == 0 {
		return "(none)"
	}
	return strings.Join(ss, ", ")
}

func retentionName(r jetstream.RetentionPolicy) string {
	switch r {
	case jetstream.LimitsPolicy:
		return "limits"
	case jetstream.InterestPolicy:
		return "interest"
	case jetstream.WorkQueuePolicy:
		return "work-queue"
	}
	return r.String()
}

func deliverPolicyName(p jetstream.DeliverPolicy) string {
	return strings.ReplaceAll(p.String(), "_", " ")
}
