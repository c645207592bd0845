package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
)

func newMigrateCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ledger's migrations to the namespace's schema and exit",
		Long: `migrate creates the schema named by --namespace (default levee) if needed and applies every
pending migration, under a Postgres advisory lock. It is safe to run while workers run, and
from several places at once. The worker does the same at start unless --no-migrate is given.`,
		Example: `  worker migrate --database-url postgres://postgres@127.0.0.1:5432/postgres`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cli.NewLogger(cmd.ErrOrStderr(), o.logLevel)
			if err != nil {
				return err
			}
			applied, err := levee.Migrate(cmd.Context(), o.conn.DatabaseURL, o.conn.Namespace, logger)
			if err != nil {
				return cli.ConnectHint(err)
			}
			if len(applied) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "schema %s is up to date\n", o.conn.Namespace)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schema %s: applied migrations %v\n", o.conn.Namespace, applied)
			return nil
		},
	}
}
