package queue

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrNotFound: no such message (a job id not in the stream, no DLQ copy).
	ErrNotFound = errors.New("not found in stream")
	// ErrNoStream: the stream does not exist (no worker or publisher created it yet) or no
	// server answered for it.
	ErrNoStream = errors.New("stream not found")
	// ErrStreamFull: the stream refused a message because a limit was reached (Discard=New).
	// Queued work is never evicted; publish again later or raise the stream's limits.
	ErrStreamFull = errors.New("stream is full")
	// ErrJetStreamDisabled: the server has JetStream turned off.
	ErrJetStreamDisabled = errors.New("JetStream is not enabled on the NATS server (start nats-server with -js)")
)

// jsMsgDeleteFailed is JetStream's answer to deleting a message that is not there.
const jsMsgDeleteFailed jetstream.ErrorCode = 10057

// jsStoreFailed is JetStream's error code for a message the stream would not store, which is
// what a stream with Discard=New answers when a limit is reached.
const jsStoreFailed jetstream.ErrorCode = 10077

// Translate maps JetStream API errors to this package's errors, keeping the original as context.
func Translate(err error) error {
	if err == nil {
		return nil
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: %w", ErrNoStream, err)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return ErrJetStreamDisabled
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jsMsgDeleteFailed:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jsStoreFailed:
		return fmt.Errorf("%w: %w", ErrStreamFull, err)
	}
	return err
}
