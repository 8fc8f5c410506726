package kafka

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/internal/leaktest"
)

func subCfg(name string, n int) broker.SubscriptionConfig {
	return broker.SubscriptionConfig{Name: name, Topics: []string{fmt.Sprintf("t%d", n)}, MaxUnacked: n}
}

// TestSubscriptionTopicCreatedCompactedOnFirstWrite: reading a store that
// was never written creates nothing; the first write creates the topic,
// compacted, with one partition.
func TestSubscriptionTopicCreatedCompactedOnFirstWrite(t *testing.T) {
	h := newHarness(t, 1)
	b := h.backend(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := b.cfg.SubscriptionsTopic
	list, err := b.ListSubscriptions(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	details, err := h.admin.ListTopics(ctx, topic)
	require.NoError(t, err)
	require.False(t, details.Has(topic), "a read created the topic")

	_, err = b.CreateSubscription(ctx, subCfg("a", 1))
	require.NoError(t, err)
	h.admin.Close() // its metadata cache says the topic does not exist
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kf.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	h.admin = kadm.NewClient(cl)
	details, err = h.admin.ListTopics(ctx, topic)
	require.NoError(t, err)
	require.True(t, details.Has(topic))
	require.Len(t, details[topic].Partitions, 1)
	cfgs, err := h.admin.DescribeTopicConfigs(ctx, topic)
	require.NoError(t, err)
	c, err := cfgs.On(topic, nil)
	require.NoError(t, err)
	got := map[string]string{}
	for _, kv := range c.Configs {
		if kv.Value != nil {
			got[kv.Key] = *kv.Value
		}
	}
	assert.Equal(t, "compact", got["cleanup.policy"])
	assert.Equal(t, subsCompactionLag, got["min.compaction.lag.ms"])
}

// TestSubscriptionStoreSeesATopicCreatedElsewhere: a Broker that read the
// store before the topic existed sees the first write of another Broker,
// and its SubscriptionChanges fires.
func TestSubscriptionStoreSeesATopicCreatedElsewhere(t *testing.T) {
	h := newHarness(t, 1)
	b1, b2 := h.backend(nil), h.backend(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	list, err := b2.ListSubscriptions(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	changes := b2.SubscriptionChanges()

	c, err := b1.CreateSubscription(ctx, subCfg("a", 1))
	require.NoError(t, err)
	select {
	case <-changes:
	case <-ctx.Done():
		t.Fatal("SubscriptionChanges did not fire")
	}
	got, err := b2.GetSubscription(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, c, got)
}

// TestSubscriptionStoreAfterCompaction: after racing writes (rejected
// records, restates, deletes with tombstones), the broker compacts the
// topic; a new Broker reading what is left gets the same subscriptions as
// the Brokers that read every record.
func TestSubscriptionStoreAfterCompaction(t *testing.T) {
	h := newHarness(t, 1)
	bs := []*Broker{h.backend(nil), h.backend(nil), h.backend(nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	names := []string{"a", "b", "c", "d"}
	for _, n := range names {
		_, err := bs[0].CreateSubscription(ctx, subCfg(n, 0))
		require.NoError(t, err)
	}
	// Every Broker has read the creates: their updates race on versions.
	for _, b := range bs[1:] {
		waitFor(t, 10*time.Second, "the creates", func() bool {
			l, err := b.ListSubscriptions(ctx)
			return err == nil && len(l) == len(names)
		})
	}
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 10 {
				n := names[round%len(names)]
				cur, err := b.GetSubscription(ctx, n)
				if err != nil {
					continue
				}
				up := subCfg(n, 100*i+round)
				up.Version = cur.Version
				_, _ = b.UpdateSubscription(ctx, up) // a lost race is expected
				if round == 5+i && i < 2 {
					_ = b.DeleteSubscription(ctx, names[i], 0)
				}
			}
		}()
	}
	wg.Wait()
	// The writes are done: every Broker's view reaches the log's end.
	var want []broker.SubscriptionConfig
	waitFor(t, 10*time.Second, "the Brokers to agree", func() bool {
		var lists [][]broker.SubscriptionConfig
		for _, b := range bs {
			l, err := b.ListSubscriptions(ctx)
			require.NoError(t, err)
			lists = append(lists, l)
		}
		want = lists[0]
		return assert.ObjectsAreEqual(lists[0], lists[1]) && assert.ObjectsAreEqual(lists[0], lists[2])
	})

	written := h.records(bs[0].cfg.SubscriptionsTopic)
	h.kf.Compact()
	left := h.records(bs[0].cfg.SubscriptionsTopic)
	require.Less(t, len(left), len(written), "compaction removed records")

	fresh := h.backend(nil)
	got, err := fresh.ListSubscriptions(ctx)
	require.NoError(t, err)
	if !assert.Equal(t, want, got) {
		t.Logf("the log before compaction:\n%s\nafter:\n%s", strings.Join(written, "\n"), strings.Join(left, "\n"))
	}
}

// records reads a topic's one partition from its start to its end, one
// line per record.
func (h *harness) records(topic string) []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := h.admin.ListEndOffsets(ctx, topic)
	require.NoError(h.t, err)
	end, _ := ends.Lookup(topic, 0)
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kf.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	require.NoError(h.t, err)
	defer cl.Close()
	var out []string
	for {
		fs := cl.PollFetches(ctx)
		require.NoError(h.t, ctx.Err(), "reading %s", topic)
		last := int64(-1)
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, fmt.Sprintf("%d %s %s", r.Offset, r.Key, r.Value))
			last = r.Offset
		})
		if last >= end.Offset-1 {
			return out
		}
	}
}

// TestSubscriptionStoreCloseStopsItsGoroutines: Close ends the store's
// reader and its client.
func TestSubscriptionStoreCloseStopsItsGoroutines(t *testing.T) {
	h := newHarness(t, 1)
	ignore := goleak.IgnoreCurrent()
	cfg := DefaultConfig(h.kf.ListenAddrs()...)
	b, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = b.CreateSubscription(ctx, subCfg("a", 1))
	require.NoError(t, err)
	b.Close()
	require.NoError(t, leaktest.Eventually(leaktest.Patience, ignore))
}

// TestSubscriptionStoreBrokerFaults: a store whose broker fails does not
// answer "not found" from a view that has not read the topic, and a write
// the broker refuses fails with the sentinel that says why.
func TestSubscriptionStoreBrokerFaults(t *testing.T) {
	h := newHarness(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := h.backend(nil).CreateSubscription(ctx, subCfg("a", 1))
	require.NoError(t, err)

	f := h.kf.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Err: kerr.UnknownServerError, Count: -1})
	b := h.backend(nil)
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	_, err = b.GetSubscription(short, "a")
	require.ErrorIs(t, err, broker.ErrUnavailable)
	require.NotErrorIs(t, err, broker.ErrSubscriptionNotFound)
	f.Remove()
	got, err := b.GetSubscription(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, []string{"t1"}, got.Topics)

	f = h.kf.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.TopicAuthorizationFailed, Count: -1})
	defer f.Remove()
	_, err = b.CreateSubscription(ctx, subCfg("b", 2))
	require.ErrorIs(t, err, broker.ErrPermissionDenied)
}
