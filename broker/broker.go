// Package broker is the backend contract of streamgate, in gateway words.
//
// node/ talks only to these interfaces; broker/kafka implements them with
// franz-go. A Pulsar or RabbitMQ backend implements the same interfaces and
// nothing in node/ changes. Words such as offset, partition, commit and
// consumer group never appear here: a message has an opaque id, a topic is
// split into shards, and a subscriber acks.
package broker

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors every backend returns (wrapped with %w) so that node/ can
// map them to gRPC codes in one place without knowing the backend.
var (
	// ErrTopicNotFound: the topic does not exist and is not auto-created.
	ErrTopicNotFound = errors.New("topic not found")
	// ErrInvalidMessage: the backend rejects the message itself (too large,
	// malformed); retrying the same message cannot succeed.
	ErrInvalidMessage = errors.New("invalid message")
	// ErrUnavailable: the backend cannot be reached or did not confirm in
	// time; retrying later may succeed.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrPermissionDenied: the backend refuses the gateway's credentials for
	// this resource.
	ErrPermissionDenied = errors.New("permission denied by backend")
	// ErrClosed: the backend client was closed.
	ErrClosed = errors.New("backend closed")
)

// Header is one message header. Keys may repeat; order is kept.
type Header struct {
	Key   string
	Value []byte
}

// Message is what a client publishes.
type Message struct {
	Topic   string
	Key     []byte // equal keys land on the same shard, in order
	Payload []byte
	Headers []Header
}

// Size is the number of bytes the message holds, the unit of the gateway's
// memory caps.
func (m *Message) Size() int {
	n := len(m.Topic) + len(m.Key) + len(m.Payload)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// PublishResult is the outcome of one Publish: the message id on success,
// or an error that wraps one of the sentinels above.
type PublishResult struct {
	ID  string
	Err error
}

// Publisher writes messages to the backend.
//
// Publish may be called from many goroutines at once. It returns without
// waiting for the backend; done is then called exactly once, from a
// goroutine of the backend's, and must not block. For messages of one
// shard, done is called in the order Publish was called. ctx bounds only
// the hand-off to the backend (for example while its buffers are full); a
// message already handed off is confirmed or failed by the backend's own
// timeout.
type Publisher interface {
	Publish(ctx context.Context, msg *Message, done func(PublishResult))
}

// Pinger reports whether the backend answers; it backs the readiness probe.
type Pinger interface {
	Ping(ctx context.Context) error
}

// StartPosition says where a subscription with no saved position starts.
type StartPosition int

const (
	// StartLatest: only messages published after the subscription starts.
	StartLatest StartPosition = iota
	// StartEarliest: every message the backend still holds.
	StartEarliest
)

// ShardID names one shard: an ordered sub-stream of a topic. Its string
// form is opaque to clients.
type ShardID struct {
	Topic string
	Index int32
}

// Delivery is one fetched message, ready to hand to a subscriber.
type Delivery struct {
	ID          string // opaque and stable across redeliveries
	Shard       ShardID
	Message     Message
	PublishTime time.Time
}

// SubscriptionSpec names a subscription and what it reads.
type SubscriptionSpec struct {
	Name   string
	Topics []string
	Start  StartPosition
}

// Subscriber opens the consume side of the backend, one Consumer per
// subscription per node. It is safe for concurrent use.
type Subscriber interface {
	// Shards lists the shards of the topics, failing with ErrTopicNotFound
	// when one does not exist.
	Shards(ctx context.Context, topics []string) ([]ShardID, error)
	// Consume opens a consumer for spec. It fetches nothing until Assign
	// gives it shards.
	Consume(ctx context.Context, spec SubscriptionSpec) (Consumer, error)
}

// Consumer reads the shards this node owns for one subscription and keeps
// the subscription's position from the acks it is given. How the position
// is saved (Kafka: committed offsets) and when a busy shard stops being
// fetched are the backend's business.
//
// Assign and Ack may be called from any goroutine; Poll from one goroutine
// at a time. Close stops everything and saves the acked position.
type Consumer interface {
	// Assign sets the shards this node reads. It returns at once; shards
	// that arrive start at the saved position (skipping messages acked
	// before) once the backend has told it. Shards that leave stop being
	// fetched at once but still take acks for what is in flight, until
	// Release. A shard assigned again before its Release resumes after the
	// last acked message (the node dropped what it had not delivered).
	Assign(shards []ShardID)
	// Release saves the acked position of shards no longer assigned and
	// forgets them, retrying until it succeeds or ctx ends. After it
	// returns nil, another node may read the shards from that position.
	Release(ctx context.Context, shards []ShardID) error
	// Poll waits up to about a second for fetched messages, returning at
	// most max. While the backend fails to fetch, Poll returns an error
	// wrapping ErrUnavailable (with any messages that did arrive) and the
	// consumer re-subscribes with backoff until fetching works again.
	Poll(ctx context.Context, max int) ([]Delivery, error)
	// Ack marks delivered messages done. Unknown or repeated ids are
	// ignored.
	Ack(ids ...string)
	// Close saves the acked position (trying until ctx ends) and stops the
	// consumer. Messages fetched and not acked are fetched again by
	// whoever reads their shard next.
	Close(ctx context.Context) error
}

// BacklogReporter is implemented by backends that can tell how many
// messages of a shard follow a subscription's saved position.
type BacklogReporter interface {
	Backlog(ctx context.Context, subscription string, shards []ShardID) (map[ShardID]int64, error)
}
