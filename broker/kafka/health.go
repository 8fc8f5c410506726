// Health and backlog: healthHook notices brokers that cannot be reached
// (franz-go calls it on its own goroutines; it only stores atomics), and
// healthLocked turns that, failed partitions and missing topics into the
// error Poll returns (with consumer.mu held). Backlog answers the admin
// service's status from any goroutine.

package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
)

// healthHook notices brokers that cannot be reached: with direct
// partition consumption franz-go reports no error from PollFetches when a
// broker is down (FACTS.md), so a failed connect since the last good fetch
// response counts as unavailable.
type healthHook struct {
	lastFail atomic.Int64 // unix nanos of the last failed connect
	lastOK   atomic.Int64 // unix nanos of the last fetch response read
	failErr  atomic.Pointer[error]
}

func (h *healthHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.failErr.Store(&err)
		h.lastFail.Store(time.Now().UnixNano())
	}
}

func (h *healthHook) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil && key == 1 { // Fetch
		h.lastOK.Store(time.Now().UnixNano())
	}
}

func (h *healthHook) err() error {
	// Fetch responses arrive at least every FetchMaxWait while the
	// brokers answer; a failed connect (say, to a dead seed among live
	// brokers) counts only once they have stopped for a second.
	ok := h.lastOK.Load()
	if f := h.lastFail.Load(); f != 0 && f > ok && time.Since(time.Unix(0, ok)) > time.Second {
		return fmt.Errorf("connecting to the broker: %w", *h.failErr.Load())
	}
	return nil
}

// healthLocked says whether fetching works: no partition is waiting to be
// re-subscribed, every topic exists, and the last connection attempt did
// not fail.
func (c *consumer) healthLocked() error {
	if c.topicErr != nil {
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, c.topicErr)
	}
	for _, ps := range c.parts {
		if ps.phase == phaseFailed || (ps.phase == phaseLoading && ps.fails > 0) {
			return fmt.Errorf("%w: %w", broker.ErrUnavailable, c.lastErr)
		}
	}
	if err := c.health.err(); err != nil {
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
	}
	c.lastErr = nil
	return nil
}

var _ broker.BacklogReporter = (*Broker)(nil)

// Backlog implements broker.BacklogReporter: end offset minus committed
// offset (or the log start when nothing is committed).
func (b *Broker) Backlog(ctx context.Context, subscription string, shards []broker.ShardID) (map[broker.ShardID]int64, error) {
	adm := kadm.NewClient(b.producer)
	var topics []string
	for _, s := range shards {
		if !slices.Contains(topics, s.Topic) {
			topics = append(topics, s.Topic)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, translate(err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, translate(err)
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, b.cfg.GroupPrefix+subscription, topics...)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, translate(err)
	}
	out := make(map[broker.ShardID]int64, len(shards))
	for _, s := range shards {
		end, ok := ends.Lookup(s.Topic, s.Index)
		if !ok || end.Err != nil {
			continue
		}
		from := int64(0)
		if st, ok := starts.Lookup(s.Topic, s.Index); ok && st.Err == nil {
			from = st.Offset
		}
		if c, ok := committed.Lookup(s.Topic, s.Index); ok && c.Err == nil && c.At >= 0 {
			from = c.At
		}
		out[s] = max(end.Offset-from, 0)
	}
	return out, nil
}
