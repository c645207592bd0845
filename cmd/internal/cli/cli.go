// Package cli holds what the worker and enqueue binaries share: flags bound to LEVEE_*
// environment variables, usage errors with exit code 2, and the logger setup.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/levee-dev/levee/internal/core"
	"github.com/nats-io/nats.go"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// Exit codes shared by both binaries.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// UsageError is a mistake in the command line: exit code 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ExitCodeError ends the command with Code after printing Err (if not nil).
type ExitCodeError struct {
	Code int
	Err  error
}

func (e *ExitCodeError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitCodeError) Unwrap() error { return e.Err }

const envAnnotation = "levee_env"

// BindEnv makes flag take its value from env when the flag is not given. The variable is named
// in the flag's help; its value is never shown there (it may hold a secret).
func BindEnv(cmd *cobra.Command, flag, env string) {
	f := cmd.Flags().Lookup(flag)
	if f == nil {
		f = cmd.PersistentFlags().Lookup(flag)
	}
	if f == nil {
		panic("cli: no flag " + flag)
	}
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[envAnnotation] = []string{env}
	f.Usage += " (env " + env + ")"
}

// applyEnv sets every unset flag bound with BindEnv from its environment variable.
func applyEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		envs := f.Annotations[envAnnotation]
		if err != nil || f.Changed || len(envs) == 0 {
			return
		}
		if v, ok := os.LookupEnv(envs[0]); ok && v != "" {
			if serr := f.Value.Set(v); serr != nil {
				err = Usagef("invalid %s: %v", envs[0], serr)
			}
		}
	})
	return err
}

// Prepare sets up a command tree the way both binaries want it: errors returned, not printed
// by cobra; flag and argument mistakes become UsageErrors; environment variables applied
// before every command runs; an unknown subcommand is a usage error.
func Prepare(root *cobra.Command) {
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.Version = Version()
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	// 'completion bash|zsh|fish|powershell' prints a completion script (cobra adds the command
	// when it runs, writing to the output Execute sets).
	root.CompletionOptions.HiddenDefaultCmd = true
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.SuggestionsMinimumDistance = 2
		c.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
			return &UsageError{Err: err}
		})
		if c.Args != nil {
			args := c.Args
			c.Args = func(c *cobra.Command, a []string) error {
				if err := args(c, a); err != nil {
					return &UsageError{Err: err}
				}
				return nil
			}
		}
		if c.HasSubCommands() && c.RunE == nil && c.Run == nil {
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(c *cobra.Command, a []string) error {
				if len(a) > 0 {
					if near := c.SuggestionsFor(a[0]); len(near) > 0 {
						return Usagef("unknown command %q for %q; did you mean %q?", a[0], c.CommandPath(), near[0])
					}
					return Usagef("unknown command %q for %q", a[0], c.CommandPath())
				}
				return Usagef("%s needs a command", c.CommandPath())
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	prev := root.PersistentPreRunE
	root.PersistentPreRunE = func(c *cobra.Command, a []string) error {
		if err := applyEnv(c); err != nil {
			return err
		}
		if prev != nil {
			return prev(c, a)
		}
		return nil
	}
}

// Execute runs root with args and returns the process exit code, printing errors to stderr
// in one line (usage errors add a pointer to --help).
func Execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var usage *UsageError
	var code *ExitCodeError
	switch {
	case errors.As(err, &code):
		if code.Err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", root.Name(), code.Err)
		}
		return code.Code
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", root.Name(), oneLine(err), cmd.CommandPath())
		return ExitUsage
	}
	fmt.Fprintf(stderr, "%s: %v\n", root.Name(), oneLine(err))
	return ExitError
}

// oneLine folds a multi-line error (pgx writes some) into one line.
func oneLine(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, " ")
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// NewLogger returns the process logger: text on a terminal, JSON otherwise, at level
// (debug, info, warn, error).
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, Usagef("invalid log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration { // "30s", not 30000000000
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	if IsTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// ConnectHint adds to err the setting to check when it is a core.ConnectError: the NATS or
// the Postgres URL.
func ConnectHint(err error) error {
	var ce *core.ConnectError
	if !errors.As(err, &ce) {
		return err
	}
	if ce.Service == "postgres" {
		return fmt.Errorf("%w; check --database-url or LEVEE_DATABASE_URL", err)
	}
	return fmt.Errorf("%w; check --nats-url or LEVEE_NATS_URL", err)
}

// Connection holds the flags both binaries use to reach NATS and Postgres.
type Connection struct {
	NATSURL     string
	DatabaseURL string
	Namespace   string

	// NATS authentication and TLS; all optional. Postgres TLS and credentials go in the URL.
	NATSCreds    string // .creds file (JWT + NKey seed)
	NATSNKey     string // NKey seed file
	NATSUser     string
	NATSPassword string
	NATSToken    string
	NATSTLSCA    string // CA certificate file to verify the server
	NATSTLSCert  string // client certificate file
	NATSTLSKey   string // client key file
}

// NATSOptions turns the authentication and TLS flags into connection options.
func (c *Connection) NATSOptions() ([]nats.Option, error) {
	var opts []nats.Option
	auth := 0
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
		auth++
	}
	if c.NATSNKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NATSNKey)
		if err != nil {
			return nil, Usagef("--nats-nkey %s: %v", c.NATSNKey, err)
		}
		opts = append(opts, o)
		auth++
	}
	if c.NATSUser != "" || c.NATSPassword != "" {
		if c.NATSUser == "" {
			return nil, Usagef("--nats-password needs --nats-user")
		}
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
		auth++
	}
	if c.NATSToken != "" {
		opts = append(opts, nats.Token(c.NATSToken))
		auth++
	}
	if auth > 1 {
		return nil, Usagef("give one way to authenticate to NATS: --nats-creds, --nats-nkey, --nats-user/--nats-password or --nats-token")
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return nil, Usagef("--nats-tls-cert and --nats-tls-key go together")
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	for _, f := range []struct{ flag, path string }{
		{"--nats-creds", c.NATSCreds}, {"--nats-tls-ca", c.NATSTLSCA}, {"--nats-tls-cert", c.NATSTLSCert}, {"--nats-tls-key", c.NATSTLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, Usagef("%s: %v", f.flag, err)
		}
	}
	return opts, nil
}

// AddConnectionFlags adds --nats-url, --database-url and --namespace to cmd's persistent
// flags, bound to LEVEE_NATS_URL, LEVEE_DATABASE_URL and LEVEE_NAMESPACE.
func AddConnectionFlags(cmd *cobra.Command, c *Connection, natsDefault, dbDefault, nsDefault string) {
	fs := cmd.PersistentFlags()
	fs.StringVar(&c.NATSURL, "nats-url", natsDefault, "NATS server URL")
	fs.StringVar(&c.DatabaseURL, "database-url", dbDefault, "Postgres URL; Levee's tables live in the schema named by --namespace")
	fs.StringVar(&c.Namespace, "namespace", nsDefault, "prefix of stream, consumer and subject names, and the Postgres schema")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "NATS credentials file (.creds)")
	fs.StringVar(&c.NATSNKey, "nats-nkey", "", "NATS NKey seed file")
	fs.StringVar(&c.NATSUser, "nats-user", "", "NATS user name")
	fs.StringVar(&c.NATSPassword, "nats-password", "", "NATS password (prefer the environment variable)")
	fs.StringVar(&c.NATSToken, "nats-token", "", "NATS token (prefer the environment variable)")
	fs.StringVar(&c.NATSTLSCA, "nats-tls-ca", "", "CA certificate file to verify the NATS server")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", "", "client certificate file for NATS TLS")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", "", "client key file for NATS TLS")
	BindEnv(cmd, "nats-url", "LEVEE_NATS_URL")
	BindEnv(cmd, "database-url", "LEVEE_DATABASE_URL")
	BindEnv(cmd, "namespace", "LEVEE_NAMESPACE")
	for flag, env := range map[string]string{
		"nats-creds": "LEVEE_NATS_CREDS", "nats-nkey": "LEVEE_NATS_NKEY", "nats-user": "LEVEE_NATS_USER",
		"nats-password": "LEVEE_NATS_PASSWORD", "nats-token": "LEVEE_NATS_TOKEN", "nats-tls-ca": "LEVEE_NATS_TLS_CA",
		"nats-tls-cert": "LEVEE_NATS_TLS_CERT", "nats-tls-key": "LEVEE_NATS_TLS_KEY",
	} {
		BindEnv(cmd, flag, env)
	}
}

// Version describes the binary: the module's version, the commit it was built from (and
// whether the tree had changes), and the Go version, as `--version` prints them.
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(no build information)"
	}
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", with changes"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	out := v
	if rev != "" {
		out += fmt.Sprintf(" (commit %s%s, %s)", rev, dirty, at)
	}
	return out + " " + info.GoVersion
}

// Count writes n and noun, plural unless n is 1: "1 job", "3 jobs", "1 dead job".
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
