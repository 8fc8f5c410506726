package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
)

// translate wraps a franz-go or Kafka error in the broker sentinel that
// says what the gateway should do about it; the original text is kept.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		sentinel = broker.ErrTopicNotFound
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge),
		errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage),
		errors.Is(err, kerr.InvalidTopicException):
		sentinel = broker.ErrInvalidMessage
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.Is(err, kerr.GroupAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed),
		// The gateway's own credentials were refused: no retry helps until
		// an operator fixes them.
		errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism),
		errors.Is(err, kerr.IllegalSaslState):
		sentinel = broker.ErrPermissionDenied
	case errors.Is(err, kgo.ErrClientClosed):
		sentinel = broker.ErrClosed
	case errors.Is(err, context.Canceled):
		return err
	default:
		// Timeouts, exhausted retries, unreachable brokers and any broker
		// error we do not classify: the backend did not take the message,
		// and a later attempt may succeed.
		sentinel = broker.ErrUnavailable
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}
