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
	// Attempts counts the deliveries of this message before this fetch,
	// as saved with the shard's position (0: never delivered). The node
	// reports each delivery with Consumer.Delivered, so the count survives
	// a move of the shard to another node and a restart.
	Attempts uint32
}

// SubscriptionSpec names a subscription and what it reads.
type SubscriptionSpec struct {
	Name   string
	Topics []string
	Start  StartPosition
	// Standing, when set, reports whether this node may still act as the
	// reader of the shards it was assigned: false while its membership of
	// the cluster is in doubt (it was frozen, cut off, or suspected), when
	// another node may be taking its shards over. The consumer saves no
	// position while it is false. It is called from the consumer's own
	// goroutines, right before each save, and must be cheap and
	// non-blocking. nil: always true (a node without a cluster).
	Standing func() bool
}

// Subscriber opens the consume side of the backend, one Consumer per
// subscription per node. It is safe for concurrent use.
type Subscriber interface {
	// Shards lists the shards of the topics, failing with ErrTopicNotFound
	// when one does not exist.
	Shards(ctx context.Context, topics []string) ([]ShardID, error)
	// Prepare makes the subscription exist: every one of shards gets a
	// saved position, the spec's start where it had none. Prepares that
	// run at once on several nodes agree on one position per shard. The
	// node calls it before it answers a subscriber's open, so that every
	// message published after that answer is delivered.
	Prepare(ctx context.Context, spec SubscriptionSpec, shards []ShardID) error
	// Consume opens a consumer for spec. It fetches nothing until Assign
	// gives it shards.
	Consume(ctx context.Context, spec SubscriptionSpec) (Consumer, error)
}

// ShardEventKind says what happened to a shard under its reader.
type ShardEventKind int

const (
	// ShardLost: another reader has taken the shard (this consumer's saves
	// of it were fenced). The consumer has forgotten it; the node stops
	// delivering it, and the messages of it in flight are void: their acks
	// are ignored, and the new reader delivers them again.
	ShardLost ShardEventKind = iota + 1
	// ShardReset: the shard's log changed under the reader (its topic was
	// deleted and created again, or the log was truncated). The consumer
	// reads it again from its position in the new log; messages of it in
	// flight or fetched before are void.
	ShardReset
)

// ShardEvent reports a change of one shard that the node must act on.
type ShardEvent struct {
	Shard  ShardID
	Kind   ShardEventKind
	Reason string
}

// Consumer reads the shards this node owns for one subscription and keeps
// the subscription's position from the acks it is given. How the position
// is saved (Kafka: committed offsets) is the backend's business; what a
// position is stays opaque to the node.
//
// Memory: a consumer holds, per shard, at most its configured limit of
// messages fetched and not yet saved (undelivered, in flight, or acked and
// not saved); at the limit it stops fetching the shard until saves or
// releases bring it down. The node relies on that bound: it polls only
// while some subscriber could take more than is queued for it, but what a
// Poll returns for a shard whose subscriber is full waits in the node's
// queue, so the node holds at most the per-shard limit times the shards
// it reads (every message it queues counts in the limit until saved).
//
// Saves are fenced: when a reader starts reading a shard it takes the
// shard's owner fence, which makes every later save by an earlier reader
// fail, so a reader that was frozen or cut off can never move a saved
// position backwards. A consumer whose save is fenced forgets the shard and
// reports ShardLost.
//
// Assign, Release, Delivered, Ack, Confirm and TakeEvents may be called
// from any goroutine; Poll from one goroutine at a time. Close stops
// everything and saves the acked position.
type Consumer interface {
	// Assign sets the shards this node reads. It returns at once; shards
	// that arrive start at the saved position (skipping messages acked
	// before) once the backend has told it. Shards that leave stop being
	// fetched at once but still take acks for what is in flight, until
	// Release. A shard assigned again before its Release resumes after the
	// last acked message (the node dropped what it had not delivered).
	Assign(shards []ShardID)
	// Release saves the acked position of shards no longer assigned and
	// forgets them, retrying until it succeeds or ctx ends. The position
	// saved includes every ack applied before the call. Only these shards'
	// saves matter: another shard that fails to save does not hold them. A
	// shard whose save is fenced (another reader has it already) counts as
	// released. After it returns nil, another node may read the shards
	// from that position.
	Release(ctx context.Context, shards []ShardID) error
	// Poll waits up to about a second for fetched messages, returning at
	// most max. While the backend fails to fetch, Poll returns an error
	// wrapping ErrUnavailable (with any messages that did arrive) and the
	// consumer re-subscribes with backoff until fetching works again.
	Poll(ctx context.Context, max int) ([]Delivery, error)
	// Delivered records that messages were handed to a subscriber (once
	// per delivery), so that their attempt counts are saved with the
	// position. Unknown ids are ignored.
	Delivered(ids ...string)
	// Ack marks delivered messages done. Unknown or repeated ids are
	// ignored.
	Ack(ids ...string)
	// Confirm is called after the node's standing was in doubt, before it
	// delivers again: it saves the position of each of shards this
	// consumer reads or holds, with its fence, and returns those another
	// reader has taken meanwhile (forgotten, as with ShardLost, without an
	// event). Shards still loading are loaded again. It retries until every
	// shard is settled or ctx ends.
	Confirm(ctx context.Context, shards []ShardID) (lost []ShardID, err error)
	// Abandon forgets shards without saving them: the node learned that
	// another reader has them. Their acks are ignored from now on.
	Abandon(shards []ShardID)
	// Events receives a value (capacity 1, coalesced) when TakeEvents has
	// something.
	Events() <-chan struct{}
	// TakeEvents returns the shard events since the last call, at most one
	// per shard (the latest).
	TakeEvents() []ShardEvent
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

// ShardProgress is a subscription's progress on one shard as the backend
// has it saved: what any node would resume from, whether or not anyone is
// subscribed. It holds counts, never backend positions.
type ShardProgress struct {
	Shard ShardID
	// Saved says whether the subscription has a saved position on the
	// shard.
	Saved bool
	// Backlog counts the messages of the shard that the saved position
	// does not mark acked: those after it, less the acks above it that
	// were saved with it. Acks not saved yet still count (see
	// Inspector.Unsaved). Without a saved position it counts from where a
	// reader would start: the shard's first message still held for a
	// subscription that starts at the earliest, else the first message
	// published after the subscription was created, else (when the
	// backend does not know when) the first message still held. Messages
	// the backend has dropped (retention) do not count. It counts
	// positions, so on a compacted shard it errs high. -1: the backend
	// cannot tell (for example the topic no longer exists).
	Backlog int64
}

// Inspector is implemented by backends that can report a subscription's
// saved progress without reading it; the node type-asserts its backend.
//
// Both methods are read-only: they change no position, take no fence and
// disturb no reader. They may be called from any goroutine, at the same
// time as each other and as the subscription's consumers; what they report
// is a snapshot that a save may change the next moment.
type Inspector interface {
	// Inspect reports every shard of topics (every topic on which the
	// subscription has a saved position, when topics is empty), sorted by
	// topic and index. A topic named in topics that does not exist fails
	// with ErrTopicNotFound. An empty answer with a nil error, for empty
	// topics, means the backend has no saved position of the subscription
	// at all: it does not know it. Cost: a handful of requests to the
	// backend per call, however many messages the shards hold (Kafka: the
	// group's committed offsets, topic metadata, start and end offsets,
	// and offsets by time when a shard has no saved position).
	Inspect(ctx context.Context, subscription string, topics []string) ([]ShardProgress, error)
	// Unsaved counts, per shard, the messages acked through this
	// process's consumers of the subscription that the saved position
	// does not include yet; they are saved at the next save (at most the
	// save interval later). Shards without such acks are absent; other
	// nodes' acks are theirs to count. It reads memory only and never
	// blocks on the backend; it costs one pass over the shards the
	// consumers hold.
	Unsaved(subscription string) map[ShardID]int64
}
