package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/levee-dev/levee/leveetype"
)

// periodicYAML is a periodic job as the file spells it: the keys of leveetype.PeriodicJob,
// and its payload as written, any YAML value, made JSON by payloadJSON.
type periodicYAML struct {
	leveetype.PeriodicJob `yaml:",inline"`
	Payload               yaml.Node `yaml:"payload"`
}

// resolvePeriodic checks the file's periodic jobs, in file order, and returns them with their
// defaults filled in. Their kinds need not be in the file: another worker may serve them.
func resolvePeriodic(raw []periodicYAML, lines []keyLines) ([]leveetype.PeriodicJob, error) {
	var out []leveetype.PeriodicJob
	byName := map[string]int{}
	for i, y := range raw {
		at := periodicAt{i: i, name: y.Name}
		if i < len(lines) {
			at.lines = lines[i]
		}
		payload, err := payloadJSON(&y.Payload)
		if err != nil {
			var ne *nodeError
			if errors.As(err, &ne) {
				return nil, at.errorf("payload", ne.line, "%s", ne.msg)
			}
			return nil, at.errorf("payload", 0, "%v", err)
		}
		p := y.PeriodicJob
		p.Payload = payload
		p = p.WithDefaults()
		if err := p.Validate(); err != nil {
			var pe *leveetype.PeriodicError
			if !errors.As(err, &pe) {
				return nil, at.errorf("", 0, "%v", err)
			}
			return nil, at.errorf(pe.Key, 0, "%s", pe.Msg)
		}
		if j, dup := byName[p.Name]; dup {
			first := periodicAt{i: j, name: raw[j].Name}
			if j < len(lines) {
				first.lines = lines[j]
			}
			return nil, at.errorf("name", 0, "%q is already the name of periodic[%d] (line %d): names must be unique", p.Name, j, first.line(""))
		}
		byName[p.Name] = i
		out = append(out, p)
	}
	return out, nil
}

// periodicAt names the periodic job at index i of the file in errors: periodic[<i>] (<name>).
type periodicAt struct {
	i     int
	name  string
	lines keyLines // the line of the entry ("") and of each of its keys
}

// line returns the line of key, else of the entry.
func (a periodicAt) line(key string) int {
	if l, ok := a.lines[key]; ok && key != "" {
		return l
	}
	return a.lines[""]
}

// errorf is an error about key of the entry ("" for the entry as a whole), at line, or (0)
// at the key's own line.
func (a periodicAt) errorf(key string, line int, format string, args ...any) error {
	path := fmt.Sprintf("periodic[%d]", a.i)
	if leveetype.ValidatePeriodicName(a.name) == nil {
		path += " (" + a.name + ")"
	}
	if key != "" {
		path += "." + key
	}
	if line == 0 {
		line = a.line(key)
	}
	return fmt.Errorf("%s (line %d): %s", path, line, fmt.Sprintf(format, args...))
}

// indexPeriodic records the line of each periodic job and of its keys, and checks that a
// duration given for every parses (and, with zeros set, is not 0), as indexKind does for a
// kind's durations.
func indexPeriodic(seq *yaml.Node, zeros bool, budget *int) ([]keyLines, error) {
	seq = resolveAlias(seq)
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return nil, nil
	}
	var out []keyLines
	for i, item := range seq.Content {
		item = resolveAlias(item)
		if item == nil {
			continue
		}
		lines := keyLines{"": item.Line}
		out = append(out, lines)
		keys := effective(item, budget)
		for _, key := range slices.Sorted(maps.Keys(keys)) {
			lines[key] = keys[key].line
		}
		e, ok := keys["every"]
		if !ok || e.value == nil || e.value.Kind != yaml.ScalarNode || e.value.Tag == "!!null" {
			continue
		}
		at := periodicAt{i: i, lines: lines}
		if n := keys["name"].value; n != nil && n.Kind == yaml.ScalarNode {
			at.name = n.Value
		}
		d, err := time.ParseDuration(e.value.Value)
		if err != nil {
			return nil, at.errorf("every", 0, "invalid duration %q: use a number with a unit, such as 30s, 10m or 24h", e.value.Value)
		}
		if d == 0 && zeros {
			return nil, at.errorf("every", 0, "must be at least %s, got %s", leveetype.MinEvery, e.value.Value)
		}
	}
	return out, nil
}

// The bounds of a payload as written in the file.
const (
	payloadMaxValues = 100_000 // counting each time an alias repeats one
	payloadMaxDepth  = 200
)

// nodeError is a problem with a payload at a line of the file.
type nodeError struct {
	line int
	msg  string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// payloadJSON returns the YAML value n as compact JSON, its keys in the order written (keys
// merged in with << after the map's own). A missing value is null. Maps need string keys
// (quote the others); timestamps and !!binary values become strings as written; .inf and
// .nan are refused, as JSON has no such numbers.
func payloadJSON(n *yaml.Node) (json.RawMessage, error) {
	w := &jsonWriter{budget: payloadMaxValues}
	if err := w.value(n, 0); err != nil {
		return nil, err
	}
	return w.buf.Bytes(), nil
}

type jsonWriter struct {
	buf    bytes.Buffer
	budget int
}

func (w *jsonWriter) value(n *yaml.Node, depth int) error {
	n = resolveAlias(n)
	if n == nil || n.Kind == 0 {
		w.buf.WriteString("null")
		return nil
	}
	if w.budget--; w.budget < 0 {
		return &nodeError{n.Line, fmt.Sprintf("has more than %d values (counting each repeat of an alias)", payloadMaxValues)}
	}
	if depth > payloadMaxDepth {
		return &nodeError{n.Line, fmt.Sprintf("is nested more than %d deep", payloadMaxDepth)}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			w.buf.WriteString("null")
			return nil
		}
		return w.value(n.Content[0], depth+1)
	case yaml.ScalarNode:
		return w.scalar(n)
	case yaml.SequenceNode:
		w.buf.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				w.buf.WriteByte(',')
			}
			if err := w.value(item, depth+1); err != nil {
				return err
			}
		}
		w.buf.WriteByte(']')
		return nil
	case yaml.MappingNode:
		var fields []field
		if err := w.fields(n, depth, &fields); err != nil {
			return err
		}
		w.buf.WriteByte('{')
		for i, f := range fields {
			if i > 0 {
				w.buf.WriteByte(',')
			}
			w.writeString(f.key)
			w.buf.WriteByte(':')
			if err := w.value(f.value, depth+1); err != nil {
				return err
			}
		}
		w.buf.WriteByte('}')
		return nil
	}
	return &nodeError{n.Line, "has an alias that goes nowhere"}
}

// field is one key of a map, and its value.
type field struct {
	key   string
	value *yaml.Node
}

// fields appends the keys of mapping m that are in effect to out: its own in order, then
// those of the maps it merges (<<) that it does not have, an earlier merge winning.
func (w *jsonWriter) fields(m *yaml.Node, depth int, out *[]field) error {
	if depth > payloadMaxDepth {
		return &nodeError{m.Line, fmt.Sprintf("is nested more than %d deep", payloadMaxDepth)}
	}
	own := map[string]bool{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := resolveAlias(m.Content[i]), m.Content[i+1]
		if k == nil {
			return &nodeError{m.Line, "has an alias that goes nowhere"}
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if v = resolveAlias(v); v != nil && v.Kind == yaml.SequenceNode {
				merges = append(merges, v.Content...)
			} else {
				merges = append(merges, v)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			what := "a list or a map"
			if k.Kind == yaml.ScalarNode {
				what = fmt.Sprintf("%q", k.Value)
			}
			return &nodeError{k.Line, fmt.Sprintf("has the map key %s, which is not a string: JSON keys are strings, so quote it", what)}
		}
		if own[k.Value] {
			return &nodeError{k.Line, fmt.Sprintf("has the key %q twice in one map", k.Value)}
		}
		own[k.Value] = true
		*out = append(*out, field{k.Value, v})
	}
	for _, mm := range merges {
		mm = resolveAlias(mm)
		if mm == nil || mm.Kind != yaml.MappingNode {
			return &nodeError{m.Line, "merges (<<) something other than a map"}
		}
		if w.budget -= len(mm.Content); w.budget < 0 {
			return &nodeError{mm.Line, fmt.Sprintf("has more than %d values (counting each repeat of an alias)", payloadMaxValues)}
		}
		var merged []field
		if err := w.fields(mm, depth+1, &merged); err != nil {
			return err
		}
		for _, f := range merged {
			if !own[f.key] {
				own[f.key] = true
				*out = append(*out, f)
			}
		}
	}
	return nil
}

func (w *jsonWriter) scalar(n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!null":
		w.buf.WriteString("null")
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return &nodeError{n.Line, fmt.Sprintf("has %q, which is not a boolean", n.Value)}
		}
		w.buf.WriteString(strconv.FormatBool(b))
	case "!!int", "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return &nodeError{n.Line, fmt.Sprintf("has %q, which is not a number", n.Value)}
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return &nodeError{n.Line, fmt.Sprintf("has %s, which JSON cannot hold: quote it for a string", n.Value)}
		}
		if isJSONNumber(n.Value) { // as written: 12345678901234567890 keeps its digits
			w.buf.WriteString(n.Value)
			return nil
		}
		var v any // 0x1F, 0o17, +5, .5 and 1_000 are written as JSON spells them
		if err := n.Decode(&v); err != nil {
			return &nodeError{n.Line, fmt.Sprintf("has %q, which is not a number", n.Value)}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return &nodeError{n.Line, fmt.Sprintf("has %q, which JSON cannot hold: quote it for a string", n.Value)}
		}
		w.buf.Write(b)
	default: // strings; timestamps and !!binary as written
		w.writeString(n.Value)
	}
	return nil
}

// isJSONNumber reports whether s is a number as JSON spells it.
func isJSONNumber(s string) bool {
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return false
	}
	var n json.Number
	return json.Unmarshal([]byte(s), &n) == nil
}

// writeString writes s as a JSON string, without escaping <, > and &.
func (w *jsonWriter) writeString(s string) {
	enc := json.NewEncoder(&w.buf)
	enc.SetEscapeHTML(false)
	// A string always encodes, and Encode ends it with a newline.
	_ = enc.Encode(s)
	w.buf.Truncate(w.buf.Len() - 1)
}
