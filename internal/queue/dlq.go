package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/levee-dev/levee/leveetype"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a dead-letter copy, beside the job's own headers.
const (
	HeaderJobID         = "Levee-Job-Id"
	HeaderKind          = "Levee-Kind"
	HeaderReason        = "Levee-Reason"
	HeaderAttempts      = "Levee-Attempts"
	HeaderLastError     = "Levee-Last-Error"
	HeaderFirstFailedAt = "Levee-First-Failed-At"
	HeaderFailedAt      = "Levee-Failed-At"
	HeaderWorker        = "Levee-Worker"
	// HeaderOriginalSubject is the work-stream subject of a message dead-lettered under
	// another name: a job id that is no valid job id (design rule 28), or a subject that is
	// no job's (design rule 35). Header-safe, at most maxOriginalSubject bytes.
	HeaderOriginalSubject = "Levee-Original-Subject"
)

// maxOriginalSubject bounds the Levee-Original-Subject header.
const maxOriginalSubject = 512

// maxHeaderError bounds the error text carried in a DLQ header.
const maxHeaderError = 1024

// DeadInfo says why a job was dead-lettered.
type DeadInfo struct {
	Reason        string // short code: permanent_error, max_attempts, malformed, ...
	Attempts      int
	LastError     string
	FirstFailedAt time.Time
	FailedAt      time.Time
	Worker        string
	// SourceSeq is the job message's sequence in the work stream. With the job id it makes
	// the copy's Nats-Msg-Id: redeliveries of one message copy it once, while a replayed job
	// (a new message) that dies again is copied again.
	SourceSeq uint64
	// OriginalSubject, if set, is the message's subject in the work stream, kept in the
	// Levee-Original-Subject header (a stray message's, design rule 35). A job whose id is no
	// valid job id gets the header without it.
	OriginalSubject string
}

// DLQMsgID is the Nats-Msg-Id of the dead-letter copy of job jobID from work-stream message
// seq, so that copying the same message twice stores it once.
func DLQMsgID(jobID string, seq uint64) string {
	return "dlq:" + jobID + ":" + strconv.FormatUint(seq, 10)
}

// DeadLetter copies a job to the dead-letter stream and waits for the stream's acknowledgement.
// raw is the message body as delivered (the payload, even if it was malformed); hdr are the
// original headers, kept on the copy except JetStream's own (Nats-*): a publish check such
// as Nats-Expected-Last-Sequence, meant for the work stream, would make the DLQ refuse the
// copy forever (design rule 34). Copying the same job twice stores it once.
//
// A job whose id is no valid job id (3,500 characters, say: design rule 28) is copied under
// BoundedID(id), as its subject token, Levee-Job-Id and key, so that `enqueue dlq list` and
// `show` can name it; its original subject is kept in the Levee-Original-Subject header.
func (q *Queue) DeadLetter(ctx context.Context, env Envelope, raw []byte, hdr nats.Header, info DeadInfo) error {
	kind, id, key := env.Kind, env.ID, env.Key
	if ValidateKind(kind) != nil || id == "" {
		return fmt.Errorf("dead-letter: job has no valid kind and id (kind %q, id %.64q)", kind, id)
	}
	original := info.OriginalSubject
	if ValidateID(id) != nil {
		original = cmpOr(original, q.names.JobSubject(kind, id))
		if key == id {
			key = ""
		}
		id = BoundedID(id)
	}
	if ValidateKey(key) != nil {
		key = id
	}
	m := nats.NewMsg(q.names.DLQSubject(kind, id))
	m.Data = raw
	for k, vs := range hdr {
		if isJetStreamHeader(k) {
			continue
		}
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
	failedAt := info.FailedAt
	if failedAt.IsZero() {
		failedAt = time.Now()
	}
	firstFailed := info.FirstFailedAt
	if firstFailed.IsZero() {
		firstFailed = failedAt
	}
	m.Header.Set(HeaderMsgID, DLQMsgID(id, info.SourceSeq))
	m.Header.Set(HeaderJobID, id)
	m.Header.Set(HeaderKind, kind)
	m.Header.Set(HeaderKey, key)
	m.Header.Set(HeaderReason, info.Reason)
	m.Header.Set(HeaderAttempts, strconv.Itoa(info.Attempts))
	if info.LastError != "" {
		m.Header.Set(HeaderLastError, headerSafe(info.LastError, maxHeaderError))
	}
	m.Header.Set(HeaderFirstFailedAt, firstFailed.UTC().Format(time.RFC3339Nano))
	m.Header.Set(HeaderFailedAt, failedAt.UTC().Format(time.RFC3339Nano))
	if info.Worker != "" {
		m.Header.Set(HeaderWorker, info.Worker)
	}
	if original != "" {
		m.Header.Set(HeaderOriginalSubject, headerSafe(original, maxOriginalSubject))
	}
	// The publish adds its own Nats-Expected-Stream header: room is kept for it.
	expect := len(jetstream.ExpectedStreamHeader) + len(": ") + len(q.names.DLQStream()) + len("\r\n")
	fitCopy(m, q.dlqLimit(ctx)-expect)
	_, err := q.js.PublishMsg(ctx, m, jetstream.WithExpectStream(q.names.DLQStream()))
	if isTooBig(err) {
		// The DLQ's limit changed since it was read: read it again, shrink, try once more.
		q.forgetDLQLimit()
		fitCopy(m, q.dlqLimit(ctx)-expect)
		_, err = q.js.PublishMsg(ctx, m, jetstream.WithExpectStream(q.names.DLQStream()))
	}
	if err != nil {
		return fmt.Errorf("dead-letter job %s: %w", id, Translate(err))
	}
	return nil
}

// HeaderPayloadTruncated marks a dead-letter copy whose body was cut to fit the server's
// max_payload (or the DLQ's max message size): its value is the original body's size in bytes.
// Such a copy cannot be replayed as it is (replay it with a payload of its own).
const HeaderPayloadTruncated = "Levee-Payload-Truncated"

// copyHeaderSlack is room kept below the limits, against rounding in what is counted.
const copyHeaderSlack = 32

// maxHeaderBlock is the largest header block JetStream stores (err_code 10097 beyond it).
const maxHeaderBlock = 65535

// copyHeaders are the headers a dead-letter copy keeps when it must shrink: those Levee sets
// on it, and the job's own that the copy is read by. Any other header of the original (the
// user's, or a Levee-* one a publisher invented) goes first.
var copyHeaders = map[string]bool{
	HeaderMsgID: true, HeaderJobID: true, HeaderKind: true, HeaderKey: true, HeaderReason: true,
	HeaderAttempts: true, HeaderLastError: true, HeaderFirstFailedAt: true, HeaderFailedAt: true,
	HeaderWorker: true, HeaderOriginalSubject: true, HeaderPayloadTruncated: true,
	HeaderMaxAttempts: true, HeaderEnqueuedAt: true, HeaderFallbackOf: true,
}

// optionalCopyHeaders are dropped, last, when even the essential headers do not fit (a DLQ
// whose max message size is tiny).
var optionalCopyHeaders = []string{HeaderLastError, HeaderWorker, HeaderOriginalSubject, HeaderFirstFailedAt,
	HeaderEnqueuedAt, HeaderMaxAttempts, HeaderFallbackOf}

// fitCopy shrinks a dead-letter copy until it fits limit bytes (headers and body, as NATS
// counts max_payload) and its header block fits JetStream's 64 KiB: a job near the payload
// bound gains about 1 KiB of Levee-* headers on its copy, a job may carry large headers of its
// own, and a copy the DLQ refuses would leave the job neither done nor dead, forever (design
// rule 32). In turn it drops the original's own headers, cuts the last error to a line, cuts
// the body (marking it with HeaderPayloadTruncated and the original size), and drops the
// optional Levee-* headers. limit <= 0 means no limit but the header block's.
func fitCopy(m *nats.Msg, limit int) {
	fits := func() bool {
		h := headerSize(m)
		return h <= maxHeaderBlock-copyHeaderSlack && (limit <= 0 || h+len(m.Data) <= limit-copyHeaderSlack)
	}
	if fits() {
		return
	}
	for k := range m.Header {
		if !copyHeaders[k] {
			delete(m.Header, k)
		}
	}
	for _, k := range []string{HeaderLastError, HeaderOriginalSubject, HeaderKey} {
		if v := m.Header.Get(k); len(v) > 200 {
			m.Header.Set(k, headerSafe(v, 200))
		}
	}
	if fits() {
		return
	}
	if over := headerSize(m) + len(m.Data) + len(HeaderPayloadTruncated) + 16 - (limit - copyHeaderSlack); limit > 0 && over > 0 {
		m.Header.Set(HeaderPayloadTruncated, strconv.Itoa(len(m.Data)))
		m.Data = m.Data[:max(len(m.Data)-over, 0)]
	}
	for _, k := range optionalCopyHeaders {
		if fits() {
			return
		}
		m.Header.Del(k)
	}
}

// headerSize is the size of a message's encoded header block.
func headerSize(m *nats.Msg) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// dlqLimitTTL is how long the DLQ stream's max message size is trusted before it is read again
// (an operator may change it while workers run).
const dlqLimitTTL = time.Minute

// dlqLimit is the largest dead-letter copy the server and the DLQ stream accept: the
// connection's max_payload, or the stream's max message size when it is smaller (read at most
// once a minute, or again at once after forget).
func (q *Queue) dlqLimit(ctx context.Context) int {
	limit := int(q.nc.MaxPayload())
	q.dlqMu.Lock()
	defer q.dlqMu.Unlock()
	if q.dlqReadAt.IsZero() || time.Since(q.dlqReadAt) > dlqLimitTTL {
		stream, err := q.js.Stream(ctx, q.names.DLQStream())
		if err != nil {
			return limit
		}
		q.dlqMaxMsgSize, q.dlqReadAt = int(stream.CachedInfo().Config.MaxMsgSize), time.Now()
	}
	if q.dlqMaxMsgSize > 0 {
		return min(limit, q.dlqMaxMsgSize)
	}
	return limit
}

// forgetDLQLimit makes the next dlqLimit read the DLQ stream's limit again.
func (q *Queue) forgetDLQLimit() {
	q.dlqMu.Lock()
	q.dlqReadAt = time.Time{}
	q.dlqMu.Unlock()
}

// isTooBig reports whether the server refused a message for its size (max_payload, a stream's
// max message size, the header block's limit).
func isTooBig(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == 10054 || apiErr.ErrorCode == 10097) {
		return true
	}
	return errors.Is(err, nats.ErrMaxPayload)
}

// isJetStreamHeader reports whether a header is one of JetStream's own (Nats-Msg-Id,
// Nats-Expected-*, Nats-TTL, Nats-Rollup, ...): a publish control, never a job's.
func isJetStreamHeader(name string) bool {
	return len(name) >= 5 && strings.EqualFold(name[:5], "nats-")
}

// DeadLettered reports whether job id of kind has a copy in the dead-letter stream (under
// BoundedID(id), as DeadLetter stores it).
func (q *Queue) DeadLettered(ctx context.Context, kind, id string) (bool, error) {
	id = BoundedID(id)
	stream, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return false, fmt.Errorf("look up stream %s: %w", q.names.DLQStream(), Translate(err))
	}
	_, err = stream.GetLastMsgForSubject(ctx, q.names.DLQSubject(kind, id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, Translate(err)
}

// DeadLetter is one job in the dead-letter stream: the public DeadJob, and what only the
// queue needs (when the entry was stored, its raw headers).
type DeadLetter struct {
	leveetype.DeadJob
	// Time is when the entry was stored; Header holds its headers as stored.
	Time   time.Time
	Header nats.Header
}

func entryFrom(subject string, hdr nats.Header, data []byte, seq uint64, at time.Time) DeadLetter {
	attempts, _ := strconv.Atoi(hdr.Get(HeaderAttempts))
	first, _ := time.Parse(time.RFC3339Nano, hdr.Get(HeaderFirstFailedAt))
	failed, _ := time.Parse(time.RFC3339Nano, hdr.Get(HeaderFailedAt))
	headers := make(map[string]string, len(hdr))
	for k := range hdr {
		headers[k] = hdr.Get(k)
	}
	payload := json.RawMessage(data)
	if !json.Valid(payload) { // a malformed job (or an empty body): keep its bytes readable
		payload, _ = json.Marshal(string(data))
	}
	e := DeadLetter{DeadJob: leveetype.DeadJob{
		ID: hdr.Get(HeaderJobID), Kind: hdr.Get(HeaderKind), Key: hdr.Get(HeaderKey),
		Reason: hdr.Get(HeaderReason), Attempts: attempts, LastError: hdr.Get(HeaderLastError),
		FirstFailedAt: first, FailedAt: failed, Worker: hdr.Get(HeaderWorker),
		Payload: payload, Headers: headers, Sequence: seq,
	}, Time: at, Header: hdr}
	if e.FailedAt.IsZero() {
		e.FailedAt = at
	}
	if e.FirstFailedAt.IsZero() {
		e.FirstFailedAt = e.FailedAt
	}
	if e.ID == "" || e.Kind == "" { // a copy made by hand: fall back to the subject
		if parts := strings.Split(subject, "."); len(parts) == 4 {
			e.Kind, e.ID = cmpOr(e.Kind, parts[2]), cmpOr(e.ID, parts[3])
		}
	}
	if e.Key == "" {
		e.Key = e.ID
	}
	return e
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// GetDeadLetter returns the dead-letter copy of job id (any kind), or ErrNotFound.
func (q *Queue) GetDeadLetter(ctx context.Context, id string) (*DeadLetter, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	stream, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", q.names.DLQStream(), Translate(err))
	}
	raw, err := stream.GetLastMsgForSubject(ctx, q.names.DLQAnyKindSubject(id))
	if err != nil {
		return nil, Translate(err)
	}
	e := entryFrom(raw.Subject, raw.Header, raw.Data, raw.Sequence, raw.Time)
	return &e, nil
}

// DeadFilter selects dead-letter entries. Zero fields select everything.
type DeadFilter struct {
	Kind   string
	Reason string
	// FailedAfter and FailedBefore bound the time of death (FailedAt).
	FailedAfter  time.Time
	FailedBefore time.Time
	// HeadersOnly reads the entries without their payloads (for counting).
	HeadersOnly bool
	// AfterSeq and UpToSeq, when not zero, bound the entries' DLQ sequences: above AfterSeq,
	// at most UpToSeq. An incremental count reads only the entries stored since it last
	// read.
	AfterSeq uint64
	UpToSeq  uint64
}

// Match reports whether e passes the filter.
func (f DeadFilter) Match(e *DeadLetter) bool {
	switch {
	case f.Kind != "" && e.Kind != f.Kind,
		f.Reason != "" && e.Reason != f.Reason,
		!f.FailedAfter.IsZero() && e.FailedAt.Before(f.FailedAfter),
		!f.FailedBefore.IsZero() && !e.FailedAt.Before(f.FailedBefore):
		return false
	}
	return true
}

// deadScanInactive is how long the server keeps a scan's ordered consumer once it stops
// reading: short, so that repeated scans (`enqueue stats --watch`, the metrics sampler) do not
// pile up consumers on the DLQ stream.
const deadScanInactive = 10 * time.Second

// EachDeadLetter calls fn for every dead-letter entry matching f, oldest first, until fn
// returns false or the entries stored when the call began are exhausted. It reads through an
// ordered consumer (filtered by kind on the server) that the server removes soon after.
func (q *Queue) EachDeadLetter(ctx context.Context, f DeadFilter, fn func(DeadLetter) bool) error {
	stream, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", q.names.DLQStream(), Translate(err))
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", q.names.DLQStream(), Translate(err))
	}
	last := info.State.LastSeq
	if f.UpToSeq > 0 {
		last = min(last, f.UpToSeq)
	}
	if info.State.Msgs == 0 || last <= f.AfterSeq {
		return nil
	}
	filter := q.names.DLQSubjects()
	if f.Kind != "" {
		filter = q.names.DLQKindFilter(f.Kind)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy,
		HeadersOnly: f.HeadersOnly, InactiveThreshold: deadScanInactive}
	switch {
	case f.AfterSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.AfterSeq+1
	case !f.FailedAfter.IsZero():
		// Stored no earlier than it died: a safe lower bound for the server to start from.
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &f.FailedAfter
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read %s: %w", q.names.DLQStream(), Translate(err))
	}
	seen := 0
	for {
		// Ask for no more than are left, so that the last fetch ends with its last message
		// rather than at its expiry.
		batch, err := cons.Fetch(min(256, max(int(info.State.Msgs)-seen, 1)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", q.names.DLQStream(), Translate(err))
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			seen++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > last {
				return nil
			}
			e := entryFrom(msg.Subject(), msg.Headers(), msg.Data(), md.Sequence.Stream, md.Timestamp)
			if f.Match(&e) && !fn(e) {
				return nil
			}
			if md.NumPending == 0 || md.Sequence.Stream == last {
				return nil
			}
		}
		if err := batch.Error(); err != nil && n == 0 {
			return fmt.Errorf("read %s: %w", q.names.DLQStream(), Translate(err))
		}
		if n == 0 || ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// DLQState returns the dead-letter stream's message count, its last sequence and when it was
// created, or an error wrapping ErrNoStream when it does not exist.
func (q *Queue) DLQState(ctx context.Context) (msgs, lastSeq uint64, created time.Time, err error) {
	stream, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("look up stream %s: %w", q.names.DLQStream(), Translate(err))
	}
	info := stream.CachedInfo()
	return info.State.Msgs, info.State.LastSeq, info.Created, nil
}

// DeleteDeadLetter removes the entry with DLQ sequence seq.
func (q *Queue) DeleteDeadLetter(ctx context.Context, seq uint64) error {
	stream, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", q.names.DLQStream(), Translate(err))
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("delete dead letter %d: %w", seq, Translate(err))
	}
	return nil
}

// Replay publishes env again as a new message (Nats-Msg-Id msgID, so that the original id's
// deduplication window does not swallow it) and waits for the stream to store it.
func (q *Queue) Replay(ctx context.Context, env Envelope, msgID string) error {
	m := q.names.Msg(env)
	m.Header.Set(HeaderMsgID, msgID)
	if _, err := q.js.PublishMsg(ctx, m, jetstream.WithExpectStream(q.names.JobsStream())); err != nil {
		return fmt.Errorf("republish job %s: %w", env.ID, Translate(err))
	}
	return nil
}

// headerSafe makes s fit in a header value: one line, at most n bytes.
func headerSafe(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r < ' ' {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		cut := n
		for cut > 0 && (s[cut]&0xC0) == 0x80 {
			cut--
		}
		s = s[:cut]
	}
	return s
}
