package queue

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Names derives every JetStream name from a namespace. The zero value is not usable; build one
// with NewNames.
type Names struct {
	ns string
}

var (
	namespaceRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)
	kindRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// MaxIDLen and MaxKeyLen bound job ids and idempotency keys.
const (
	MaxIDLen  = 128
	MaxKeyLen = 256
)

// NewNames validates namespace and returns its Names.
func NewNames(namespace string) (Names, error) {
	if err := ValidateNamespace(namespace); err != nil {
		return Names{}, err
	}
	return Names{ns: namespace}, nil
}

// ValidateNamespace reports whether ns can name streams, subjects and a Postgres schema.
func ValidateNamespace(ns string) error {
	if !namespaceRE.MatchString(ns) {
		return fmt.Errorf("invalid namespace %q: use a lowercase letter then up to 39 of [a-z0-9_]", ns)
	}
	return nil
}

// ValidateKind reports whether kind is one subject token of [a-z0-9][a-z0-9_-]*.
func ValidateKind(kind string) error {
	if !kindRE.MatchString(kind) {
		return fmt.Errorf("invalid kind %q: a kind is 1-64 characters of [a-z0-9_-], starting with a letter or digit", kind)
	}
	return nil
}

// ValidateID reports whether id can be a job id: one subject token of printable ASCII without
// '.', '*', '>' or spaces, at most MaxIDLen bytes.
func ValidateID(id string) error {
	if id == "" {
		return errors.New("invalid job id: empty")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("invalid job id %.20q…: longer than %d bytes", id, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return fmt.Errorf("invalid job id %q: use printable ASCII without spaces, '.', '*' or '>'", id)
		}
	}
	return nil
}

// BoundedID returns id when it is a valid job id, else a stand-in that is one: "malformed-"
// and 32 hex digits of the id's SHA-256 (the same for the same id). A message whose id cannot be
// stored (a 3,500-byte subject token, say) is recorded and dead-lettered under its stand-in
// (design rule 28).
func BoundedID(id string) string {
	if ValidateID(id) == nil {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "malformed-" + hex.EncodeToString(sum[:16])
}

// ValidateKey reports whether key can be an idempotency key: non-empty, at most MaxKeyLen
// bytes, valid UTF-8 (the ledger stores it as text, design rule 28), no control characters
// and no space at either end (it travels in a header, and NATS trims header values, so " a"
// would arrive as "a").
func ValidateKey(key string) error {
	if key == "" {
		return errors.New("invalid idempotency key: empty")
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("invalid idempotency key: longer than %d bytes", MaxKeyLen)
	}
	if !utf8.ValidString(key) {
		return errors.New("invalid idempotency key: not valid UTF-8")
	}
	if strings.ContainsFunc(key, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return errors.New("invalid idempotency key: contains control characters")
	}
	if key[0] == ' ' || key[len(key)-1] == ' ' {
		return fmt.Errorf("invalid idempotency key %q: starts or ends with a space, which NATS headers drop; trim it", key)
	}
	return nil
}

// Namespace returns the namespace.
func (n Names) Namespace() string { return n.ns }

// Every stream, consumer, bucket and subject name Levee uses is made below, from the
// namespace (<ns>, e.g. levee; <NS> is its upper case).

// JobsStream is the work stream's name, e.g. LEVEE_JOBS.
func (n Names) JobsStream() string { return n.upper() + "_JOBS" }

// DLQStream is the dead-letter stream's name, e.g. LEVEE_DLQ.
func (n Names) DLQStream() string { return n.upper() + "_DLQ" }

// AdvisoriesStream is the stream capturing the work stream's max-deliveries advisories, e.g.
// LEVEE_ADVISORIES.
func (n Names) AdvisoriesStream() string { return n.upper() + "_ADVISORIES" }

// AdvisoryConsumer is the durable consumer of the advisories stream: <ns>_max_deliveries.
func (n Names) AdvisoryConsumer() string { return n.ns + "_max_deliveries" }

// AdvisorySubject matches the max-deliveries advisories of every consumer on the work stream.
func (n Names) AdvisorySubject() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + n.JobsStream() + ".*"
}

// FleetBucket is the fleet registry's KV bucket, e.g. LEVEE_WORKERS.
func (n Names) FleetBucket() string { return n.upper() + "_WORKERS" }

// ControlBucket is the operator commands' KV bucket, e.g. LEVEE_CONTROL.
func (n Names) ControlBucket() string { return n.upper() + "_CONTROL" }

// BreakersBucket is the shared circuit breakers' KV bucket, e.g. LEVEE_BREAKERS.
func (n Names) BreakersBucket() string { return n.upper() + "_BREAKERS" }

// KVStream is the stream NATS keeps a KV bucket in, and KVKeyPrefix the prefix of its
// subjects (a key's subject is the prefix and the key); NATS names them.
func KVStream(bucket string) string { return "KV_" + bucket }

// KVKeyPrefix is the prefix of the subjects of a KV bucket's keys: $KV.<bucket>.
func KVKeyPrefix(bucket string) string { return "$KV." + bucket + "." }

// BreakerSubject is the core NATS subject of kind's breaker reports: <ns>.breaker.<kind>.
func (n Names) BreakerSubject(kind string) string { return n.ns + ".breaker." + kind }

func (n Names) upper() string { return strings.ToUpper(n.ns) }

func (n Names) jobsPrefix() string { return n.ns + ".jobs." }

// JobSubject is the subject a job is published on: <ns>.jobs.<kind>.<id>.
func (n Names) JobSubject(kind, id string) string { return n.ns + ".jobs." + kind + "." + id }

// JobsSubjects is the work stream's subject filter: <ns>.jobs.>.
func (n Names) JobsSubjects() string { return n.ns + ".jobs.>" }

// KindFilter matches every job of kind: <ns>.jobs.<kind>.*.
func (n Names) KindFilter(kind string) string { return n.ns + ".jobs." + kind + ".*" }

// AnyKindSubject matches job id under any kind: <ns>.jobs.*.<id>.
func (n Names) AnyKindSubject(id string) string { return n.ns + ".jobs.*." + id }

// DLQSubject is the subject of a job's dead-letter copy: <ns>.dlq.<kind>.<id>.
func (n Names) DLQSubject(kind, id string) string { return n.ns + ".dlq." + kind + "." + id }

// DLQSubjects is the dead-letter stream's subject filter.
func (n Names) DLQSubjects() string { return n.ns + ".dlq.>" }

// DLQKindFilter matches the dead-letter copies of kind: <ns>.dlq.<kind>.*.
func (n Names) DLQKindFilter(kind string) string { return n.ns + ".dlq." + kind + ".*" }

// DLQAnyKindSubject matches the dead-letter copy of job id under any kind: <ns>.dlq.*.<id>.
func (n Names) DLQAnyKindSubject(id string) string { return n.ns + ".dlq.*." + id }

// Consumer is the durable consumer name for kind, e.g. levee_charge.
func (n Names) Consumer(kind string) string { return n.ns + "_" + kind }

// OrphanConsumer names the consumer an OrphanReader reads kind through: <ns>__orphans_<kind>.
func (n Names) OrphanConsumer(kind string) string { return n.ns + "__orphans_" + kind }

// StrayConsumers are the stray consumers' names and filters: <ns>__strays_noid on
// <ns>.jobs.* (no id token) and <ns>__strays_extra on <ns>.jobs.*.*.> (tokens after the id).
func (n Names) StrayConsumers() [2][2]string {
	return [2][2]string{
		{n.ns + "__strays_noid", n.ns + ".jobs.*"},
		{n.ns + "__strays_extra", n.ns + ".jobs.*.*.>"},
	}
}

// parseJobSubject splits <ns>.jobs.<kind>.<id>.
func (n Names) parseJobSubject(subject string) (kind, id string, err error) {
	prefix := n.jobsPrefix()
	rest, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return "", "", fmt.Errorf("subject %q is not under %s", subject, n.JobsSubjects())
	}
	kind, id, ok = strings.Cut(rest, ".")
	if !ok || strings.Contains(id, ".") {
		return "", "", fmt.Errorf("subject %q is not %s<kind>.<id>", subject, prefix)
	}
	return kind, id, nil
}
