package idempotency

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// jsonAsIs is StorableJSON's fast path, in one pass over b and with no allocation unless b
// nests deeper than 64: it reports whether b is one JSON value (RFC 8259, white space around
// it allowed) in valid UTF-8 that jsonb accepts as it is, that is with no \u0000 escape, no
// surrogate escape outside a high-low pair, and numbers within the range of Postgres's
// numeric. It is what utf8.Valid, json.Valid and a search for those escapes say together,
// several times faster than json.Valid alone (encoding/json's scanner reads about 100 MB/s,
// and an http result may be 64 KiB). A false answer only sends b down the slow path. Nesting
// is bounded like encoding/json's (10,000), so what the slow path cannot decode is never
// taken as it is.
func jsonAsIs(b []byte) bool {
	var buf [64]byte
	nest := buf[:0] // the open containers, '{' or '['
	i := skipSpace(b, 0)
value:
	for {
		// A value starts at i.
		if i >= len(b) {
			return false
		}
		var ok bool
		switch c := b[i]; {
		case c == '{' || c == '[':
			if len(nest) == maxNesting {
				return false
			}
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == closer {
				i, ok = i+1, true // an empty container is a whole value
				break
			}
			nest = append(nest, c)
			if c == '{' {
				if i, ok = objectKey(b, i); !ok {
					return false
				}
			}
			continue value
		case c == '"':
			i, ok = jsonString(b, i)
		case c == 't':
			i, ok = literal(b, i, "true")
		case c == 'f':
			i, ok = literal(b, i, "false")
		case c == 'n':
			i, ok = literal(b, i, "null")
		case c == '-' || c >= '0' && c <= '9':
			i, ok = jsonNumber(b, i)
		}
		if !ok {
			return false
		}
		// A value ended at i: close containers, or go on to the next element.
		for {
			i = skipSpace(b, i)
			if len(nest) == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			top := nest[len(nest)-1]
			switch b[i] {
			case ',':
				i = skipSpace(b, i+1)
				if top == '{' {
					if i, ok = objectKey(b, i); !ok {
						return false
					}
				}
				continue value
			case '}', ']':
				if b[i] != top+2 { // '{'+2 is '}', '['+2 is ']'
					return false
				}
				nest = nest[:len(nest)-1]
				i++
			default:
				return false
			}
		}
	}
}

// maxNesting bounds jsonAsIs's nesting, as encoding/json bounds its own.
const maxNesting = 10000

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// objectKey reads `"name" :` at i and returns where the member's value starts.
func objectKey(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := jsonString(b, i)
	if !ok {
		return i, false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipSpace(b, i+1), true
}

func literal(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// plain marks the bytes a JSON string holds as they are: ASCII but the controls, the quote
// and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// jsonString reads the string that starts at b[i] == '"' and returns the index after it.
func jsonString(b []byte, i int) (int, bool) {
	i++
	for i < len(b) {
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i == len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
				continue
			case 'u':
			default:
				return i, false
			}
			r, ok := hex4(b, i+2)
			switch {
			case !ok || r == 0: // jsonb refuses \u0000
				return i, false
			case r >= 0xD800 && r < 0xDC00: // a high surrogate needs a low one next
				lo, ok := hex4(b, i+8)
				if !ok || b[i+6] != '\\' || b[i+7] != 'u' || lo < 0xDC00 || lo >= 0xE000 {
					return i, false
				}
				i += 12
			case r >= 0xDC00 && r < 0xE000:
				return i, false
			default:
				i += 6
			}
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return i, false
			}
			i += n
		}
	}
	return i, false
}

// hex4 reads the four hex digits at b[i:i+4].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// jsonNumber reads the number that starts at i: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func jsonNumber(b []byte, i int) (int, bool) {
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return i, false
		}
		i = j
	}
	exp := false
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		exp = true
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return i, false
		}
		i = j
	}
	// Without an exponent, a number shorter than numeric's scale bound fits it.
	if (exp || i-start > numericMaxScale) && !numberStorable(string(b[start:i])) {
		return i, false
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// Postgres's numeric, which jsonb keeps numbers in, holds up to numericMaxWeight digits
// before the decimal point and numericMaxScale after it (its display scale, trailing zeros
// included).
const (
	numericMaxWeight = 131072
	numericMaxScale  = 16383
)

// numberStorable reports whether numeric holds the JSON number lit.
func numberStorable(lit string) bool {
	mant, exp := lit, 0
	if j := strings.IndexAny(lit, "eE"); j >= 0 {
		e, err := strconv.Atoi(lit[j+1:])
		if err != nil || e > 1<<24 || e < -(1<<24) {
			return false
		}
		mant, exp = lit[:j], e
	}
	whole, frac, _ := strings.Cut(strings.TrimPrefix(mant, "-"), ".")
	if len(frac)-exp > numericMaxScale {
		return false
	}
	all := whole + frac
	sig := strings.TrimLeft(all, "0")
	if sig == "" {
		return true // zero
	}
	// Digits before the point, counted from the first significant one.
	return len(whole)+exp-(len(all)-len(sig)) <= numericMaxWeight
}
