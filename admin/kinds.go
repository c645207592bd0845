package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/levee-dev/levee/internal/queue"
)

// ErrUnknownKind is returned (wrapped, with the nearest known kind when there is one) by the
// kind actions for a kind that nothing knows: no worker serves it or ever did, no job of it is
// in the stream or the dead-letter queue, and it is not paused and has no shared breaker. Acting on it would change
// nothing, so it is most likely a typo.
var ErrUnknownKind = errors.New("unknown kind")

// KindWorkers returns how many live workers serve kind, as the fleet registry counts them.
func (c *Client) KindWorkers(ctx context.Context, kind string) (int, error) {
	members, err := c.fleet.Members(ctx)
	if err != nil {
		return 0, err
	}
	return len(members[kind]), nil
}

// knownKinds returns every kind Levee knows of in the namespace: with a consumer or jobs in
// the stream, jobs scheduled in the ledger or a periodic job, a live worker, a pause or a
// shared breaker record.
func (c *Client) knownKinds(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	work, err := c.conn.Q.WorkStats(ctx, 0)
	switch {
	case errors.Is(err, queue.ErrNoStream):
	case err != nil:
		return nil, err
	default:
		for k := range work.Kinds {
			seen[k] = true
		}
	}
	members, err := c.fleet.Members(ctx)
	if err != nil {
		return nil, err
	}
	for k := range members {
		seen[k] = true
	}
	paused, err := c.fleet.Paused(ctx)
	if err != nil {
		return nil, err
	}
	for k := range paused {
		seen[k] = true
	}
	records, err := c.breakerRecords(ctx)
	if err != nil {
		return nil, err
	}
	for k := range records {
		seen[k] = true
	}
	if c.conn.Ledger != nil { // jobs that wait in the ledger for their time
		scheduled, err := c.conn.Ledger.CountScheduled(ctx)
		if err != nil {
			return nil, err
		}
		for k := range scheduled {
			seen[k] = true
		}
		periodic, err := c.conn.Ledger.ListPeriodic(ctx)
		if err != nil {
			return nil, err
		}
		for _, e := range periodic {
			if e.Def.Kind != "" {
				seen[e.Def.Kind] = true
			}
		}
	}
	kinds := make([]string, 0, len(seen))
	for k := range seen {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds, nil
}

// checkKind returns an error wrapping ErrUnknownKind, naming the nearest known kind, unless
// kind is known (knownKinds).
func (c *Client) checkKind(ctx context.Context, kind string) error {
	if err := queue.ValidateKind(kind); err != nil {
		return fmt.Errorf("%w: %w", ErrUnknownKind, err)
	}
	kinds, err := c.knownKinds(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(kinds, kind) {
		return nil
	}
	// Last, the dead-letter queue (a read of its headers): a kind whose jobs all died is known.
	dead, err := c.conn.Q.DeadStats(ctx)
	if err != nil && !errors.Is(err, queue.ErrNoStream) {
		return err
	}
	if dead != nil {
		if _, ok := dead.ByKind[kind]; ok {
			return nil
		}
		for k := range dead.ByKind {
			kinds = append(kinds, k)
		}
	}
	best, bestD := "", 3 // suggest within an edit distance of 2
	for _, k := range kinds {
		if d := editDistance(kind, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Errorf("%w %q: no worker serves it and no job of it is waiting; did you mean %q?", ErrUnknownKind, kind, best)
	}
	return fmt.Errorf("%w %q: no worker serves it and no job of it is waiting", ErrUnknownKind, kind)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
