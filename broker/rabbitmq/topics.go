package rabbitmq

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
)

// maxShards bounds the streams Shards asks for per topic.
const maxShards = 4096

// streamName is the stream that holds a shard: "<topic>-<index>".
func streamName(s broker.ShardID) string {
	return s.Topic + "-" + strconv.Itoa(int(s.Index))
}

// countShards asks for the streams "<topic>-0", "<topic>-1", ... until one
// is missing: the topic's shard count (0: the topic does not exist).
func (b *Broker) countShards(ctx context.Context, topic string) (int, error) {
	n := 0
	for ; n < maxShards; n++ {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
		}
		ok, err := b.env.StreamExists(streamName(broker.ShardID{Topic: topic, Index: int32(n)}))
		if err != nil {
			return 0, translate(fmt.Errorf("looking up topic %q: %w", topic, err))
		}
		if !ok {
			break
		}
	}
	return n, nil
}

// shardCount is countShards through a cache of shardCacheTTL; a missing
// topic is not cached, so that it is found as soon as it is created.
func (b *Broker) shardCount(ctx context.Context, topic string) (int, error) {
	b.mu.Lock()
	c, ok := b.shardsOf[topic]
	b.mu.Unlock()
	if ok && time.Since(c.at) < shardCacheTTL {
		return c.n, nil
	}
	n, err := b.countShards(ctx, topic)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: %q", broker.ErrTopicNotFound, topic)
	}
	b.mu.Lock()
	b.shardsOf[topic] = cachedShards{n: n, at: time.Now()}
	b.mu.Unlock()
	return n, nil
}

// Shards implements broker.Subscriber: the streams of the topics.
func (b *Broker) Shards(ctx context.Context, topics []string) ([]broker.ShardID, error) {
	var out []broker.ShardID
	for _, t := range topics {
		n, err := b.countShards(ctx, t)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: %q", broker.ErrTopicNotFound, t)
		}
		for i := range n {
			out = append(out, broker.ShardID{Topic: t, Index: int32(i)})
		}
	}
	return out, nil
}

// CreateTopic declares the streams of a topic of n shards; streams that
// exist already are kept.
func (b *Broker) CreateTopic(_ context.Context, topic string, n int) error {
	if n < 1 || n > maxShards {
		return fmt.Errorf("rabbitmq: CreateTopic: shards must be 1..%d, got %d", maxShards, n)
	}
	opts := &stream.StreamOptions{MaxAge: b.cfg.StreamMaxAge}
	for i := range n {
		err := b.env.DeclareStream(streamName(broker.ShardID{Topic: topic, Index: int32(i)}), opts)
		if err != nil && err != stream.StreamAlreadyExists {
			return translate(fmt.Errorf("declaring topic %q: %w", topic, err))
		}
	}
	return nil
}

// DeleteTopic deletes every stream of a topic.
func (b *Broker) DeleteTopic(ctx context.Context, topic string) error {
	n, err := b.countShards(ctx, topic)
	if err != nil {
		return err
	}
	for i := n - 1; i >= 0; i-- { // from the top, so that a half-done delete still counts right
		if err := b.env.DeleteStream(streamName(broker.ShardID{Topic: topic, Index: int32(i)})); err != nil {
			return translate(err)
		}
	}
	b.mu.Lock()
	delete(b.shardsOf, topic)
	b.mu.Unlock()
	return nil
}

// redact hides the password of a URI for logs and errors.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "(unparsable URI)"
	}
	return u.Redacted()
}

// subscribe and unsubscribe open and close every stream subscription of
// the backend, one at a time (subMu). The client (v1.8.3) keeps a closed
// connection in its pool for a moment and may connect it again for a new
// subscription while its old reader goroutine is still ending, a data race
// inside the client; opening only after every close of ours has finished
// lets it drop the closed connection first. Both may be called from any
// goroutine; each is one round trip, bounded by the client's RPC timeout.
func (b *Broker) subscribe(name string, handler stream.MessagesHandler, opts *stream.ConsumerOptions) (*stream.Consumer, error) {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	return b.env.NewConsumer(name, handler, opts)
}

func (b *Broker) unsubscribe(sc *stream.Consumer) {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	_ = sc.Close()
}
