package rabbitmq

import (
	"context"
	"errors"
	"fmt"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
)

// translate wraps a stream client error in the broker sentinel that says
// what the gateway should do about it; the original text is kept.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	switch {
	case errors.Is(err, broker.ErrTopicNotFound), errors.Is(err, broker.ErrInvalidMessage),
		errors.Is(err, broker.ErrUnavailable), errors.Is(err, broker.ErrPermissionDenied),
		errors.Is(err, broker.ErrClosed):
		return err // translated already
	case errors.Is(err, stream.StreamDoesNotExist):
		sentinel = broker.ErrTopicNotFound
	case errors.Is(err, stream.FrameTooLarge), errors.Is(err, errTooLarge):
		sentinel = broker.ErrInvalidMessage
	case errors.Is(err, stream.CodeAccessRefused), errors.Is(err, stream.AuthenticationFailure),
		errors.Is(err, stream.VirtualHostAccessFailure), errors.Is(err, stream.AuthenticationFailureLoopbackError):
		sentinel = broker.ErrPermissionDenied
	case errors.Is(err, context.Canceled):
		return err
	default:
		// Lost connections, timeouts, a stream whose leader is not ready,
		// and anything not classified: a later attempt may succeed.
		sentinel = broker.ErrUnavailable
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

// confirmError maps the error code of a failed publish confirmation.
func confirmError(code uint16, err error) error {
	switch code { // the stream protocol's response codes
	case 2: // stream_does_not_exist
		return fmt.Errorf("%w: %w", broker.ErrTopicNotFound, err)
	case 16: // access_refused
		return fmt.Errorf("%w: %w", broker.ErrPermissionDenied, err)
	}
	if err == nil {
		err = fmt.Errorf("publish failed with code %d", code)
	}
	return translate(err)
}

var errTooLarge = errors.New("message too large")
