package node_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker/rabbitmq"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/rabbitmqtest"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// startRabbit starts a private rabbitmq-server for one test, or skips (fails
// in CI) when it is not installed.
func startRabbit(t *testing.T) *rabbitmqtest.Server {
	t.Helper()
	srv, err := rabbitmqtest.Start()
	switch {
	case errors.Is(err, rabbitmqtest.ErrNotInstalled) && os.Getenv("CI") != "true":
		t.Skipf("%v", err)
	case err != nil:
		t.Fatalf("rabbitmq-server: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// TestRabbitMQ_TwoNodesHandShardsOverOnAJoinAndAKill runs two nodes of a
// cluster on RabbitMQ streams: a subscriber on the second node takes over
// part of the shards from the first node's subscriber when it joins, all
// of them when the first node is killed, and every message published
// through it all is handled.
func TestRabbitMQ_TwoNodesHandShardsOverOnAJoinAndAKill(t *testing.T) {
	srv := startRabbit(t)
	const topic, shards = "rq-cluster", 4
	backend := func() *rabbitmq.Broker {
		cfg := rabbitmq.DefaultConfig(srv.URI())
		cfg.SaveInterval = 200 * time.Millisecond
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

	var (
		mu      sync.Mutex
		handled = map[string]string{} // payload -> subscriber
		shardOf = map[string]map[string]bool{}
	)
	receive := func(ctx context.Context, c *client.Client, name string) chan error {
		sub := c.Subscription("rq-sub", topic)
		sub.ReceiveSettings.FromBeginning = true
		done := make(chan error, 1)
		go func() {
			done <- sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
				mu.Lock()
				handled[string(m.Payload)] = name
				if shardOf[name] == nil {
					shardOf[name] = map[string]bool{}
				}
				shardOf[name][m.Shard] = true
				mu.Unlock()
				m.Ack()
			})
		}()
		return done
	}
	publish := func(c *client.Client, from, n int) {
		p := c.Publisher(client.PublishSettings{})
		var rs []*client.PublishResult
		for i := from; i < from+n; i++ {
			rs = append(rs, p.Publish(t.Context(), client.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Payload: fmt.Appendf(nil, "m%d", i)}))
		}
		for _, r := range rs {
			_, err := r.Get(t.Context())
			require.NoError(t, err)
		}
		require.NoError(t, p.Close())
	}
	allHandled := func(n int, by string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			for i := range n {
				if _, ok := handled[fmt.Sprintf("m%d", i)]; !ok {
					return false
				}
			}
			return by == "" || len(shardOf[by]) > 0
		}
	}

	ctxA, stopA := context.WithCancel(t.Context())
	defer stopA()
	doneA := receive(ctxA, e1.Client, "a")
	publish(e1.Client, 0, 200)
	require.Eventually(t, allHandled(200, "a"), 30*time.Second, 20*time.Millisecond, "the first subscriber handles everything")

	// A second subscriber on the other node: shards move to it.
	ctxB, stopB := context.WithCancel(t.Context())
	defer stopB()
	doneB := receive(ctxB, e2.Client, "b")
	publish(e2.Client, 200, 200)
	require.Eventually(t, allHandled(400, "b"), 30*time.Second, 20*time.Millisecond, "the joining subscriber takes shards over")
	mu.Lock()
	t.Logf("after the join: a read %d shards, b %d", len(shardOf["a"]), len(shardOf["b"]))
	clear(shardOf["b"])
	mu.Unlock()

	// The first node dies: its shards go to the second.
	e1.Kill()
	stopA()
	require.NoError(t, <-doneA)
	publish(e2.Client, 400, 200)
	require.Eventually(t, func() bool {
		if !allHandled(600, "")() {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		return len(shardOf["b"]) == shards
	}, 60*time.Second, 20*time.Millisecond, "after the kill the survivor reads every shard and nothing is lost")
	stopB()
	require.NoError(t, <-doneB)
}

// TestRabbitMQ_MaxUnackedStallsAndAServerRestart runs one node on RabbitMQ
// streams through the scenarios the Kafka tests cover: a subscriber at its
// max un-acked gets nothing more until it acks; one that stalls past the
// ack timeout gets DEADLINE_EXCEEDED and its messages go to another; a
// rabbitmq-server restart gives UNAVAILABLE notices, then OK, and nothing
// published is lost.
func TestRabbitMQ_MaxUnackedStallsAndAServerRestart(t *testing.T) {
	srv := startRabbit(t)
	const topic = "rq-single"
	cfg := rabbitmq.DefaultConfig(srv.URI())
	cfg.SaveInterval = 200 * time.Millisecond
	b, err := rabbitmq.New(cfg)
	require.NoError(t, err)
	require.NoError(t, b.CreateTopic(t.Context(), topic, 2))
	e := testenv.Start(t, testenv.Options{Backend: b, Node: func(c *node.Config) { c.AckTimeout = time.Second }})
	publishTo := func(from, n int) {
		p := e.Client.Publisher(client.PublishSettings{})
		defer p.Close()
		var rs []*client.PublishResult
		for i := from; i < from+n; i++ {
			rs = append(rs, p.Publish(t.Context(), client.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Payload: fmt.Appendf(nil, "m%d", i)}))
		}
		for _, r := range rs {
			_, err := r.Get(t.Context())
			require.NoError(t, err)
		}
	}
	publishTo(0, 50)

	// Max un-acked: 10 and no more until acks.
	limited := testenv.Subscribe(t, e.Client, &pb.Open{Subscription: "rq-limit", Topics: []string{topic}, StartPosition: pb.StartPosition_START_POSITION_EARLIEST, MaxUnacked: 10})
	msgs := limited.WaitCount(10, 20*time.Second)
	require.Never(t, func() bool { return limited.Count() > 10 }, 300*time.Millisecond, 20*time.Millisecond)
	ids := make([]string, 5)
	for i, m := range msgs[:5] {
		ids[i] = m.GetId()
	}
	limited.Ack(ids...)
	limited.WaitCount(15, 10*time.Second)
	limited.Close()

	// A stall past the ack timeout ends the stream; another subscriber
	// gets its messages.
	stalled := testenv.Subscribe(t, e.Client, &pb.Open{Subscription: "rq-stall", Topics: []string{topic}, StartPosition: pb.StartPosition_START_POSITION_EARLIEST})
	stalled.WaitCount(50, 20*time.Second)
	st := stalled.WaitEnd(10 * time.Second)
	require.Equal(t, codes.DeadlineExceeded, st.Code(), st.Message())

	// A server restart under a running Receive loop.
	var mu sync.Mutex
	seen := map[string]bool{}
	var notices []client.Notice
	sub := e.Client.Subscription("rq-stall", topic)
	sub.ReceiveSettings.OnNotice = func(n client.Notice) { mu.Lock(); notices = append(notices, n); mu.Unlock() }
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
			mu.Lock()
			seen[string(m.Payload)] = true
			mu.Unlock()
			m.Ack()
		})
	}()
	all := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			for i := range n {
				if !seen[fmt.Sprintf("m%d", i)] {
					return false
				}
			}
			return true
		}
	}
	require.Eventually(t, all(50), 20*time.Second, 20*time.Millisecond, "the stalled subscriber's messages reach the next one")
	require.NoError(t, srv.Restart())
	noticed := func(code codes.Code) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.ContainsFunc(notices, func(n client.Notice) bool { return n.Code == code })
		}
	}
	require.Eventually(t, noticed(codes.Unavailable), 30*time.Second, 20*time.Millisecond, "an UNAVAILABLE notice during the restart")
	require.Eventually(t, noticed(codes.OK), 60*time.Second, 20*time.Millisecond, "an OK notice when delivery resumes")
	publishTo(50, 50)
	require.Eventually(t, all(100), 60*time.Second, 20*time.Millisecond, "nothing is lost across the restart")
	cancel()
	require.NoError(t, <-done)
}
