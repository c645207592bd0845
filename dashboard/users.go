package dashboard

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// ParseUsers reads dashboard accounts, one per line as NAME:ROLE:HASH, where ROLE is viewer
// or operator and HASH is the bcrypt hash of the password (`enqueue ui hash-password`), the
// hex SHA-256 of it (printf %s "$PASSWORD" | sha256sum; unsalted, accepted for older files), or
// "-" for a user who signs in only through the trusted proxy header. Blank lines and lines
// starting with # are skipped; commas separate entries too, so one environment variable can
// hold several. The error names the bad line.
func ParseUsers(r io.Reader) (map[string]User, error) {
	users := map[string]User{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		for entry := range strings.SplitSeq(sc.Text(), ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" || strings.HasPrefix(entry, "#") {
				continue
			}
			name, u, err := parseUser(entry)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			if _, dup := users[name]; dup {
				return nil, fmt.Errorf("line %d: user %q is listed twice", n, name)
			}
			users[name] = u
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return users, nil
}

func parseUser(entry string) (string, User, error) {
	parts := strings.Split(entry, ":")
	if len(parts) != 3 || parts[0] == "" {
		return "", User{}, fmt.Errorf("%q: give NAME:ROLE:HASH (or NAME:ROLE:- for proxy-only users)", redactEntry(entry))
	}
	name, role, hash := parts[0], Role(parts[1]), parts[2]
	if role != RoleViewer && role != RoleOperator {
		// The field is not echoed: a misplaced password would land in a log.
		return "", User{}, fmt.Errorf("user %q: the role (second field) must be viewer or operator", name)
	}
	u := User{Role: role}
	switch {
	case hash == "-":
	case strings.HasPrefix(hash, "$2"):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return "", User{}, fmt.Errorf("user %q: the password hash is not a valid bcrypt hash; make one with `enqueue ui hash-password`", name)
		}
		u.PasswordHash = hash
	default:
		b, err := hex.DecodeString(hash)
		if err != nil || len(b) != 32 {
			return "", User{}, fmt.Errorf("user %q: the password hash must be a bcrypt hash (`enqueue ui hash-password`) or 64 hex digits (the SHA-256 of the password), not the password itself", name)
		}
		u.PasswordSHA256 = b
	}
	return name, u, nil
}

// redactEntry keeps a malformed entry's name only: its rest may be a password.
func redactEntry(entry string) string {
	name, _, _ := strings.Cut(entry, ":")
	return name + ":…"
}
