package fleet

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/levee-dev/levee/internal/queue"
)

// Store is a namespace's control plane: the fleet registry, the control bucket and the shared
// breakers, on the connection of a queue.Queue (whose Names make every bucket and subject
// name).
type Store struct {
	q *queue.Queue
}

// New returns the control plane of q's namespace. It creates nothing until asked.
func New(q *queue.Queue) *Store { return &Store{q: q} }

func (s *Store) js() jetstream.JetStream { return s.q.JetStream() }
