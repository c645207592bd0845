package admin

import (
	"context"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/leveetype"
)

// Client is the operator's view of a Levee namespace. It shares the connections of the
// levee.Client it was made from and is safe for concurrent use; closing that Client ends it.
type Client struct {
	conn     *core.Conn
	fleet    *fleet.Store // the fleet registry, control and breakers buckets
	overview overviewCache
}

// New returns the operator Client of c, which must not be nil. Reads and most actions need
// the ledger: make c with a ClientConfig that has DatabaseURL or Pool (calls that need it
// return ErrDatabaseRequired).
func New(c *levee.Client) *Client {
	conn := core.ConnOf(c)
	return &Client{conn: conn, fleet: fleet.New(conn.Q)}
}

// JobGet reports what Levee knows of job id, as levee.Client.Status does.
func (c *Client) JobGet(ctx context.Context, id string) (*leveetype.JobStatus, error) {
	return c.conn.Status(ctx, id)
}
