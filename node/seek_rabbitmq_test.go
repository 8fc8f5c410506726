package node_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker/rabbitmq"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
)

// The acceptance test on RabbitMQ streams: a seek to the earliest with
// subscribers on two nodes delivers every message once more, each shard in
// order, then nothing more.
func TestSeek_RabbitMQEarliestOnTwoNodesRedeliversEverythingOnceInShardOrder(t *testing.T) {
	srv := startRabbit(t)
	const topic, shards, n = "rq-seek", 4, 80
	backend := func() *rabbitmq.Broker {
		cfg := rabbitmq.DefaultConfig(srv.URI())
		cfg.SaveInterval = 100 * time.Millisecond
		b, err := rabbitmq.New(cfg)
		require.NoError(t, err)
		return b
	}
	admin := backend()
	require.NoError(t, admin.CreateTopic(t.Context(), topic, shards))
	admin.Close()
	e1 := testenv.Start(t, testenv.Options{Backend: backend(), Gossip: true, NodeName: "node-1"})
	e2 := testenv.Start(t, testenv.Options{Backend: backend(), Gossip: true, NodeName: "node-2", Join: []string{e1.Gossip.LocalAddr()}})
	testenv.WaitConverged(t, e1, e2)

	subs := []*testenv.Subscriber{
		testenv.Subscribe(t, e1.Client, earliest("s", topic)),
		testenv.Subscribe(t, e2.Client, earliest("s", topic)),
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for _, s := range subs {
		ackLoop(t, s, stop, &wg)
	}
	p := e1.Client.Publisher(client.PublishSettings{})
	var rs []*client.PublishResult
	for i := range n {
		rs = append(rs, p.Publish(t.Context(), client.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Payload: fmt.Appendf(nil, "m:%d", i)}))
	}
	for _, r := range rs {
		_, err := r.Get(t.Context())
		require.NoError(t, err)
	}
	require.NoError(t, p.Close())
	require.Eventually(t, func() bool { return subs[0].Count()+subs[1].Count() == n }, 30*time.Second, 20*time.Millisecond)
	before := []int{subs[0].Count(), subs[1].Count()}
	firsts := map[string]int{}
	for _, s := range subs {
		for shard, seqs := range assertShardOrder(t, s.Messages()) {
			firsts[shard] = seqs[0]
		}
	}

	_, err := seekTo(e2, seekEarliest("s"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return subs[0].Count()+subs[1].Count() == 2*n }, 30*time.Second, 20*time.Millisecond, "every message once more")
	require.Never(t, func() bool { return subs[0].Count()+subs[1].Count() > 2*n }, 1500*time.Millisecond, 50*time.Millisecond, "nothing more")
	seen := map[string]bool{}
	for i, s := range subs {
		again := s.Messages()[before[i]:]
		for _, m := range again {
			require.False(t, seen[m.GetId()], "message %s delivered twice after the seek", m.GetId())
			seen[m.GetId()] = true
		}
		for shard, seqs := range assertShardOrder(t, again) {
			assert.Equal(t, firsts[shard], seqs[0], "shard %s starts again at its first message", shard)
		}
		require.NotEmpty(t, seekNotices(s), "subscriber %d is told", i)
	}
	assert.Len(t, seen, n)
}
