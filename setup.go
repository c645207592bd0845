package levee

import (
	"cmp"
	"context"

	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/internal/worker"
)

// ErrSetup is wrapped by the error of a Worker.Run, or of a Client call that uses the
// streams (Publish, Stats, Replay, ...), refused because an existing stream or consumer lacks
// what Levee relies on (design rule 34): a work stream with memory storage or limits
// retention, say. The error's message is one line naming the stream or consumer, the
// setting, what Levee needs and the fix.
var ErrSetup = queue.ErrSetup

// SetupProblem is one way an existing stream or consumer differs from what Levee relies on.
// Fatal problems refuse the start; the others are warnings, logged at start.
type SetupProblem struct {
	Fatal bool `json:"fatal"`
	// Stream names the stream; Consumer the consumer on it, or "" for the stream itself.
	Stream   string `json:"stream"`
	Consumer string `json:"consumer,omitempty"`
	// Setting names what differs: storage, retention, subjects, discard, ack policy, ...
	Setting string `json:"setting"`
	// Message is the problem in one line, with what Levee needs and the fix.
	Message string `json:"message"`
}

// CheckSetup checks the namespace's existing streams (jobs, dead letters, advisories) and the
// existing consumers of the kinds registered so far against what Levee relies on, as Run does
// before it starts. It connects to NATS only, and creates and changes nothing: streams and
// consumers that do not exist yet are no problem, since Run creates them right. The error
// reports a failure to connect or to look.
func (w *Worker) CheckSetup(ctx context.Context) ([]SetupProblem, error) {
	cfg := w.cfg
	nc := cfg.Conn
	if nc == nil {
		var err error
		nc, err = core.ConnectNATS(cmp.Or(cfg.NATSURL, DefaultNATSURL), "levee-check", cfg.NATSOptions)
		if err != nil {
			return nil, err
		}
		defer nc.Close()
	}
	q, err := queue.New(queue.Config{Conn: nc, Namespace: cfg.Namespace, Stream: queue.StreamConfig{Replicas: cfg.StreamReplicas}})
	if err != nil {
		return nil, err
	}
	if err := q.CheckJetStream(ctx); err != nil {
		return nil, err
	}
	w.mu.Lock()
	kinds := make([]queue.ConsumerConfig, len(w.kinds))
	for i, k := range w.kinds {
		kinds[i] = consumerConfig(k)
	}
	w.mu.Unlock()
	problems, err := q.CheckSetup(ctx, kinds)
	if err != nil {
		return nil, err
	}
	out := make([]SetupProblem, len(problems))
	for i, p := range problems {
		out[i] = SetupProblem{Fatal: p.Fatal, Stream: p.Stream, Consumer: p.Consumer, Setting: p.Setting, Message: p.Message}
	}
	return out, nil
}

// consumerConfig is the consumer Run gives kind k.
func consumerConfig(k worker.Kind) queue.ConsumerConfig { return worker.ConsumerConfig(k) }
