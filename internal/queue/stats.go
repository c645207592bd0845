package queue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// This file holds the operator's views of the streams: WorkStats and DeadStats count what the
// work and dead-letter streams hold by kind, and OrphanReader takes the jobs of a kind no worker
// serves out of the work stream.

// MaxScanSubjects is WorkStats' default cap on its scan of the work stream's subjects. One job is
// one subject, so the scan costs one entry per waiting job; past the cap, kinds whose subjects
// sort after the first MaxScanSubjects are not found. It is also the largest page the server
// sends (JSMaxSubjectDetails), so the default scan is one request.
const MaxScanSubjects = 100_000

// apiTimeout bounds the raw JetStream API requests made here when ctx has no deadline, as the
// jetstream package does for its own.
const apiTimeout = 5 * time.Second

// KindCounts is what the work stream holds of one kind.
type KindCounts struct {
	Kind string
	// Consumer is true when the kind's durable consumer exists: a worker served the kind once.
	Consumer bool
	// Pending counts messages not yet delivered, InFlight those delivered and not yet acked,
	// Redelivered those delivered more than once and not yet acked. They come from the kind's
	// consumer: zero without one.
	Pending     uint64
	InFlight    int
	Redelivered int
	// Stored counts the kind's messages found by the subject scan (for a kind without a
	// consumer past the scan's cap: its subjects, one per job). Zero when no scan ran.
	Stored uint64
	// Oldest is when the oldest message of the kind still in the stream was stored; zero if
	// it holds none.
	Oldest time.Time
}

// WorkStats is a snapshot of the work stream by kind.
type WorkStats struct {
	// Kinds holds every kind with a durable consumer or with messages in the stream.
	Kinds map[string]*KindCounts
	// Messages counts the messages in the stream.
	Messages uint64
	// Scanned is true when the stream held messages that no consumer accounts for (not
	// pending or in flight on any consumer: jobs of kinds no worker serves, or jobs whose
	// deliveries ran out), so that the subjects were scanned to find their kinds.
	Scanned bool
	// Capped is true when the scan stopped at its cap: kinds past it are missing.
	Capped bool
	// Strays counts the messages whose subject is no job's (design rule 35): no id token
	// (<ns>.jobs.<kind>), tokens after the id (<ns>.jobs.<kind>.<id>.<more>), or a kind
	// token that is no valid kind (<ns>.jobs.Charge.1). No kind's consumer takes them; workers
	// dead-letter the first two sorts as malformed (OpenStrays). Counted from the stray
	// consumers when they exist, and from the subject scan when one runs (the larger count).
	Strays uint64
}

// WorkStats counts the work stream's messages by kind. Kinds with a durable consumer are
// counted from the consumer's info (one request lists them all). Only when the stream holds
// more messages than the consumers account for are the stream's subjects scanned (stream info
// with a subject filter, one entry per waiting job, at most maxSubjects of them; <= 0 means
// MaxScanSubjects), to find the kinds that no worker serves. The oldest message of each kind
// is one direct lookup (a message get with next_by_subj, which NATS 2.9.10 and later support).
//
// The snapshot is not atomic: under load, counts read by different requests may disagree by
// the jobs published or acked in between. It returns ErrNoStream when the work stream does not
// exist.
func (q *Queue) WorkStats(ctx context.Context, maxSubjects int) (*WorkStats, error) {
	maxSubjects = cmp.Or(max(maxSubjects, 0), MaxScanSubjects)
	stream, err := q.js.Stream(ctx, q.names.JobsStream())
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", q.names.JobsStream(), Translate(err))
	}
	ws := &WorkStats{Kinds: map[string]*KindCounts{}}
	// Consumers first, then the stream: a job published in between makes the stream look
	// larger than its consumers, which costs a scan but hides nothing.
	var accounted uint64
	list := stream.ListConsumers(ctx)
	for ci := range list.Info() {
		accounted += ci.NumPending + uint64(max(ci.NumAckPending, 0))
		if q.names.isStrayConsumer(ci.Name) {
			ws.Strays += ci.NumPending + uint64(max(ci.NumAckPending, 0))
			continue
		}
		kind, ok := q.kindOfConsumer(ci)
		if !ok {
			continue
		}
		ws.Kinds[kind] = &KindCounts{
			Kind: kind, Consumer: true, Pending: ci.NumPending,
			InFlight: ci.NumAckPending, Redelivered: ci.NumRedelivered,
		}
	}
	if err := list.Err(); err != nil {
		return nil, fmt.Errorf("list consumers of %s: %w", q.names.JobsStream(), Translate(err))
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", q.names.JobsStream(), Translate(err))
	}
	ws.Messages = info.State.Msgs
	if info.State.Msgs > accounted {
		if err := q.scanKinds(ctx, ws, maxSubjects); err != nil {
			return nil, err
		}
	}
	for _, kc := range ws.Kinds {
		if kc.Pending == 0 && kc.InFlight == 0 && kc.Stored == 0 {
			continue
		}
		raw, err := stream.GetMsg(ctx, max(info.State.FirstSeq, 1), jetstream.WithGetMsgSubject(q.names.KindFilter(kc.Kind)))
		switch {
		case err == nil:
			kc.Oldest = raw.Time
		case !errors.Is(err, jetstream.ErrMsgNotFound): // not found: acked meanwhile
			return nil, fmt.Errorf("oldest job of kind %q: %w", kc.Kind, Translate(err))
		}
	}
	return ws, nil
}

// kindOfConsumer reports the kind whose durable consumer ci is: named <ns>_<kind> and filtered
// to <ns>.jobs.<kind>.*. Other consumers (an OrphanReader's, an operator's) serve no kind.
func (q *Queue) kindOfConsumer(ci *jetstream.ConsumerInfo) (string, bool) {
	kind, _, err := q.names.parseJobSubject(ci.Config.FilterSubject)
	if err != nil || ValidateKind(kind) != nil {
		return "", false
	}
	return kind, ci.Name == q.names.Consumer(kind) && ci.Config.FilterSubject == q.names.KindFilter(kind)
}

// scanKinds adds to ws the messages of each kind found in the first maxSubjects subjects of
// the work stream, in subject order. When capped, the kinds found without a consumer are
// counted again on their own (by subjects: one request each, answered with a count only).
func (q *Queue) scanKinds(ctx context.Context, ws *WorkStats, maxSubjects int) error {
	ws.Scanned = true
	subjects, total, err := q.streamSubjects(ctx, q.names.JobsSubjects(), maxSubjects)
	if err != nil {
		return err
	}
	var strays uint64
	for _, subject := range slices.Sorted(maps.Keys(subjects)) {
		kind, _, err := q.names.parseJobSubject(subject)
		if err != nil || ValidateKind(kind) != nil {
			strays += subjects[subject] // no job's subject (design rule 35)
			continue
		}
		kc := ws.Kinds[kind]
		if kc == nil {
			kc = &KindCounts{Kind: kind}
			ws.Kinds[kind] = kc
		}
		kc.Stored += subjects[subject]
	}
	ws.Strays = max(ws.Strays, strays)
	ws.Capped = total > len(subjects)
	if !ws.Capped {
		return nil
	}
	for _, kc := range ws.Kinds {
		if kc.Consumer || kc.Stored == 0 {
			continue
		}
		_, n, err := q.streamSubjects(ctx, q.names.KindFilter(kc.Kind), 0)
		if err != nil {
			return err
		}
		kc.Stored = max(kc.Stored, uint64(n))
	}
	return nil
}

// streamInfoPage is the part of a stream info answer that streamSubjects reads.
type streamInfoPage struct {
	Error *jetstream.APIError `json:"error"`
	Total int                 `json:"total"`
	State struct {
		Subjects map[string]uint64 `json:"subjects"`
	} `json:"state"`
}

// streamSubjects returns the message counts of the first limit subjects (in sorted order) of
// the work stream matching filter, and how many subjects match in all. limit 0 asks for the
// total only. The jetstream package's StreamInfo with WithSubjectFilter reads every page, with
// no cap, so the pages are requested here.
func (q *Queue) streamSubjects(ctx context.Context, filter string, limit int) (map[string]uint64, int, error) {
	subjects := map[string]uint64{}
	offset := 0
	if limit <= 0 {
		offset = 1 << 30 // past the end: the server answers with the total and no subjects
	}
	for {
		page, err := q.streamInfoPage(ctx, filter, offset)
		if err != nil {
			return nil, 0, err
		}
		maps.Copy(subjects, page.State.Subjects)
		if limit <= 0 {
			return subjects, page.Total, nil
		}
		if len(page.State.Subjects) == 0 || len(subjects) >= min(limit, page.Total) {
			if len(subjects) > limit { // keep the first limit, in the order the pages come
				for _, s := range slices.Sorted(maps.Keys(subjects))[limit:] {
					delete(subjects, s)
				}
			}
			return subjects, page.Total, nil
		}
		offset = len(subjects)
	}
}

func (q *Queue) streamInfoPage(ctx context.Context, filter string, offset int) (*streamInfoPage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, apiTimeout)
		defer cancel()
	}
	body, err := json.Marshal(struct {
		Filter string `json:"subjects_filter"`
		Offset int    `json:"offset,omitempty"`
	}{filter, offset})
	if err != nil {
		return nil, err
	}
	stream := q.names.JobsStream()
	resp, err := q.nc.RequestWithContext(ctx, "$JS.API.STREAM.INFO."+stream, body)
	if err != nil {
		return nil, fmt.Errorf("subjects of %s: %w", stream, Translate(err))
	}
	var page streamInfoPage
	if err := json.Unmarshal(resp.Data, &page); err != nil {
		return nil, fmt.Errorf("subjects of %s: %w", stream, err)
	}
	if page.Error != nil {
		if page.Error.ErrorCode == jetstream.JSErrCodeStreamNotFound {
			return nil, fmt.Errorf("subjects of %s: %w", stream, Translate(jetstream.ErrStreamNotFound))
		}
		return nil, fmt.Errorf("subjects of %s: %w", stream, page.Error)
	}
	return &page, nil
}

// DeadCounts counts the dead-letter stream's entries.
type DeadCounts struct {
	Total    int
	ByKind   map[string]int
	ByReason map[string]int
}

// DeadStats counts the dead-letter stream's entries by kind and by reason (an entry without a
// reason counts as "unknown"), in one pass over the entries' headers (EachDeadLetter with
// HeadersOnly). It returns an error wrapping ErrNoStream when the stream does not exist.
func (q *Queue) DeadStats(ctx context.Context) (*DeadCounts, error) {
	dc := &DeadCounts{ByKind: map[string]int{}, ByReason: map[string]int{}}
	err := q.EachDeadLetter(ctx, DeadFilter{HeadersOnly: true}, func(e DeadLetter) bool {
		dc.Total++
		dc.ByKind[e.Kind]++
		dc.ByReason[cmpOr(e.Reason, "unknown")]++
		return true
	})
	if err != nil {
		return nil, err
	}
	return dc, nil
}

// ErrKindTaken means another consumer reads the kind's jobs from the work stream: a worker
// started serving it, or another capture runs. The stream (WorkQueue retention) allows one
// consumer per job.
var ErrKindTaken = errors.New("another consumer reads this kind's jobs")

// jsWorkQueueNotUnique is JetStream's error code for a consumer whose filter overlaps another
// consumer's on a WorkQueue stream.
const jsWorkQueueNotUnique jetstream.ErrorCode = 10100

// OrphanReader takes the jobs of one kind out of the work stream, for an operator to
// dead-letter them: jobs of a kind that no worker serves wait there forever otherwise. It
// reads the jobs stored when it was opened, oldest first, and no later ones.
//
// It reads through a temporary durable consumer <ns>__orphans_<kind> (two underscores: no
// kind's consumer can have that name, since a kind starts with a letter or digit), deleted by
// Close and, should the process die first, by the server after 30s of inactivity; meanwhile a
// worker of the kind cannot create its consumer. With viaKindConsumer it reads through the
// kind's own durable consumer instead (a kind once served, whose workers are gone), sharing
// the jobs with any worker still pulling from it.
//
// An OrphanReader is not safe for concurrent use.
type OrphanReader struct {
	q       *Queue
	stream  jetstream.Stream
	cons    jetstream.Consumer
	name    string
	temp    bool
	lastSeq uint64
	done    bool
}

// orphanInactive is how long the server keeps an OrphanReader's consumer once nobody pulls.
const orphanInactive = 30 * time.Second

// OpenOrphanReader opens a reader of kind's jobs; close it with Close. It returns an error
// wrapping ErrKindTaken when another consumer reads the kind (and viaKindConsumer is false),
// and ErrNoStream when the work stream does not exist.
func (q *Queue) OpenOrphanReader(ctx context.Context, kind string, viaKindConsumer bool) (*OrphanReader, error) {
	if err := ValidateKind(kind); err != nil {
		return nil, err
	}
	stream, err := q.js.Stream(ctx, q.names.JobsStream())
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", q.names.JobsStream(), Translate(err))
	}
	r := &OrphanReader{q: q, stream: stream}
	if viaKindConsumer {
		r.name = q.names.Consumer(kind)
		r.cons, err = stream.Consumer(ctx, r.name)
	} else {
		r.name, r.temp = q.names.OrphanConsumer(kind), true
		r.cons, err = stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:           r.name,
			Description:       "Levee: capture of kind " + kind + " jobs that no worker serves",
			FilterSubject:     q.names.KindFilter(kind),
			AckPolicy:         jetstream.AckExplicitPolicy,
			AckWait:           time.Minute,
			DeliverPolicy:     jetstream.DeliverAllPolicy,
			InactiveThreshold: orphanInactive,
		})
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsWorkQueueNotUnique {
			return nil, fmt.Errorf("read kind %q: %w (%w)", kind, ErrKindTaken, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", r.name, q.names.JobsStream(), Translate(err))
	}
	info, err := stream.Info(ctx)
	if err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("stream %s: %w", q.names.JobsStream(), Translate(err))
	}
	r.lastSeq = info.State.LastSeq
	return r, nil
}

// Next returns up to n of the kind's jobs that are waiting now; none (and a nil error) when
// every job stored before Open has been returned. Settle each with Ack, or leave it: it goes
// back to the stream when the reader is closed (or, through the kind's consumer, after its
// AckWait).
func (r *OrphanReader) Next(ctx context.Context, n int) ([]*Delivery, error) {
	if r.done || n <= 0 {
		return nil, ctx.Err()
	}
	batch, err := r.cons.FetchNoWait(n)
	if err != nil {
		return nil, fmt.Errorf("fetch %d from %s: %w", n, r.name, Translate(err))
	}
	var out []*Delivery
	for msg := range batch.Messages() {
		d := r.q.newDelivery(msg)
		if d.StreamSeq > r.lastSeq || d.StreamSeq == 0 {
			r.done = true
			_ = msg.Nak() // stored after Open (or unreadable): not ours to take
			continue
		}
		out = append(out, d)
		if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
			r.done = true
		}
	}
	if err := batch.Error(); err != nil && len(out) == 0 {
		return nil, fmt.Errorf("fetch %d from %s: %w", n, r.name, Translate(err))
	}
	if len(out) == 0 {
		r.done = true
	}
	return out, ctx.Err()
}

// Ack removes d's message from the work stream and waits for the server to confirm it.
func (r *OrphanReader) Ack(ctx context.Context, d *Delivery) error {
	if err := d.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("ack job %s: %w", d.Env.ID, Translate(err))
	}
	return nil
}

// Close deletes the reader's temporary consumer, even when ctx has ended; the jobs it
// returned and that were not acked go back to the stream. Closing a reader through the kind's
// own consumer changes nothing.
func (r *OrphanReader) Close(ctx context.Context) error {
	if !r.temp {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	err := r.stream.DeleteConsumer(ctx, r.name)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete consumer %s (the server deletes it after %s anyway): %w", r.name, orphanInactive, Translate(err))
	}
	return nil
}
