// Package config reads the worker's YAML file: the kinds it serves and each kind's policy,
// decoded into the public leveetype.Policy and checked by its one Validate (design rule 39),
// and the periodic jobs of the fleet (periodic:), decoded into leveetype.PeriodicJob and
// checked by its Validate. Every key of a kind is optional except its handler; unknown keys,
// bad durations and impossible values are errors that name the key (kinds.<kind>.<key>, or
// periodic[<i>] (<name>).<key>) and the key's own line.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/levee-dev/levee/leveetype"
)

// Handlers built into the worker binary.
const (
	HandlerHTTP = "http"
	HandlerNoop = "noop"
)

// File is a parsed, validated config file.
type File struct {
	// Kinds in name order.
	Kinds []Kind
	// Periodic holds the periodic jobs in file order, with their defaults filled in (names
	// unique). Their kinds need not be among Kinds: another worker may serve them.
	Periodic []leveetype.PeriodicJob
}

// Kind is one kind of the file: its handler, the http handler's allowlist, and its policy
// with the defaults filled in.
type Kind struct {
	Name      string
	Handler   string
	HTTPAllow []string
	Policy    leveetype.Policy
}

type fileYAML struct {
	Kinds    map[string]kindYAML `yaml:"kinds"`
	Periodic []periodicYAML      `yaml:"periodic"`
}

// kindYAML is a kind as the file spells it: the worker binary's keys, and the policy's own
// (the yaml keys of leveetype.Policy).
type kindYAML struct {
	Handler          string    `yaml:"handler"`
	HTTP             *httpYAML `yaml:"http"`
	leveetype.Policy `yaml:",inline"`
}

type httpYAML struct {
	Allow []string `yaml:"allow"`
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

var unknownFieldRE = regexp.MustCompile(`line (\d+): field (\S+) not found in type (?:config|leveetype)\.(\w+)`)

// Parse reads and validates a config document.
func Parse(data []byte) (*File, error) {
	// The decoder first: it refuses what is not YAML, unknown keys, values of the wrong type
	// and runaway aliases, at once.
	var raw fileYAML
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	derr := dec.Decode(&raw)
	if errors.Is(derr, io.EOF) {
		return nil, errors.New("empty config: define at least one kind under \"kinds:\"")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, friendlyYAMLError(err, data)
	}
	// Then the keys as written, with their lines: a duration or rate that does not parse, or
	// a number given as 0, is named there with its own line (the decoder names only a line,
	// and takes 0 for "the default").
	// When the decoder refused the file, only a duration or rate that does not parse is
	// reported in its place (its error would name a Go type); anything else is the decoder's.
	keys, periodicLines, err := indexKeys(&doc, derr == nil)
	if err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, friendlyYAMLError(derr, data)
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
		k, err := raw.Kinds[name].resolve(name, keys)
		if err != nil {
			return nil, err
		}
		f.Kinds = append(f.Kinds, k)
	}
	for _, k := range f.Kinds {
		if fb := k.Policy.Fallback; fb != "" {
			if _, ok := raw.Kinds[fb]; !ok {
				return nil, keys.errorf(k.Name, "fallback", "kind %q is not defined in this file", fb)
			}
		}
	}
	if f.Periodic, err = resolvePeriodic(raw.Periodic, periodicLines); err != nil {
		return nil, err
	}
	return f, nil
}

func (y kindYAML) resolve(name string, keys keyLines) (Kind, error) {
	if err := leveetype.ValidateKind(name); err != nil {
		return Kind{}, fmt.Errorf("kinds (line %d): %w", keys[name], err)
	}
	switch y.Handler {
	case HandlerHTTP, HandlerNoop:
	case "":
		return Kind{}, keys.errorf(name, "", "handler is required: http or noop")
	default:
		return Kind{}, keys.errorf(name, "handler", "unknown handler %q: use http or noop (custom handlers need a binary built with the Go API)", y.Handler)
	}
	k := Kind{Name: name, Handler: y.Handler, Policy: y.WithDefaults()}
	if err := k.Policy.Validate(name); err != nil {
		var pe *leveetype.PolicyError
		if !errors.As(err, &pe) {
			return Kind{}, keys.errorf(name, "", "%v", err)
		}
		return Kind{}, keys.errorf(name, pe.Key, "%s", pe.Msg)
	}
	if y.HTTP != nil {
		if k.Handler != HandlerHTTP {
			return Kind{}, keys.errorf(name, "http", "is only for kinds with handler: http")
		}
		k.HTTPAllow = y.HTTP.Allow
	}
	return k, nil
}

// keyLines holds the line of each kind ("<kind>") and of each of its keys ("<kind>.<key>",
// "<kind>.breaker.window").
type keyLines map[string]int

// errorf is an error about key of kind ("" for the kind as a whole), with the line of the key,
// else of the nearest key above it that the file has, else of the kind.
func (kl keyLines) errorf(kind, key, format string, args ...any) error {
	path, line := "kinds."+kind, kl[kind]
	if key != "" {
		path += "." + key
		for k := key; k != ""; k, _ = cutLast(k) {
			if l, ok := kl[kind+"."+k]; ok {
				line = l
				break
			}
		}
	}
	return fmt.Errorf("%s (line %d): %s", path, line, fmt.Sprintf(format, args...))
}

func cutLast(key string) (string, string) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return "", key
	}
	return key[:i], key[i+1:]
}

// The policy's keys by what their values are, as leveetype.Policy's yaml tags spell them.
var (
	durationKeys = map[string]bool{"timeout": true, "ack_wait": true, "fallback_after": true,
		"backoff.base": true, "backoff.max": true, "breaker.window": true, "breaker.open_for": true}
	intKeys = map[string]bool{"max_attempts": true, "concurrency": true, "max_deliveries": true,
		"fleet_concurrency": true, "burst": true, "breaker.min_calls": true, "breaker.half_open_calls": true}
)

// indexBudget bounds the nodes indexKeys visits, so that aliases cannot make it run for long
// on a document the decoder refused (it refuses runaway aliases itself).
const indexBudget = 100_000

// indexKeys records the line of every kind and of each key that is in effect, merges ("<<")
// resolved as YAML resolves them, and checks the values whose text the decoder would not
// explain well: durations and rates must parse, a rate is one scalar, and (with zeros set) a
// duration or a number given as 0 is refused (in the file, leaving a key out is how to take
// its default). Values of other wrong types and unknown keys are left to the decoder. It
// does the same for the periodic jobs (indexPeriodic), whose lines it returns apart.
func indexKeys(doc *yaml.Node, zeros bool) (keyLines, []keyLines, error) {
	kl := keyLines{}
	budget := indexBudget
	root := resolveAlias(doc)
	if root != nil && root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return kl, nil, nil
		}
		root = resolveAlias(root.Content[0])
	}
	top := effective(root, &budget)
	if kinds := top["kinds"]; kinds.value != nil {
		byKind := effective(kinds.value, &budget)
		for _, name := range slices.Sorted(maps.Keys(byKind)) { // in name order: the same file, the same first error
			k := byKind[name]
			kl[name] = k.line
			if err := indexKind(kl, name, "", k.value, zeros, &budget); err != nil {
				return nil, nil, err
			}
		}
	}
	periodic, err := indexPeriodic(top["periodic"].value, zeros, &budget)
	if err != nil {
		return nil, nil, err
	}
	return kl, periodic, nil
}

// entry is one key of a mapping as YAML resolves it: the value, and the key's line.
type entry struct {
	value *yaml.Node
	line  int
}

// effective returns the keys of mapping m that are in effect: its own, then those of the
// mappings it merges ("<<: *a" or "<<: [*a, *b]"), an earlier one winning; a merged mapping's
// nested mappings are taken whole, not merged. It returns nil for anything but a mapping, or
// once budget is spent.
func effective(m *yaml.Node, budget *int) map[string]entry {
	m = resolveAlias(m)
	if m == nil || m.Kind != yaml.MappingNode || *budget <= 0 {
		return nil
	}
	*budget -= len(m.Content)
	out := map[string]entry{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Value == "<<" && k.Tag != "!!str" {
			if v = resolveAlias(v); v != nil && v.Kind == yaml.SequenceNode {
				merges = append(merges, v.Content...)
			} else {
				merges = append(merges, v)
			}
			continue
		}
		if _, dup := out[k.Value]; !dup {
			out[k.Value] = entry{value: resolveAlias(v), line: k.Line}
		}
	}
	for _, mm := range merges {
		for key, e := range effective(mm, budget) {
			if _, have := out[key]; !have {
				out[key] = e
			}
		}
	}
	return out
}

// indexKind records and checks the keys of one kind (prefix "") or of its backoff or breaker
// (prefix "backoff." or "breaker.").
func indexKind(kl keyLines, kind, prefix string, m *yaml.Node, zeros bool, budget *int) error {
	keys := effective(m, budget)
	for _, name := range slices.Sorted(maps.Keys(keys)) {
		e := keys[name]
		key := prefix + name
		kl[kind+"."+key] = e.line
		v := e.value
		if prefix == "" && (name == "backoff" || name == "breaker") {
			if err := indexKind(kl, kind, key+".", v, zeros, budget); err != nil {
				return err
			}
			continue
		}
		if key == "rate" && v != nil && v.Kind != yaml.ScalarNode && v.Tag != "!!null" {
			return kl.errorf(kind, key, `give a rate such as "50/s", "3000/m" or "none"`)
		}
		if v == nil || v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			continue
		}
		if err := checkScalar(kl, kind, key, v, zeros); err != nil {
			return err
		}
	}
	return nil
}

func checkScalar(kl keyLines, kind, key string, v *yaml.Node, zeros bool) error {
	switch {
	case durationKeys[key]:
		d, err := time.ParseDuration(v.Value)
		if err != nil {
			return kl.errorf(kind, key, "invalid duration %q: use a number with a unit, such as 500ms, 10s or 5m", v.Value)
		}
		if d == 0 && zeros {
			return kl.errorf(kind, key, "must be positive, got %s (leave the key out for the default)", v.Value)
		}
	case key == "rate":
		if _, err := leveetype.ParseRate(v.Value); err != nil {
			return kl.errorf(kind, key, "%v", err)
		}
	case intKeys[key] && zeros:
		// As the decoder reads it (0x0, 0o0 and 0.5 are 0 too); a value it refuses is its to
		// report.
		var n int
		if v.Decode(&n) == nil && n == 0 {
			return kl.errorf(kind, key, "must not be 0, got %s (leave the key out for the default)", v.Value)
		}
	case key == "breaker.failure_rate" && zeros:
		var f float64
		if v.Decode(&f) == nil && f == 0 {
			return kl.errorf(kind, key, "must be above 0 and at most 1, got %s (leave the key out for the default)", v.Value)
		}
	}
	return nil
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
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
			"fileYAML": "at top level (want kinds, periodic)", "kindYAML": "in a kind",
			"plain": "in a kind", "Backoff": "in backoff (want base, max)", "httpYAML": "in http (want allow)",
			"BreakerPolicy": "in breaker (want window, min_calls, failure_rate, open_for, half_open_calls, scope)",
			"periodicYAML":  "in a periodic job (want name, kind, cron, every, timezone, payload, catch_up)",
		}[m[3]]
		return fmt.Errorf("line %s: unknown key %q %s", m[1], m[2], where)
	}
	msg = strings.ReplaceAll(msg, "\n  ", "; ")
	return errors.New(yamlTypeNames.Replace(msg))
}

// yamlTypeNames keeps an error to one line (YAML quotes scalars as they are) and says what
// was expected instead of naming Go types.
var yamlTypeNames = strings.NewReplacer("\n", `\n`, "\r", `\r`,
	"into config.fileYAML", "at top level (want a map with kinds and periodic)",
	"into []config.periodicYAML", "into periodic (want a list of periodic jobs, each a map with name, kind, cron or every)",
	"into config.periodicYAML", "into a periodic job (want a map with name, kind, cron or every)",
	"into leveetype.CatchUp", "into catch_up (want skip, latest or all)",
	"into map[string]config.kindYAML", "into kinds (want a map from kind name to settings)",
	"into config.kindYAML", "into a kind (want a map with handler and its settings)",
	"into leveetype.Backoff", "into backoff (want base, max)",
	"into leveetype.BreakerPolicy", "into breaker (want window, min_calls, failure_rate, open_for, half_open_calls, scope)",
	"into leveetype.Rate", "into a rate such as 50/s",
	"into time.Duration", "into a duration such as 10s",
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
