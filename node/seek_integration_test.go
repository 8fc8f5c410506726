package node_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// seekTo calls Admin.Seek on env's node.
func seekTo(env *testenv.Env, req *pb.SeekRequest) (*pb.SeekResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pb.NewAdminClient(env.Client.Conn()).Seek(ctx, req)
}

func seekEarliest(sub string) *pb.SeekRequest {
	return &pb.SeekRequest{Subscription: sub, Target: &pb.SeekRequest_To{To: pb.SeekTarget_SEEK_TARGET_EARLIEST}}
}

// waitSaved waits until every shard of topic has its saved position at n.
func waitSaved(t *testing.T, env *testenv.Env, sub, topic string, shards int, n int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		c := env.Committed(t, sub)[topic]
		for p := range shards {
			if c[int32(p)] != n {
				return false
			}
		}
		return true
	}, 15*time.Second, 20*time.Millisecond, "every shard saved at %d", n)
}

// seekNotices returns the ABORTED notices a seek sent s.
func seekNotices(s *testenv.Subscriber) []*pb.Notice {
	var out []*pb.Notice
	for _, n := range s.Notices() {
		if codes.Code(n.GetStatus().GetCode()) == codes.Aborted && strings.Contains(n.GetStatus().GetMessage(), "by Seek") {
			out = append(out, n)
		}
	}
	return out
}

// The acceptance test: a seek to the earliest with two subscribers on two
// nodes delivers every message once more, each shard in order, then
// nothing more; both subscribers are told.
func TestSeek_EarliestWithSubscribersOnTwoNodesRedeliversEverythingOnceInShardOrder(t *testing.T) {
	const shards, n = 6, 120
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(100 * time.Millisecond)})
	subs := []*testenv.Subscriber{
		testenv.Subscribe(t, envs[0].Client, earliest("s", "t")),
		testenv.Subscribe(t, envs[1].Client, earliest("s", "t")),
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for _, s := range subs {
		ackLoop(t, s, stop, &wg)
	}
	produceSpread(t, envs[0], "t", shards, n, 0)
	require.Eventually(t, func() bool { return subs[0].Count()+subs[1].Count() == n }, 20*time.Second, 10*time.Millisecond)
	waitSaved(t, envs[0], "s", "t", shards, n/shards)
	before := []int{subs[0].Count(), subs[1].Count()}
	require.NotZero(t, before[0], "both subscribers read shards")
	require.NotZero(t, before[1], "both subscribers read shards")

	resp, err := seekTo(envs[1], seekEarliest("s"))
	require.NoError(t, err)
	assert.Equal(t, []string{"t/0", "t/1", "t/2", "t/3", "t/4", "t/5"}, resp.GetShards())

	require.Eventually(t, func() bool {
		return subs[0].Count()+subs[1].Count() == 2*n
	}, 20*time.Second, 10*time.Millisecond, "every message once more")
	require.Never(t, func() bool { return subs[0].Count()+subs[1].Count() > 2*n }, 1500*time.Millisecond, 50*time.Millisecond, "nothing more")
	seen := map[string]bool{}
	for i, s := range subs {
		again := s.Messages()[before[i]:]
		assert.Len(t, again, before[i], "each subscriber gets its own shards again")
		for _, m := range again {
			require.False(t, seen[m.GetId()], "message %s delivered twice after the seek", m.GetId())
			seen[m.GetId()] = true
		}
		by := assertShardOrder(t, again)
		for shard, seqs := range by {
			assert.Equal(t, 0, seqs[0], "shard %s starts again at its first message", shard)
			assert.Len(t, seqs, n/shards, "shard %s: every message", shard)
		}
		require.NotEmpty(t, seekNotices(s), "subscriber %d is told", i)
		assert.Contains(t, seekNotices(s)[0].GetStatus().GetMessage(), "moved to the earliest message by Seek")
		assert.False(t, seekNotices(s)[0].GetTerminal())
	}
	assert.Len(t, seen, n)
	waitSaved(t, envs[0], "s", "t", shards, n/shards)
}

// A seek by time starts every shard at its first message published at or
// after the time.
func TestSeek_ByTimeStartsAtTheFirstMessageAtOrAfterIt(t *testing.T) {
	const shards = 3
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(100 * time.Millisecond)})
	s := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	produceSpread(t, env, "t", shards, 30, 0)
	ackAll(t, s, 30, 10*time.Second)
	last := time.Now().UnixMilli()
	require.Eventually(t, func() bool { return time.Now().UnixMilli() > last+1 }, time.Second, time.Millisecond)
	at := time.Now()
	produceSpread(t, env, "t", shards, 30, 30)
	ackAll(t, s, 60, 10*time.Second)
	waitSaved(t, env, "s", "t", shards, 20)

	_, err := seekTo(env, &pb.SeekRequest{Subscription: "s", Target: &pb.SeekRequest_Time{Time: timestamppb.New(at)}})
	require.NoError(t, err)
	again := ackAll(t, s, 90, 10*time.Second)[60:]
	require.Never(t, func() bool { return s.Count() > 90 }, 1500*time.Millisecond, 50*time.Millisecond, "nothing more")
	for shard, seqs := range assertShardOrder(t, again) {
		assert.Equal(t, []int{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, seqs, "shard %s: the messages published after the time", shard)
	}
	for _, m := range again {
		assert.False(t, m.GetPublishTime().AsTime().Before(at.Truncate(time.Millisecond)), "published at or after the time")
	}
}

// A seek to the latest voids what subscribers hold (their acks are then
// ignored), delivers nothing old, and delivers what is published next.
func TestSeek_LatestVoidsWhatIsHeldAndDeliversOnlyNewMessages(t *testing.T) {
	const shards = 4
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(100 * time.Millisecond)})
	s := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	produceSpread(t, env, "t", shards, 20, 0)
	held := s.WaitCount(20, 10*time.Second) // held, not acked

	unknown := metricValue(t, env, "streamgate_subscribe_unknown_acks_total")
	_, err := seekTo(env, &pb.SeekRequest{Subscription: "s", Target: &pb.SeekRequest_To{To: pb.SeekTarget_SEEK_TARGET_LATEST}})
	require.NoError(t, err)
	s.WaitFor(5*time.Second, "the seek's notice", func() bool { return len(seekNotices(s)) > 0 })
	msg := seekNotices(s)[0].GetStatus().GetMessage()
	assert.Contains(t, msg, "moved to the latest message by Seek")
	assert.Contains(t, msg, "20 message(s) this stream holds are void")

	ids := make([]string, len(held))
	for i, m := range held {
		ids[i] = m.GetId()
	}
	s.Ack(ids...)
	require.Eventually(t, func() bool {
		return metricValue(t, env, "streamgate_subscribe_unknown_acks_total") == unknown+20
	}, 5*time.Second, 10*time.Millisecond, "the void messages' acks are ignored")
	require.Never(t, func() bool { return s.Count() > 20 }, 1500*time.Millisecond, 50*time.Millisecond, "nothing old is delivered again")

	produceSpread(t, env, "t", shards, 8, 20)
	again := ackAll(t, s, 28, 10*time.Second)[20:]
	for _, m := range again {
		assert.GreaterOrEqual(t, seqOf(t, m), 5, "only the new messages")
	}
	waitSaved(t, env, "s", "t", shards, 7)
}

// Bad requests get precise statuses.
func TestSeek_BadRequestsGetPreciseStatuses(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2})
	testenv.Subscribe(t, env.Client, earliest("s", "t")) // makes "s" known
	cases := []struct {
		name string
		req  *pb.SeekRequest
		code codes.Code
		msg  string
	}{
		{"no subscription", &pb.SeekRequest{Target: &pb.SeekRequest_To{To: pb.SeekTarget_SEEK_TARGET_EARLIEST}}, codes.InvalidArgument, "subscription is empty"},
		{"no target", &pb.SeekRequest{Subscription: "s"}, codes.InvalidArgument, "seek needs a target"},
		{"unspecified target", &pb.SeekRequest{Subscription: "s", Target: &pb.SeekRequest_To{}}, codes.InvalidArgument, "SEEK_TARGET_UNSPECIFIED"},
		{"bad time", &pb.SeekRequest{Subscription: "s", Target: &pb.SeekRequest_Time{Time: &timestamppb.Timestamp{Nanos: -1}}}, codes.InvalidArgument, "not a valid timestamp"},
		{"unknown subscription", seekEarliest("nobody"), codes.NotFound, `"nobody" is not known`},
		{"bad phase", &pb.SeekRequest{Subscription: "s", Target: &pb.SeekRequest_To{To: pb.SeekTarget_SEEK_TARGET_EARLIEST}, LocalOnly: true, Phase: 3}, codes.InvalidArgument, "seek phase 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := seekTo(env, c.req)
			require.Error(t, err)
			assert.Equal(t, c.code, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), c.msg)
		})
	}

	// A backend that cannot seek.
	plain := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2,
		WrapBackend: func(b node.Backend) node.Backend { return struct{ node.Backend }{b} }})
	_, err := seekTo(plain, seekEarliest("s"))
	assert.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}

// A subscription without subscribers is known by its saved positions: a
// seek moves them, and the next subscriber starts there.
func TestSeek_WithoutSubscribersMovesTheSavedPositions(t *testing.T) {
	const shards = 2
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: shards, Kafka: shortCommits(100 * time.Millisecond)})
	s := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	produceSpread(t, env, "t", shards, 10, 0)
	ackAll(t, s, 10, 10*time.Second)
	waitSaved(t, env, "s", "t", shards, 5)
	s.Close()
	_, err := seekTo(env, seekEarliest("s"))
	require.NoError(t, err)
	waitSaved(t, env, "s", "t", shards, 0)

	again := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	msgs := ackAll(t, again, 10, 10*time.Second)
	for shard, seqs := range assertShardOrder(t, msgs) {
		assert.Equal(t, []int{0, 1, 2, 3, 4}, seqs, "shard %s from its first message", shard)
	}
	for _, m := range msgs {
		assert.EqualValues(t, 1, m.GetDeliveryAttempt(), "a seek starts delivery counts afresh")
	}
}
