package levee_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// A key that is not valid UTF-8 could not be stored in the ledger (design rule 28): Publish
// refuses it before anything is published, and PublishBatch refuses that job alone.
func TestPublishRefusesKeyNotUTF8(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	const bad = "order-\xff42"

	_, err := b.client.Publish(ctx, "noop", map[string]int{"n": 1}, levee.WithKey(bad))
	require.ErrorContains(t, err, "invalid idempotency key: not valid UTF-8")

	results, err := b.client.PublishBatch(ctx, []levee.JobSpec{
		{Kind: "noop", Payload: map[string]int{"n": 2}, Key: bad},
		{Kind: "noop", Payload: map[string]int{"n": 3}, Key: "order-43"},
	}, nil)
	require.NoError(t, err)
	require.ErrorContains(t, results[0].Err, "invalid idempotency key: not valid UTF-8")
	require.NoError(t, results[1].Err, "the valid job beside it is published")
	st, err := b.client.Status(ctx, results[1].ID)
	require.NoError(t, err)
	require.Equal(t, levee.StateQueued, st.State)
}
