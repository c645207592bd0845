// Package config reads the worker's YAML file: the kinds it serves and each kind's policy.
// Every key is optional except a kind's handler; unknown keys, bad durations and impossible
// values are errors that name the key (kinds.<kind>.<key>) and its line.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/queue"
)

// Handlers built into the worker binary.
const (
	HandlerHTTP = "http"
	HandlerNoop = "noop"
)

// Defaults of a kind's policy, as documented in the README.
const (
	DefaultMaxAttempts      = 5
	DefaultTimeout          = 30 * time.Second
	DefaultBackoffBase      = time.Second
	DefaultBackoffMax       = 5 * time.Minute
	DefaultConcurrency      = 10
	DefaultAckWait          = 30 * time.Second
	DefaultMaxDeliveries    = 100
	DefaultFleetConcurrency = 1000
)

// File is a parsed, validated config file.
type File struct {
	// Kinds in name order.
	Kinds []Kind
}

// Kind is one kind's effective configuration, defaults filled in.
type Kind struct {
	Name             string
	Handler          string
	MaxAttempts      int
	Timeout          time.Duration
	BackoffBase      time.Duration
	BackoffMax       time.Duration
	Concurrency      int
	AckWait          time.Duration
	MaxDeliveries    int
	FleetConcurrency int
	HTTPAllow        []string
	// Rate is the fleet-wide rate limit; zero means none.
	Rate  executor.Rate
	Burst int
	// Breaker is the kind's circuit breaker, defaults filled in.
	Breaker executor.BreakerConfig
	// Fallback names the kind that takes jobs this kind cannot finish; "" means none.
	Fallback string
	// FallbackAfter routes jobs to Fallback once the breaker has stayed open this long;
	// 0 means never (only exhausted jobs fall back).
	FallbackAfter time.Duration
}

type fileYAML struct {
	Kinds map[string]kindYAML `yaml:"kinds"`
}

type kindYAML struct {
	Handler          string       `yaml:"handler"`
	MaxAttempts      *int         `yaml:"max_attempts"`
	Timeout          *duration    `yaml:"timeout"`
	Backoff          *backoffYAML `yaml:"backoff"`
	Concurrency      *int         `yaml:"concurrency"`
	AckWait          *duration    `yaml:"ack_wait"`
	MaxDeliveries    *int         `yaml:"max_deliveries"`
	FleetConcurrency *int         `yaml:"fleet_concurrency"`
	HTTP             *httpYAML    `yaml:"http"`
	Rate             *string      `yaml:"rate"`
	Burst            *int         `yaml:"burst"`
	Breaker          *breakerYAML `yaml:"breaker"`
	Fallback         string       `yaml:"fallback"`
	FallbackAfter    *duration    `yaml:"fallback_after"`
	line             int
}

type backoffYAML struct {
	Base *duration `yaml:"base"`
	Max  *duration `yaml:"max"`
}

type breakerYAML struct {
	Window        *duration `yaml:"window"`
	MinCalls      *int      `yaml:"min_calls"`
	FailureRate   *float64  `yaml:"failure_rate"`
	OpenFor       *duration `yaml:"open_for"`
	HalfOpenCalls *int      `yaml:"half_open_calls"`
}

type httpYAML struct {
	Allow []string `yaml:"allow"`
}

// duration keeps the raw text and line so that validation can name the key.
type duration struct {
	raw  string
	line int
}

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 500ms, 10s or 5m", n.Line)
	}
	d.raw, d.line = n.Value, n.Line
	return nil
}

// Load reads and validates the file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return f, nil
}

var unknownFieldRE = regexp.MustCompile(`line (\d+): field (\S+) not found in type config\.(\w+)`)

// Parse reads and validates a config document.
func Parse(data []byte) (*File, error) {
	var raw fileYAML
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty config: define at least one kind under \"kinds:\"")
		}
		return nil, friendlyYAMLError(err, data)
	}
	// A second pass finds each kind's line, for messages about the kind as a whole.
	var lines struct {
		Kinds map[string]yaml.Node `yaml:"kinds"`
	}
	if err := yaml.Unmarshal(data, &lines); err == nil {
		for name, n := range lines.Kinds {
			k := raw.Kinds[name]
			k.line = n.Line
			raw.Kinds[name] = k
		}
	}
	if len(raw.Kinds) == 0 {
		return nil, errors.New("no kinds: define at least one kind under \"kinds:\"")
	}
	names := make([]string, 0, len(raw.Kinds))
	for name := range raw.Kinds {
		names = append(names, name)
	}
	sort.Strings(names)
	f := &File{}
	for _, name := range names {
		k, err := raw.Kinds[name].resolve(name)
		if err != nil {
			return nil, err
		}
		f.Kinds = append(f.Kinds, k)
	}
	for _, k := range f.Kinds {
		if k.Fallback == "" {
			continue
		}
		if k.Fallback == k.Name {
			return nil, fmt.Errorf("kinds.%s.fallback: a kind cannot fall back to itself", k.Name)
		}
		if _, ok := raw.Kinds[k.Fallback]; !ok {
			return nil, fmt.Errorf("kinds.%s.fallback: kind %q is not defined in this file", k.Name, k.Fallback)
		}
	}
	return f, nil
}

func friendlyYAMLError(err error, data []byte) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	if !lineRE.MatchString(msg) {
		if line := yamlErrorLine(msg, data); line > 0 {
			msg = fmt.Sprintf("line %d: %s", line, msg)
		}
	}
	if m := unknownFieldRE.FindStringSubmatch(msg); m != nil {
		where := map[string]string{
			"fileYAML": "at top level (want kinds)", "kindYAML": "in a kind",
			"plain": "in a kind", "backoffYAML": "in backoff (want base, max)", "httpYAML": "in http (want allow)",
			"breakerYAML": "in breaker (want window, min_calls, failure_rate, open_for, half_open_calls)",
		}[m[3]]
		return fmt.Errorf("line %s: unknown key %q %s", m[1], m[2], where)
	}
	msg = strings.ReplaceAll(msg, "\n  ", "; ")
	return errors.New(yamlTypeNames.Replace(msg))
}

// yamlTypeNames keeps an error to one line (YAML quotes scalars as they are) and says what
// was expected instead of naming Go types.
var yamlTypeNames = strings.NewReplacer("\n", `\n`, "\r", `\r`,
	"into config.fileYAML", "at top level (want a map with kinds)",
	"into map[string]config.kindYAML", "into kinds (want a map from kind name to settings)",
	"into config.kindYAML", "into a kind (want a map with handler and its settings)",
	"into config.backoffYAML", "into backoff (want base, max)",
	"into config.breakerYAML", "into breaker (want window, min_calls, failure_rate, open_for, half_open_calls)",
	"into config.httpYAML", "into http (want allow)",
	"into []string", "into a list of strings")

var lineRE = regexp.MustCompile(`\bline \d+`)

var anchorErrorRE = regexp.MustCompile(`^(unknown anchor|anchor) '([^']*)'`)

// yamlErrorLine finds the line of a YAML error that came without one, or returns 0.
func yamlErrorLine(msg string, data []byte) int {
	// The reader gives no position for bytes it cannot read.
	if line := unreadableLine(data); line > 0 {
		return line
	}
	// The decoder names an anchor, or nothing, but never a line.
	if m := anchorErrorRE.FindStringSubmatch(msg); m != nil {
		if m[1] == "unknown anchor" {
			return lineOf(data, "*"+m[2])
		}
		return lineOf(data, "&"+m[2])
	}
	for _, e := range []struct{ msg, at string }{
		{"excessive aliasing", "*"}, {"map merge", "<<"}, {"!!binary", "!!binary"},
	} {
		if strings.Contains(msg, e.msg) {
			return lineOf(data, e.at)
		}
	}
	// The scanner and parser count lines from 0 and leave out the first one.
	if !strings.Contains(msg, "decode") && !strings.Contains(msg, "invalid") {
		return 1
	}
	return 0
}

// lineOf returns the line of the first s in data, or 0.
func lineOf(data []byte, s string) int {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0
	}
	return 1 + bytes.Count(data[:i], []byte("\n"))
}

// unreadableLine returns the line of the first byte YAML cannot read (invalid UTF-8, or a
// control character other than tab, CR and LF), or 0 if there is none.
func unreadableLine(data []byte) int {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		printable := r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0x7e) || r == 0x85 ||
			(r >= 0xa0 && r <= 0xd7ff) || (r >= 0xe000 && r <= 0xfffd) || (r >= 0x10000 && r <= utf8.MaxRune)
		if (r == utf8.RuneError && size == 1) || !printable {
			return line
		}
		if r == '\n' {
			line++
		}
		i += size
	}
	return 0
}

func (y kindYAML) resolve(name string) (Kind, error) {
	at := func(key string, line int, format string, args ...any) error {
		return fmt.Errorf("kinds.%s.%s (line %d): %s", name, key, line, fmt.Sprintf(format, args...))
	}
	if err := queue.ValidateKind(name); err != nil {
		return Kind{}, fmt.Errorf("kinds (line %d): %w", y.line, err)
	}
	k := Kind{
		Name:             name,
		Handler:          y.Handler,
		MaxAttempts:      intOr(y.MaxAttempts, DefaultMaxAttempts),
		Timeout:          DefaultTimeout,
		BackoffBase:      DefaultBackoffBase,
		BackoffMax:       DefaultBackoffMax,
		Concurrency:      intOr(y.Concurrency, DefaultConcurrency),
		AckWait:          DefaultAckWait,
		MaxDeliveries:    intOr(y.MaxDeliveries, DefaultMaxDeliveries),
		FleetConcurrency: intOr(y.FleetConcurrency, DefaultFleetConcurrency),
	}
	switch y.Handler {
	case HandlerHTTP, HandlerNoop:
	case "":
		return Kind{}, fmt.Errorf("kinds.%s (line %d): handler is required: http or noop", name, y.line)
	default:
		return Kind{}, fmt.Errorf("kinds.%s.handler (line %d): unknown handler %q: use http or noop (custom handlers need a binary built with the Go API)", name, y.line, y.Handler)
	}
	k.Breaker = executor.BreakerConfig{}
	durations := []durationKey{{"timeout", y.Timeout, &k.Timeout}, {"ack_wait", y.AckWait, &k.AckWait},
		{"fallback_after", y.FallbackAfter, &k.FallbackAfter}}
	if y.Breaker != nil {
		durations = append(durations,
			durationKey{"breaker.window", y.Breaker.Window, &k.Breaker.Window},
			durationKey{"breaker.open_for", y.Breaker.OpenFor, &k.Breaker.OpenFor})
		k.Breaker.MinCalls = intOr(y.Breaker.MinCalls, 0)
		if y.Breaker.FailureRate != nil {
			k.Breaker.FailureRate = *y.Breaker.FailureRate
		}
		k.Breaker.HalfOpenCalls = intOr(y.Breaker.HalfOpenCalls, 0)
		if y.Breaker.MinCalls != nil && *y.Breaker.MinCalls < 1 {
			return Kind{}, at("breaker.min_calls", y.line, "must be at least 1, got %d", *y.Breaker.MinCalls)
		}
		if y.Breaker.HalfOpenCalls != nil && *y.Breaker.HalfOpenCalls < 1 {
			return Kind{}, at("breaker.half_open_calls", y.line, "must be at least 1, got %d", *y.Breaker.HalfOpenCalls)
		}
		if y.Breaker.FailureRate != nil && (*y.Breaker.FailureRate <= 0 || *y.Breaker.FailureRate > 1) {
			return Kind{}, at("breaker.failure_rate", y.line, "must be above 0 and at most 1, got %v", *y.Breaker.FailureRate)
		}
	}
	if y.Backoff != nil {
		durations = append(durations,
			durationKey{"backoff.base", y.Backoff.Base, &k.BackoffBase},
			durationKey{"backoff.max", y.Backoff.Max, &k.BackoffMax})
	}
	for _, d := range durations {
		if d.d == nil {
			continue
		}
		v, err := time.ParseDuration(d.d.raw)
		if err != nil {
			return Kind{}, at(d.key, d.d.line, "invalid duration %q: use a number with a unit, such as 500ms, 10s or 5m", d.d.raw)
		}
		if v <= 0 {
			return Kind{}, at(d.key, d.d.line, "must be positive, got %s", d.d.raw)
		}
		*d.dst = v
	}
	k.Breaker = k.Breaker.Defaults()
	if err := k.Breaker.Validate(); err != nil {
		return Kind{}, fmt.Errorf("kinds.%s (line %d): %w", name, y.line, err)
	}
	k.Breaker.Clock = nil // the worker brings the clock

	if y.Rate != nil {
		r, err := executor.ParseRate(*y.Rate)
		if err != nil {
			return Kind{}, at("rate", y.line, "%v", err)
		}
		k.Rate = r
	}
	if y.Burst != nil {
		if *y.Burst < 1 {
			return Kind{}, at("burst", y.line, "must be at least 1, got %d", *y.Burst)
		}
		if k.Rate.IsZero() {
			return Kind{}, at("burst", y.line, "needs a rate")
		}
		k.Burst = *y.Burst
	}
	if !k.Rate.IsZero() && k.Burst == 0 {
		k.Burst = max(1, int(math.Ceil(k.Rate.PerSecond())))
	}
	k.Fallback = y.Fallback
	if k.Fallback != "" {
		if err := queue.ValidateKind(k.Fallback); err != nil {
			return Kind{}, at("fallback", y.line, "%v", err)
		}
	}
	if k.FallbackAfter > 0 && k.Fallback == "" {
		return Kind{}, at("fallback_after", y.line, "needs a fallback kind")
	}
	line := y.line
	switch {
	case k.MaxAttempts < 1 || k.MaxAttempts > queue.MaxAttemptsLimit:
		return Kind{}, at("max_attempts", line, "must be 1 to %d, got %d", queue.MaxAttemptsLimit, k.MaxAttempts)
	case k.BackoffMax < k.BackoffBase:
		return Kind{}, at("backoff.max", line, "(%s) must not be below backoff.base (%s)", k.BackoffMax, k.BackoffBase)
	case k.Concurrency < 1 || k.Concurrency > 10000:
		return Kind{}, at("concurrency", line, "must be 1 to 10000, got %d", k.Concurrency)
	case k.AckWait < time.Second:
		return Kind{}, at("ack_wait", line, "must be at least 1s, got %s", k.AckWait)
	case k.MaxDeliveries <= k.MaxAttempts:
		return Kind{}, at("max_deliveries", line, "(%d) must exceed max_attempts (%d): attempts are counted in Postgres, deliveries are only a safety net", k.MaxDeliveries, k.MaxAttempts)
	case k.FleetConcurrency < 1:
		return Kind{}, at("fleet_concurrency", line, "must be at least 1, got %d", k.FleetConcurrency)
	}
	if y.HTTP != nil {
		if k.Handler != HandlerHTTP {
			return Kind{}, at("http", line, "is only for kinds with handler: http")
		}
		k.HTTPAllow = y.HTTP.Allow
	}
	return k, nil
}

// durationKey ties a duration in the file to its key and its destination.
type durationKey struct {
	key string
	d   *duration
	dst *time.Duration
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}
