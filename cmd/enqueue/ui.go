package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/dashboard"
)

// uiOptions are ui's flags.
type uiOptions struct {
	addr           string
	readOnly       bool
	usersFile      string
	proxyHeader    string
	trustedProxies []string
	allowPayloads  bool
	redactKinds    []string
	minPoll        time.Duration
	prefix         string
}

func newUICmd(conn *cli.Connection) *cobra.Command {
	var o uiOptions
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web dashboard",
		Long: `Serve the web dashboard on --addr: an overview of the namespace, its kinds, its jobs (find one
by id or idempotency key), each job's attempts, and the dead-letter queue. Operators can retry
and cancel jobs, replay and purge dead jobs (selected ones, or all matching a filter), pause and
resume kinds, and reset breakers: the same actions as the CLI, written to the audit log with
who did them. It needs NATS and Postgres.

Users: without authentication the dashboard binds to loopback only and everyone who reaches it
is an operator. To serve anything else, authenticate users:

  --users-file FILE, or the accounts themselves in LEVEE_UI_USERS: one NAME:ROLE:HASH a line
  (or comma-separated), ROLE viewer or operator, HASH the bcrypt hash of the password
  ('enqueue ui hash-password' makes one) or, for older files, its hex SHA-256; users sign in
  with HTTP basic auth (use TLS in front). Failed sign-ins are throttled (10 a minute per
  address and per user), and a users file that others can read is warned about.

  --trusted-proxy-header with --trusted-proxies: a proxy in those address ranges names the
  user in that header; the user's role is theirs in the users file, else viewer.

Viewers see everything but payloads (unless --allow-payloads) and change nothing;
--read-only refuses every change for everyone; --redact-kinds hides the payloads of those
kinds from everyone. Counts come from one aggregate computed at most every --min-poll, shared
by every open page.

Exit codes: 0 stopped by a signal, 1 error (such as the address in use), 2 usage error.`,
		Example: `  enqueue ui
  enqueue ui --addr 127.0.0.1:9090 --read-only
  LEVEE_UI_USERS="ada:operator:$(printf %s "$PW" | enqueue ui hash-password)" enqueue ui --addr :8080
  enqueue ui --addr 0.0.0.0:8080 --users-file /etc/levee/ui-users --redact-kinds charge,email
  enqueue ui --addr 10.0.0.5:8080 --trusted-proxy-header X-Forwarded-User --trusted-proxies 10.0.0.0/24`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUI(cmd, conn, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address to listen on; anything but loopback needs authentication")
	fs.BoolVar(&o.readOnly, "read-only", false, "refuse every state change (403) and hide the action buttons")
	fs.StringVar(&o.usersFile, "users-file", "", "file of dashboard users, one NAME:ROLE:HASH a line (HASH from 'enqueue ui hash-password')")
	fs.StringVar(&o.proxyHeader, "trusted-proxy-header", "", "header naming the user, believed only from --trusted-proxies, e.g. X-Forwarded-User")
	fs.StringSliceVar(&o.trustedProxies, "trusted-proxies", nil, "address ranges (CIDRs) of the proxies that set --trusted-proxy-header")
	fs.BoolVar(&o.allowPayloads, "allow-payloads", false, "show payloads to viewers too (operators always see them)")
	fs.StringSliceVar(&o.redactKinds, "redact-kinds", nil, "kinds whose payloads nobody sees in the dashboard")
	fs.DurationVar(&o.minPoll, "min-poll", 5*time.Second, "shortest interval between two counts over the stores, and the pages' refresh (at least 1s)")
	fs.StringVar(&o.prefix, "prefix", "", "path the dashboard is served under, e.g. /levee behind a proxy that forwards that path unchanged")
	cmd.AddCommand(newHashPasswordCmd())
	cli.BindEnv(cmd, "addr", "LEVEE_UI_ADDR")
	cli.BindEnv(cmd, "users-file", "LEVEE_UI_USERS_FILE")
	return cmd
}

func runUI(cmd *cobra.Command, conn *cli.Connection, o uiOptions) error {
	opts, err := o.dashboardOptions(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if err := checkExposure(o.addr, opts); err != nil {
		return err
	}
	ctx := cmd.Context()
	c, _, err := openClient(ctx, conn, clientNeeds{db: true})
	if err != nil {
		return err
	}
	defer c.Close()
	logger, err := cli.NewLogger(cmd.ErrOrStderr(), "info")
	if err != nil {
		return err
	}
	opts.Logger = logger
	d, err := dashboard.New(admin.New(c), opts)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	defer d.Close()
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listen on --addr %s: %w", o.addr, err)
	}
	srv := &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	// Without users, the URL carries this run's token: only who holds it can use the dashboard.
	fmt.Fprintf(cmd.OutOrStdout(), "dashboard on %s (namespace %s)%s\n", d.LocalURL("http://"+ln.Addr().String()), conn.Namespace, map[bool]string{true: ", read-only"}[o.readOnly])
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// dashboardOptions checks the flags and turns them into the dashboard's options.
func (o uiOptions) dashboardOptions(stderr io.Writer) (dashboard.Options, error) {
	opts := dashboard.Options{
		ReadOnly: o.readOnly, TrustedProxyHeader: o.proxyHeader, AllowPayloads: o.allowPayloads,
		RedactKinds: o.redactKinds, MinPoll: o.minPoll, Prefix: o.prefix,
	}
	if o.prefix != "" && (!strings.HasPrefix(o.prefix, "/") || strings.HasSuffix(o.prefix, "/")) {
		return opts, cli.Usagef("invalid --prefix %q: give a path such as /levee (starting with /, not ending with one)", o.prefix)
	}
	if o.minPoll < time.Second {
		return opts, cli.Usagef("invalid --min-poll %s: give at least 1s", o.minPoll)
	}
	if (o.proxyHeader == "") != (len(o.trustedProxies) == 0) {
		return opts, cli.Usagef("--trusted-proxy-header and --trusted-proxies go together: give both, or neither")
	}
	for _, s := range o.trustedProxies {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return opts, cli.Usagef("invalid --trusted-proxies %q: give address ranges such as 10.0.0.0/24", s)
		}
		opts.TrustedProxies = append(opts.TrustedProxies, p.Masked())
	}
	env := os.Getenv("LEVEE_UI_USERS")
	switch {
	case o.usersFile != "" && env != "":
		return opts, cli.Usagef("give users with --users-file or LEVEE_UI_USERS, not both")
	case o.usersFile != "":
		f, err := os.Open(o.usersFile)
		if err != nil {
			return opts, cli.Usagef("--users-file: %v", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(stderr, "enqueue: warning: --users-file %s can be read by others (mode %04o): chmod 600 it\n", o.usersFile, fi.Mode().Perm())
		}
		if opts.Users, err = dashboard.ParseUsers(f); err != nil {
			return opts, cli.Usagef("--users-file %s: %v", o.usersFile, err)
		}
	case env != "":
		users, err := dashboard.ParseUsers(strings.NewReader(env))
		if err != nil {
			return opts, cli.Usagef("LEVEE_UI_USERS: %v", err)
		}
		opts.Users = users
	}
	return opts, nil
}

// checkExposure refuses to serve a non-loopback address without authentication.
func checkExposure(addr string, opts dashboard.Options) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return cli.Usagef("invalid --addr %q: give HOST:PORT, e.g. 127.0.0.1:8080", addr)
	}
	if opts.Authenticated() {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return cli.Usagef("--addr %s is not loopback: serving it needs authentication (--users-file or LEVEE_UI_USERS, or --trusted-proxy-header with --trusted-proxies)", addr)
}

func newHashPasswordCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hash-password",
		Short: "Print the bcrypt hash of a password, for --users-file and LEVEE_UI_USERS",
		Long: `Reads a password (asked for without echo on a terminal, else the first line of standard
input) and prints its bcrypt hash, the HASH of a NAME:ROLE:HASH line of --users-file or
LEVEE_UI_USERS.

Exit codes: 0 printed, 1 error, 2 usage error (an empty password).`,
		Example: `  enqueue ui hash-password                     # asks for it
  printf %s "$PW" | enqueue ui hash-password`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var pw []byte
			if f, ok := cmd.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				fmt.Fprint(cmd.ErrOrStderr(), "password: ")
				b, err := term.ReadPassword(int(f.Fd()))
				fmt.Fprintln(cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				pw = b
			} else {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				pw = []byte(strings.TrimRight(line, "\r\n"))
			}
			if len(pw) == 0 {
				return cli.Usagef("the password is empty")
			}
			if len(pw) > 72 {
				return cli.Usagef("the password is longer than bcrypt's 72 bytes")
			}
			hash, err := bcrypt.GenerateFromPassword(pw, bcrypt.DefaultCost)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(hash))
			return nil
		},
	}
}
