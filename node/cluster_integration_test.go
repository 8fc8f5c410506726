package node_test

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/internal/testenv"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
	"github.com/streamgate/streamgate/ring"
)

// claimsOf returns shard -> claiming nodes, as the nodes gossip them.
func claimsOf(env *testenv.Env, sub string) map[string][]string {
	out := map[string][]string{}
	for node, st := range env.Gossip.View().Nodes {
		for _, c := range st.Subscriptions[sub].Claims {
			out[c] = append(out[c], node)
		}
	}
	return out
}

// expectedOwners is the ring's assignment over the given subscribers.
func expectedOwners(subs map[string]*testenv.Subscriber, shards int) map[string]string {
	idTo := map[string]string{}
	for name, s := range subs {
		idTo[s.Opened.GetSubscriberId()] = name
	}
	names := make([]string, shards)
	for p := range shards {
		names[p] = fmt.Sprintf("t/%d", p)
	}
	out := map[string]string{}
	for shard, id := range ring.Assign(slices.Collect(maps.Keys(idTo)), names) {
		out[shard] = idTo[id]
	}
	return out
}

// ackLoop acks everything s receives until stop is closed.
func ackLoop(t *testing.T, s *testenv.Subscriber, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		acked := 0
		for {
			msgs := s.Messages()
			if len(msgs) > acked {
				ids := make([]string, 0, len(msgs)-acked)
				for _, m := range msgs[acked:] {
					ids = append(ids, m.GetId())
				}
				if err := s.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{MessageIds: ids}}}); err != nil {
					return
				}
				acked = len(msgs)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
}

// Cluster 1: one subscription, subscribers on three nodes.
func TestCluster_SubscribersOnThreeNodesShareShardsFairlyEachReadByOneNode50000InOrder(t *testing.T) {
	const shards, n = 12, 50000
	envs := testenv.StartCluster(t, 3, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(time.Second)})
	subs := map[string]*testenv.Subscriber{}
	for i, env := range envs {
		subs[fmt.Sprintf("s%d", i+1)] = testenv.Subscribe(t, env.Client, earliest("s", "t"))
	}
	expect := expectedOwners(subs, shards)
	per := map[string]int{}
	for _, who := range expect {
		per[who]++
	}
	assert.Equal(t, map[string]int{"s1": 4, "s2": 4, "s3": 4}, per, "fair: 12 shards over 3 subscribers")

	// After convergence each shard is claimed by exactly one node: the
	// node of its owner.
	nodeOf := map[string]string{"s1": "node-1", "s2": "node-2", "s3": "node-3"}
	require.Eventually(t, func() bool {
		for _, env := range envs {
			claims := claimsOf(env, "s")
			for shard, who := range expect {
				if !slices.Equal(claims[shard], []string{nodeOf[who]}) {
					return false
				}
			}
		}
		return true
	}, 15*time.Second, 20*time.Millisecond, "every shard claimed by its owner's node only")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range subs {
		ackLoop(t, s, stop, &wg)
	}
	produceSpread(t, envs[0], "t", shards, n, 0)
	require.Eventually(t, func() bool {
		total := 0
		for _, s := range subs {
			total += s.Count()
		}
		return total >= n
	}, 2*time.Minute, 50*time.Millisecond)
	close(stop)
	wg.Wait()

	seen := map[string]bool{}
	for name, s := range subs {
		for _, m := range s.Messages() {
			require.False(t, seen[m.GetId()], "message %s delivered twice", m.GetId())
			seen[m.GetId()] = true
			require.Equal(t, name, expect[m.GetShard()], "shard %s delivered to the wrong subscriber", m.GetShard())
		}
		assertShardOrder(t, s.Messages())
	}
	require.Len(t, seen, n)
}

// Cluster 2: a join on another node moves the ring's shards there; messages
// in flight stay with their holder.
func TestCluster_JoinOnAnotherNodeTakesItsShareAfterInFlightMessagesAreAcked(t *testing.T) {
	const shards = 8
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(200 * time.Millisecond)})
	a := testenv.Subscribe(t, envs[0].Client, earliest("s", "t"))
	produceSpread(t, envs[0], "t", shards, 80, 0)
	held := a.WaitCount(80, 10*time.Second) // a holds 80 un-acked messages

	changes := metricValue(t, envs[0], "streamgate_cluster_assignment_changes_total")
	joined := time.Now()
	b := testenv.Subscribe(t, envs[1].Client, earliest("s", "t"))
	subs := map[string]*testenv.Subscriber{"a": a, "b": b}
	expect := expectedOwners(subs, shards)
	var moved []string
	for shard, who := range expect {
		if who == "b" {
			moved = append(moved, shard)
		}
	}
	require.Len(t, moved, 4, "b takes its fair share")
	// a's node has applied the join (it moved the shards) before anything
	// new is published: what it fetched before that is a's to deliver.
	require.Eventually(t, func() bool {
		return metricValue(t, envs[0], "streamgate_cluster_assignment_changes_total") >= changes+4
	}, 10*time.Second, 10*time.Millisecond, "a's node sees b")

	produceSpread(t, envs[0], "t", shards, 80, 80)
	require.Never(t, func() bool { return b.Count() > 0 }, time.Second, 20*time.Millisecond,
		"b receives nothing of a moved shard while a holds its messages")
	require.Eventually(t, func() bool { return a.Count() == 120 }, 10*time.Second, 10*time.Millisecond,
		"a still gets its own shards' new messages: a has %d, b %d; a's notices %v", a.Count(), b.Count(), a.Notices())
	assert.Equal(t, 80, len(held))

	ids := []string{}
	for _, m := range a.Messages() {
		ids = append(ids, m.GetId())
	}
	acked := time.Now()
	a.Ack(ids...)
	msgs := b.WaitCount(40, 15*time.Second)
	firstOnMoved := time.Now()
	for _, m := range msgs {
		assert.Contains(t, moved, m.GetShard())
		assert.GreaterOrEqual(t, seqOf(t, m), 10, "b gets only the messages after a's")
		assert.EqualValues(t, 1, m.GetDeliveryAttempt())
	}
	assertShardOrder(t, msgs)
	t.Logf("join -> first message on a moved shard: %s (of which after the holder's acks: %s)",
		firstOnMoved.Sub(joined).Round(time.Millisecond), firstOnMoved.Sub(acked).Round(time.Millisecond))
}

// Cluster 3: a node killed without warning.
func TestCluster_KilledNodeShardsResumeOnSurvivorsRedeliveringOnlyWhatWasUnacked(t *testing.T) {
	const shards = 6
	envs := testenv.StartCluster(t, 3, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(100 * time.Millisecond)})
	subs := map[string]*testenv.Subscriber{}
	for i, env := range envs {
		subs[fmt.Sprintf("s%d", i+1)] = testenv.Subscribe(t, env.Client, earliest("s", "t"))
	}
	expect := expectedOwners(subs, shards)
	produceSpread(t, envs[0], "t", shards, 600, 0)
	require.Eventually(t, func() bool { return subs["s1"].Count()+subs["s2"].Count()+subs["s3"].Count() == 600 }, 20*time.Second, 10*time.Millisecond)

	// s3 acks the first 40 of each of its shards and every odd one after:
	// its saved positions stop at 40, the odd acks above travel in the
	// commit metadata, and the even ones from 40 on are un-acked at the kill.
	victim := subs["s3"]
	got := victim.Messages()
	acked := map[string]bool{}
	var ackIDs []string
	victimShards := map[int32]bool{}
	for _, m := range got {
		var p int32
		_, _ = fmt.Sscanf(m.GetShard(), "t/%d", &p)
		victimShards[p] = true
		if seq := seqOf(t, m); seq < 40 || seq%2 == 1 {
			acked[m.GetId()] = true
			ackIDs = append(ackIDs, m.GetId())
		}
	}
	victim.Ack(ackIDs...)
	require.Eventually(t, func() bool {
		c := envs[0].Committed(t, "s")["t"]
		for p := range victimShards {
			if c[p] != 40 {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "the acks are saved before the kill")

	// The others ack everything as it comes.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for _, name := range []string{"s1", "s2"} {
		ackLoop(t, subs[name], stop, &wg)
	}
	before := map[string]int{"s1": subs["s1"].Count(), "s2": subs["s2"].Count()}
	killed := time.Now()
	envs[2].Kill()

	// Its shards resume on the survivors: the un-acked messages come back.
	want := len(got) - len(ackIDs)
	require.Eventually(t, func() bool {
		return subs["s1"].Count()-before["s1"]+subs["s2"].Count()-before["s2"] >= want
	}, 20*time.Second, 10*time.Millisecond, "the dead node's un-acked messages are redelivered")
	resumed := time.Since(killed)
	var again []*pb.Message
	for _, name := range []string{"s1", "s2"} {
		again = append(again, subs[name].Messages()[before[name]:]...)
	}
	for _, m := range again {
		assert.Equal(t, "s3", expect[m.GetShard()], "only the dead node's shards come back")
		assert.False(t, acked[m.GetId()], "message %s was acked before the kill", m.GetId())
	}
	assert.Len(t, again, want, "redelivery is exactly what was un-acked at the kill")
	// And new messages flow on every shard.
	produceSpread(t, envs[0], "t", shards, 60, 600)
	require.Eventually(t, func() bool {
		return subs["s1"].Count()-before["s1"]+subs["s2"].Count()-before["s2"] >= want+60
	}, 20*time.Second, 10*time.Millisecond)
	t.Logf("killed node's shards resumed on the survivors after %s", resumed.Round(time.Millisecond))
}

// Cluster 4: SIGTERM-style drain under load.
func TestCluster_DrainUnderLoadLosesNothingRedeliversNoAckedAndSaysDraining(t *testing.T) {
	const shards = 6
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(time.Hour)})
	a := testenv.Subscribe(t, envs[0].Client, earliest("s", "t"))
	b := testenv.Subscribe(t, envs[1].Client, earliest("s", "t"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ackLoop(t, a, stop, &wg)
	ackLoop(t, b, stop, &wg)

	const n = 3000
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < n; i += 100 {
			produceSpread(t, envs[0], "t", shards, 100, i)
		}
	}()
	require.Eventually(t, func() bool { return b.Count() > 200 }, 20*time.Second, 10*time.Millisecond)
	envs[1].Stop() // drains node-2 while messages flow
	<-produced

	st := b.WaitEnd(10 * time.Second)
	assert.Equal(t, codes.Unavailable, st.Code(), st.Message())
	notices := b.Notices()
	require.NotEmpty(t, notices)
	assert.True(t, notices[len(notices)-1].GetTerminal())
	assert.Contains(t, notices[len(notices)-1].GetStatus().GetMessage(), "draining")

	require.Eventually(t, func() bool {
		seen := map[string]bool{}
		for _, m := range append(a.Messages(), b.Messages()...) {
			seen[string(m.GetPayload())] = true
		}
		return len(seen) == n
	}, 30*time.Second, 20*time.Millisecond, "every message is delivered")
	close(stop)
	wg.Wait()
	// Everything b received it acked (the ack loop runs until its stream
	// ends, and the drain waits for acks): none of it comes again.
	bIDs := map[string]bool{}
	for _, m := range b.Messages() {
		bIDs[m.GetId()] = true
	}
	for _, m := range a.Messages() {
		if bIDs[m.GetId()] {
			t.Errorf("message %s was acked on the draining node and delivered again", m.GetId())
		}
	}
	assertShardOrder(t, a.Messages())
}

// Cluster 5: conflicting topic sets across nodes.
func TestCluster_DifferentTopicSetsOnDifferentNodesRefuseTheLaterWithFailedPrecondition(t *testing.T) {
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t", "u"}, Partitions: 2})
	first := testenv.Subscribe(t, envs[0].Client, earliest("s", "t"))
	require.Eventually(t, func() bool {
		return len(envs[1].Gossip.View().Nodes["node-1"].Subscriptions["s"].Subscribers) == 1
	}, 10*time.Second, 10*time.Millisecond)
	_, err := testenv.TrySubscribe(t, envs[1].Client, earliest("s", "t", "u"))
	st := statusOf(err)
	assert.Equal(t, codes.FailedPrecondition, st.Code(), st.Message())
	// With a subscription store (Kafka's) the stored topics refuse it,
	// naming both sets; without one, the subscriber on node-1 does.
	assert.Contains(t, st.Message(), "reads topics [t]")
	assert.Contains(t, st.Message(), "asked for [t u]")
	ended, _ := first.Ended()
	assert.False(t, ended)
}

// A node whose seeds do not answer may be cut off from a running cluster:
// it reads nothing (and says it is not ready) until one does.
func TestCluster_NodeThatCannotReachItsSeedsReadsNothingUntilItJoins(t *testing.T) {
	envs := testenv.StartCluster(t, 1, testenv.Options{Topics: []string{"t"}, Partitions: 2})
	dead := freeTCPAddr(t)
	lonely := testenv.Start(t, testenv.Options{Cluster: envs[0].Cluster, Gossip: true, NodeName: "lonely", Join: []string{dead}})
	require.False(t, lonely.Gossip.Joined())
	sub := testenv.Subscribe(t, lonely.Client, earliest("s", "t"))
	produceSpread(t, envs[0], "t", 2, 10, 0)
	require.Never(t, func() bool { return sub.Count() > 0 || len(claimsOf(lonely, "s")) > 0 }, time.Second, 20*time.Millisecond,
		"a node that never reached its seeds claims nothing")
}

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}
