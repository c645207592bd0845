package leveetype

import (
	"cmp"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Policy is a kind's resilience policy, as the Go API takes it and the worker's YAML config
// spells it (the yaml keys below). Every zero field takes its default (WithDefaults); Validate
// is the one check of a policy, for both (design rule 39).
type Policy struct {
	// MaxAttempts is the attempt budget per job (a job's own --max-attempts overrides it).
	// Default 5; at most MaxAttemptsLimit.
	MaxAttempts int `yaml:"max_attempts"`
	// Timeout bounds each attempt. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// Backoff spaces retries: the delay before retry n is uniform in
	// [0, min(Max, Base·2^(n-1))). Defaults: Base 1s, Max 5m.
	Backoff Backoff `yaml:"backoff"`
	// Concurrency is how many jobs of the kind one worker runs at once. Default 10; at most
	// 10000.
	Concurrency int `yaml:"concurrency"`
	// AckWait is how long a job may run without a heartbeat before JetStream redelivers it
	// and its ledger lease ends; workers heartbeat every AckWait/3. Default 30s; at least 1s.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxDeliveries is JetStream's delivery limit for the kind, a safety net for messages
	// that crash workers (attempts are counted in Postgres). Default 100; must exceed
	// MaxAttempts.
	MaxDeliveries int `yaml:"max_deliveries"`
	// FleetConcurrency bounds the kind's jobs in flight across all workers (the consumer's
	// MaxAckPending). Default 1000.
	FleetConcurrency int `yaml:"fleet_concurrency"`
	// Rate limits the kind across all workers serving it, e.g. Rate{Events: 50, Per:
	// time.Second} ("50/s" in YAML); each worker takes an equal share of it. The zero Rate
	// means no limit.
	Rate Rate `yaml:"rate"`
	// Burst is the token bucket's size across the fleet. Default max(1, rate per second); it
	// needs a Rate.
	Burst int `yaml:"burst"`
	// Breaker configures the kind's circuit breaker; zero fields take its defaults.
	Breaker BreakerPolicy `yaml:"breaker"`
	// Fallback names a kind that takes over jobs whose attempts are exhausted, with the same
	// key and payload, instead of the DLQ. Permanent errors never fall back, and a fallback
	// job never falls back again. "" means none.
	Fallback string `yaml:"fallback"`
	// FallbackAfter also hands waiting jobs to Fallback, without attempts, once the breaker
	// has stayed open this long. 0 means never; otherwise at least 1s.
	FallbackAfter time.Duration `yaml:"fallback_after"`
}

// Backoff configures capped exponential backoff with full jitter.
type Backoff struct {
	Base time.Duration `yaml:"base"`
	Max  time.Duration `yaml:"max"`
}

// BreakerPolicy configures a kind's circuit breaker. Only downstream failures count (5xx,
// timeouts, connection errors, plain handler errors), not 4xx, permanent errors or
// cancellations. While it is open the kind's workers stop pulling: the backlog waits in the
// stream and no attempt is spent.
type BreakerPolicy struct {
	// Window is the sliding window of outcomes. Default 30s.
	Window time.Duration `yaml:"window"`
	// MinCalls is how many outcomes the window needs before the breaker may open. Default 20.
	MinCalls int `yaml:"min_calls"`
	// FailureRate opens the breaker when failures/calls reaches it, in (0, 1]. Default 0.5.
	FailureRate float64 `yaml:"failure_rate"`
	// OpenFor is how long it stays open before half-open. Default 30s.
	OpenFor time.Duration `yaml:"open_for"`
	// HalfOpenCalls is how many trial calls half-open admits. Default 3.
	HalfOpenCalls int `yaml:"half_open_calls"`
	// Scope is ScopeFleet (default): one breaker per kind for every worker serving it,
	// counting the fleet's outcomes and stopping every worker at once; or ScopeWorker: one per
	// worker.
	Scope string `yaml:"scope"`
}

// The scopes of a breaker (BreakerPolicy.Scope).
const (
	ScopeFleet  = "fleet"
	ScopeWorker = "worker"
)

// The defaults of a policy, and its bounds.
const (
	DefaultMaxAttempts      = 5
	DefaultTimeout          = 30 * time.Second
	DefaultBackoffBase      = time.Second
	DefaultBackoffMax       = 5 * time.Minute
	DefaultConcurrency      = 10
	DefaultAckWait          = 30 * time.Second
	DefaultMaxDeliveries    = 100
	DefaultFleetConcurrency = 1000

	DefaultBreakerWindow        = 30 * time.Second
	DefaultBreakerMinCalls      = 20
	DefaultBreakerFailureRate   = 0.5
	DefaultBreakerOpenFor       = 30 * time.Second
	DefaultBreakerHalfOpenCalls = 3

	// MaxAttemptsLimit bounds a policy's and a job's attempt budget.
	MaxAttemptsLimit = 1000
	// MaxConcurrency bounds a kind's concurrency on one worker.
	MaxConcurrency = 10000
)

// WithDefaults returns p with every zero field set to its default. Negative values are kept,
// for Validate to refuse.
func (p Policy) WithDefaults() Policy {
	p.MaxAttempts = cmp.Or(p.MaxAttempts, DefaultMaxAttempts)
	p.Timeout = cmp.Or(p.Timeout, DefaultTimeout)
	p.Backoff.Base = cmp.Or(p.Backoff.Base, DefaultBackoffBase)
	p.Backoff.Max = cmp.Or(p.Backoff.Max, DefaultBackoffMax)
	p.Concurrency = cmp.Or(p.Concurrency, DefaultConcurrency)
	p.AckWait = cmp.Or(p.AckWait, DefaultAckWait)
	p.MaxDeliveries = cmp.Or(p.MaxDeliveries, DefaultMaxDeliveries)
	p.FleetConcurrency = cmp.Or(p.FleetConcurrency, DefaultFleetConcurrency)
	if p.Burst == 0 && !p.Rate.IsZero() {
		p.Burst = max(1, int(math.Ceil(p.Rate.PerSecond())))
	}
	b := &p.Breaker
	b.Window = cmp.Or(b.Window, DefaultBreakerWindow)
	b.MinCalls = cmp.Or(b.MinCalls, DefaultBreakerMinCalls)
	b.FailureRate = cmp.Or(b.FailureRate, DefaultBreakerFailureRate)
	b.OpenFor = cmp.Or(b.OpenFor, DefaultBreakerOpenFor)
	b.HalfOpenCalls = cmp.Or(b.HalfOpenCalls, DefaultBreakerHalfOpenCalls)
	b.Scope = cmp.Or(b.Scope, ScopeFleet)
	return p
}

// PolicyError is an impossible value of a policy. Key names it as the YAML config does
// (max_deliveries, breaker.failure_rate), so that the config can point at its line.
type PolicyError struct {
	Key string
	Msg string
}

func (e *PolicyError) Error() string { return e.Key + " " + e.Msg }

// Validate reports the first impossible value of p, the policy of kind, with its defaults
// filled in (WithDefaults), as a *PolicyError.
func (p Policy) Validate(kind string) error {
	bad := func(key, format string, args ...any) error {
		return &PolicyError{Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	b := p.Breaker
	switch {
	case p.MaxAttempts < 1 || p.MaxAttempts > MaxAttemptsLimit:
		return bad("max_attempts", "must be 1 to %d, got %d", MaxAttemptsLimit, p.MaxAttempts)
	case p.Timeout <= 0:
		return bad("timeout", "must be positive, got %s", p.Timeout)
	case p.Backoff.Base <= 0:
		return bad("backoff.base", "must be positive, got %s", p.Backoff.Base)
	case p.Backoff.Max < p.Backoff.Base:
		return bad("backoff.max", "(%s) must not be below backoff.base (%s)", p.Backoff.Max, p.Backoff.Base)
	case p.Concurrency < 1 || p.Concurrency > MaxConcurrency:
		return bad("concurrency", "must be 1 to %d, got %d", MaxConcurrency, p.Concurrency)
	case p.AckWait < time.Second:
		return bad("ack_wait", "must be at least 1s, got %s", p.AckWait)
	case p.MaxDeliveries <= p.MaxAttempts:
		return bad("max_deliveries", "(%d) must exceed max_attempts (%d): attempts are counted in Postgres, deliveries are only a safety net", p.MaxDeliveries, p.MaxAttempts)
	case p.FleetConcurrency < 1:
		return bad("fleet_concurrency", "must be at least 1, got %d", p.FleetConcurrency)
	case p.Rate.Events < 0 || p.Rate.Per < 0 || (p.Rate.Events > 0) != (p.Rate.Per > 0):
		return bad("rate", "must be a positive number of events per positive period (e.g. 50/s), or zero for none; got %d per %s", p.Rate.Events, p.Rate.Per)
	case p.Burst < 0 || p.Burst == 0 && !p.Rate.IsZero():
		return bad("burst", "must be at least 1, got %d", p.Burst)
	case p.Burst > 0 && p.Rate.IsZero():
		return bad("burst", "needs a rate")
	case b.Window <= 0:
		return bad("breaker.window", "must be positive, got %s", b.Window)
	case b.MinCalls < 1:
		return bad("breaker.min_calls", "must be at least 1, got %d", b.MinCalls)
	case !(b.FailureRate > 0 && b.FailureRate <= 1): // also refuses NaN
		return bad("breaker.failure_rate", "must be above 0 and at most 1, got %v", b.FailureRate)
	case b.OpenFor <= 0:
		return bad("breaker.open_for", "must be positive, got %s", b.OpenFor)
	case b.HalfOpenCalls < 1:
		return bad("breaker.half_open_calls", "must be at least 1, got %d", b.HalfOpenCalls)
	case b.Scope != ScopeFleet && b.Scope != ScopeWorker:
		return bad("breaker.scope", "must be %s (one breaker shared by every worker) or %s (one per worker), got %q", ScopeFleet, ScopeWorker, b.Scope)
	case p.Fallback != "" && ValidateKind(p.Fallback) != nil:
		return bad("fallback", "%v", ValidateKind(p.Fallback))
	case p.Fallback != "" && p.Fallback == kind:
		return bad("fallback", "names the kind itself: a kind cannot fall back to itself")
	case p.FallbackAfter < 0 || p.FallbackAfter > 0 && p.FallbackAfter < time.Second:
		return bad("fallback_after", "must be at least 1s (or 0 for never), got %s", p.FallbackAfter)
	case p.FallbackAfter > 0 && p.Fallback == "":
		return bad("fallback_after", "needs a fallback kind")
	}
	return nil
}

var kindRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidateKind reports whether kind is one subject token of [a-z0-9][a-z0-9_-]*, 1 to 64
// characters.
func ValidateKind(kind string) error {
	if !kindRE.MatchString(kind) {
		return fmt.Errorf("invalid kind %q: a kind is 1-64 characters of [a-z0-9_-], starting with a letter or digit", kind)
	}
	return nil
}

// Rate is a number of events per period; see ParseRate. The zero Rate means no limit;
// Policy.Validate refuses a Rate with a negative field or with only one of the two set.
type Rate struct {
	Events int           `yaml:"-"`
	Per    time.Duration `yaml:"-"`
}

// ParseRate reads "N/s", "N/m" or "N/h" with N a positive integer, e.g. "50/s" or "3000/m".
// "" and "none" give the zero Rate (no limit).
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return Rate{}, nil
	}
	num, unit, ok := strings.Cut(s, "/")
	per, known := rateUnits[unit]
	n, err := strconv.Atoi(num)
	if !ok || !known || err != nil || n < 1 {
		return Rate{}, fmt.Errorf(`invalid rate %q: use a positive whole number of events per s, m or h, e.g. "50/s" or "3000/m", or "none"`, s)
	}
	return Rate{Events: n, Per: per}, nil
}

var rateUnits = map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}

// UnmarshalText reads a rate as ParseRate does, for configuration files.
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// IsZero reports whether r means no limit: the zero Rate (and, for a Rate that Validate
// would refuse, any whose Events or Per is not positive).
func (r Rate) IsZero() bool { return r.Events <= 0 || r.Per <= 0 }

// PerSecond returns r in events per second; 0 means no limit.
func (r Rate) PerSecond() float64 {
	if r.IsZero() {
		return 0
	}
	return float64(r.Events) / r.Per.Seconds()
}

// String formats r as ParseRate reads it ("50/s"), or "none" for no limit. A Per other than a
// second, minute or hour is written as a duration ("5/2s"), which ParseRate does not read.
func (r Rate) String() string {
	if r.IsZero() {
		return "none"
	}
	unit := r.Per.String()
	switch r.Per {
	case time.Second:
		unit = "s"
	case time.Minute:
		unit = "m"
	case time.Hour:
		unit = "h"
	}
	return fmt.Sprintf("%d/%s", r.Events, unit)
}
