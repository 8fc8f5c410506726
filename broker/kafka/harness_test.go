package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker"
)

// harness is a kfake broker for the backend's own tests.
type harness struct {
	t     *testing.T
	kf    *kfake.Cluster
	prod  *kgo.Client
	admin *kadm.Client
}

func newHarness(t *testing.T, partitions int32, topics ...string) *harness {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...))
	require.NoError(t, err)
	t.Cleanup(kf.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(kf.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	return &harness{t: t, kf: kf, prod: prod, admin: kadm.NewClient(prod)}
}

// backend starts a Broker (one node's backend) on the harness.
func (h *harness) backend(mutate func(*Config)) *Broker {
	h.t.Helper()
	cfg := DefaultConfig(h.kf.ListenAddrs()...)
	cfg.CommitInterval = time.Hour // tests save on demand
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg)
	require.NoError(h.t, err)
	h.t.Cleanup(b.Close)
	return b
}

// produce writes n records to one partition and returns their offsets.
func (h *harness) produce(topic string, partition int32, n int) []int64 {
	h.t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: partition, Value: fmt.Appendf(nil, "%d", i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(h.t, h.prod.ProduceSync(ctx, recs...).FirstErr())
	out := make([]int64, n)
	for i, r := range recs {
		out[i] = r.Offset
	}
	return out
}

// saved reads a subscription's saved positions of one topic.
func (h *harness) saved(subscription, topic string, partitions ...int32) map[int32]saved {
	h.t.Helper()
	parts := make([]tp, len(partitions))
	for i, p := range partitions {
		parts[i] = tp{topic, p}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := readSaved(ctx, h.admin, DefaultConfig().GroupPrefix+subscription, parts, slog.New(slog.DiscardHandler))
	require.NoError(h.t, err)
	out := map[int32]saved{}
	for k, s := range got {
		out[k.partition] = s
	}
	return out
}

// consume opens a consumer of subscription on b and assigns it shards.
func (h *harness) consume(b *Broker, subscription string, start broker.StartPosition, shards ...broker.ShardID) *consumer {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	spec := broker.SubscriptionSpec{Name: subscription, Topics: topicsOfShards(shards), Start: start}
	require.NoError(h.t, b.Prepare(ctx, spec, shards))
	c, err := b.Consume(ctx, spec)
	require.NoError(h.t, err)
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	c.Assign(shards)
	return c.(*consumer)
}

func topicsOfShards(shards []broker.ShardID) []string {
	var out []string
	for _, s := range shards {
		if len(out) == 0 || out[len(out)-1] != s.Topic {
			out = append(out, s.Topic)
		}
	}
	return out
}

// poll polls until n deliveries have arrived, failing the test after the
// timeout.
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

func ids(ds []broker.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

// saveNow saves every changed position and fails the test on error.
func saveNow(t *testing.T, c *consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := c.save(ctx, saveReq{})
	require.NoError(t, err)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
		time.Sleep(10 * time.Millisecond)
	}
}

func shard(topic string, p int32) broker.ShardID { return broker.ShardID{Topic: topic, Index: p} }
