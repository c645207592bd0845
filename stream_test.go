package levee_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// streamEmpty reports whether the namespace's work stream holds no messages.
func streamEmpty(t *testing.T, b *bundle) bool {
	js, err := jetstream.New(leveetest.Conn(t, b.nats))
	require.NoError(t, err)
	names, err := queue.NewNames(b.ns)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), names.JobsStream())
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs == 0
}
