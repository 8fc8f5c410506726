package rabbitmq

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/internal/rabbitmqtest"
)

func TestMain(m *testing.M) { rabbitmqtest.Main(m) }

var topicSeq atomic.Int64

// newTopic creates a topic with a name unique to this run.
func newTopic(t *testing.T, b *Broker, shards int) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e9, topicSeq.Add(1))
	require.NoError(t, b.CreateTopic(context.Background(), name, shards))
	return name
}

// backend starts a Broker on the shared server.
func backend(t *testing.T, mutate func(*Config)) *Broker {
	t.Helper()
	srv := rabbitmqtest.Require(t)
	cfg := DefaultConfig(srv.URI())
	cfg.SaveInterval = time.Hour // tests save on demand
	cfg.PublishTimeout = 5 * time.Second
	cfg.SaveTimeout = 5 * time.Second
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// publish publishes msgs and waits for every result.
func publish(t *testing.T, b *Broker, msgs ...*broker.Message) []broker.PublishResult {
	t.Helper()
	res := make(chan broker.PublishResult, len(msgs))
	for _, m := range msgs {
		b.Publish(context.Background(), m, func(r broker.PublishResult) { res <- r })
	}
	out := make([]broker.PublishResult, 0, len(msgs))
	timeout := time.After(30 * time.Second)
	for range msgs {
		select {
		case r := <-res:
			out = append(out, r)
		case <-timeout:
			t.Fatalf("got %d of %d publish results", len(out), len(msgs))
		}
	}
	return out
}

// consume prepares and opens a consumer of subscription and assigns shards.
func consume(t *testing.T, b *Broker, subscription string, start broker.StartPosition, shards ...broker.ShardID) *consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	spec := broker.SubscriptionSpec{Name: subscription, Topics: []string{shards[0].Topic}, Start: start}
	require.NoError(t, b.Prepare(ctx, spec, shards))
	c, err := b.Consume(ctx, spec)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	c.Assign(shards)
	return c.(*consumer)
}

// poll polls until n deliveries arrived, failing after timeout.
func poll(t *testing.T, c broker.Consumer, n int, timeout time.Duration) []broker.Delivery {
	t.Helper()
	var out []broker.Delivery
	deadline := time.Now().Add(timeout)
	for len(out) < n {
		require.True(t, time.Now().Before(deadline), "got %d of %d deliveries before the deadline", len(out), n)
		ds, _ := c.Poll(context.Background(), n-len(out))
		out = append(out, ds...)
	}
	return out
}

// quiet asserts that nothing more arrives for a while.
func quiet(t *testing.T, c broker.Consumer, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ds, _ := c.Poll(context.Background(), 100)
		require.Empty(t, ds, "unexpected deliveries")
	}
}

func ids(ds []broker.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func saveNow(t *testing.T, c *consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := c.save(ctx, saveReq{})
	require.NoError(t, err)
}

func shard(topic string, i int32) broker.ShardID { return broker.ShardID{Topic: topic, Index: i} }

func msg(topic, key string, i int) *broker.Message {
	m := &broker.Message{Topic: topic, Payload: fmt.Appendf(nil, "%d", i)}
	if key != "" {
		m.Key = []byte(key)
	}
	return m
}

func requireServer(t *testing.T) *rabbitmqtest.Server { return rabbitmqtest.Require(t) }
