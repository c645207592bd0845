package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/cmd/internal/cli"
)

// healthBodyLimit bounds how much of the answer `worker health` prints.
const healthBodyLimit = 64 << 10

type healthOptions struct {
	url     string
	timeout time.Duration
}

// newHealthCmd returns `worker health`, a probe for images without a shell (the container
// image has no curl or wget): it asks a running worker's HTTP endpoint and exits 0 on 200.
func newHealthCmd() *cobra.Command {
	o := &healthOptions{}
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask a running worker's /readyz (or another URL) and exit 0 if it answers 200",
		Long: `health sends GET to --url and prints the answer. It exits 0 when the status is 200 OK, and 1
otherwise: another status, no answer within --timeout, or no connection. It is meant for
container health checks, where the image has no shell, curl or wget; the worker must serve
HTTP (--http-addr).`,
		Example: `  worker health
  worker health --url http://127.0.0.1:9090/healthz --timeout 1s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runHealth(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.url, "url", "http://127.0.0.1:9090/readyz", "URL to GET")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "how long to wait for the answer")
	return cmd
}

func runHealth(ctx context.Context, stdout io.Writer, o *healthOptions) error {
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cli.Usagef("invalid --url %q: give an http or https URL such as http://127.0.0.1:9090/readyz", o.url)
	}
	if o.timeout <= 0 {
		return cli.Usagef("invalid --timeout %s: use a positive duration such as 2s", o.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return cli.Usagef("invalid --url %q: %v", o.url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if _, err := io.Copy(stdout, io.LimitReader(resp.Body, healthBodyLimit)); err != nil {
		return fmt.Errorf("health: read %s: %w", u.Redacted(), err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: GET %s: %s", u.Redacted(), resp.Status)
	}
	return nil
}
