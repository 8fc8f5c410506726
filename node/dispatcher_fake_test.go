package node_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/node"
	"github.com/streamgate/streamgate/ring"
)

// Dispatcher tests on the in-memory backend (fakebackend_test.go): a real
// node on a loopback port and the Go client, no Kafka. They wait on
// conditions with a deadline, never on the clock, except where the node has
// a timer (the ack timeout), which they set short, and in the skipped
// known-bug test, which measures a rate.
//
// To show that something did not happen, a test does not watch for a
// while: it sends a barrier (an ack of an unknown id) and waits until the
// node has counted it. The dispatcher applies events in order and
// dispatches after each, and reports deliveries to the backend before it
// queues them for the stream, so once the barrier is counted the fake's
// Delivered log holds every delivery the node made before it.

// fakeWaitFor is how long a condition may take; every test takes well
// under a second when the node is right.
const fakeWaitFor = 5 * time.Second

// fakeNode is a node on a fake backend, and a client connected to it.
type fakeNode struct {
	t        *testing.T
	fb       *fakeBackend
	srv      *node.Server
	reg      *prometheus.Registry
	cl       *client.Client
	served   chan error // Serve's result
	stopOnce sync.Once
	unknown  int // acks and nacks of ids the node does not hold, sent by the test
}

// startFakeNode starts a node on a new fake backend with topics (name ->
// shards); cfg, when set, adjusts the node's configuration. Everything
// stops when the test ends: streams first, then the node, then the fake.
func startFakeNode(t *testing.T, topics map[string]int, cfg func(*node.Config)) *fakeNode {
	t.Helper()
	return startFakeNodeIn(t, topics, cfg, nil)
}

// startFakeNodeIn is startFakeNode for a node of a cluster (members nil: a
// cluster of one, without membership).
func startFakeNodeIn(t *testing.T, topics map[string]int, cfg func(*node.Config), members node.Membership) *fakeNode {
	t.Helper()
	fb := newFakeBackend(topics)
	t.Cleanup(fb.Close)
	c := node.DefaultConfig()
	c.NodeName = "fake-node"
	if cfg != nil {
		cfg(&c)
	}
	reg := prometheus.NewRegistry()
	srv, err := node.NewServer(c, fb, node.Options{Registry: reg, Cluster: members})
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	n := &fakeNode{t: t, fb: fb, srv: srv, reg: reg, served: make(chan error, 1)}
	go func() { n.served <- srv.Serve(lis, nil) }()
	t.Cleanup(n.shutdown)
	n.cl, err = client.Dial(lis.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.cl.Close() })
	return n
}

// shutdown drains and stops the node (once) and waits for Serve.
func (n *fakeNode) shutdown() {
	n.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), fakeWaitFor)
		defer cancel()
		n.srv.Shutdown(ctx)
		if err := <-n.served; err != nil {
			n.t.Errorf("serve: %v", err)
		}
	})
}

// metric sums a node metric's values.
func (n *fakeNode) metric(name string) float64 {
	n.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Errorf("gather metrics: %v", err) // not FailNow: conditions run on goroutines of their own
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return v
}

// barrier returns once the node has applied everything s sent before.
func (n *fakeNode) barrier(s *fakeSub) {
	n.t.Helper()
	n.unknown++
	require.NoError(n.t, s.Ack(fmt.Sprintf("barrier-%d", n.unknown)))
	want := float64(n.unknown)
	fakeWait(n.t, "the node to apply the barrier", func() bool {
		return n.metric("streamgate_subscribe_unknown_acks_total") >= want
	})
}

func fakeWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, fakeWaitFor, 2*time.Millisecond, "waiting for %s", what)
}

// fakeSub is one low-level client stream that records what it receives.
type fakeSub struct {
	*client.Subscriber
	t     *testing.T
	abort context.CancelFunc // ends the stream at once, as a client that vanishes
	done  chan struct{}      // closed when the stream has ended

	mu      sync.Mutex // guards the fields below
	msgs    []client.Received
	notices []client.Notice
	end     error // how the stream ended, once done
}

// subscribe opens subscription "s" of topic "t" from the earliest message,
// with at most max un-acked messages (0: the node's limit).
func (n *fakeNode) subscribe(max uint32) *fakeSub {
	n.t.Helper()
	return n.open(client.SubscribeOptions{Subscription: "s", Topics: []string{"t"}, FromBeginning: true, MaxUnacked: max})
}

// open opens a stream with o, waiting at most fakeWaitFor.
func (n *fakeNode) open(o client.SubscribeOptions) *fakeSub {
	n.t.Helper()
	o.OpenTimeout, o.CloseTimeout = fakeWaitFor, fakeWaitFor
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := n.cl.Subscribe(ctx, o)
	if err != nil {
		cancel()
		require.NoError(n.t, err)
	}
	s := &fakeSub{Subscriber: sub, t: n.t, abort: cancel, done: make(chan struct{})}
	go s.pump()
	n.t.Cleanup(func() { _ = s.Close(); cancel(); <-s.done })
	return s
}

func (s *fakeSub) pump() {
	defer close(s.done)
	for {
		msgs, notice, err := s.Recv()
		s.mu.Lock()
		switch {
		case err != nil:
			s.end = err
		case notice != nil:
			s.notices = append(s.notices, *notice)
		default:
			s.msgs = append(s.msgs, msgs...)
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (s *fakeSub) messages() []client.Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

func (s *fakeSub) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func (s *fakeSub) hasNotice(c codes.Code, terminal bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.notices, func(n client.Notice) bool { return n.Code == c && n.Terminal == terminal })
}

// waitCount waits until s has received at least k messages.
func (s *fakeSub) waitCount(k int) []client.Received {
	s.t.Helper()
	fakeWait(s.t, fmt.Sprintf("%d messages", k), func() bool { return s.count() >= k })
	return s.messages()
}

// ackUntil acks everything s receives until it has received k messages,
// and returns them.
func (s *fakeSub) ackUntil(k int) []client.Received {
	s.t.Helper()
	acked := 0
	fakeWait(s.t, fmt.Sprintf("%d messages acked", k), func() bool {
		msgs := s.messages()
		if len(msgs) > acked {
			if s.Ack(fakeIDs(msgs[acked:])...) != nil {
				return false
			}
			acked = len(msgs)
		}
		return acked >= k
	})
	return s.messages()
}

// waitEnd waits until the stream has ended and returns its status.
func (s *fakeSub) waitEnd() *status.Status {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(fakeWaitFor):
		s.t.Fatal("the stream did not end")
	}
	return status.Convert(s.end)
}

func (s *fakeSub) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func fakeIDs(msgs []client.Received) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// fakeShardSeq parses Fill's payload "<shard>:<seq>".
func fakeShardSeq(t *testing.T, m client.Received) (int32, int) {
	t.Helper()
	a, b, ok := strings.Cut(string(m.Payload), ":")
	require.True(t, ok, "payload %q", m.Payload)
	sh, err1 := strconv.Atoi(a)
	seq, err2 := strconv.Atoi(b)
	require.NoError(t, errors.Join(err1, err2))
	require.Equal(t, fmt.Sprintf("t/%d", sh), m.Shard, "shard of %q", m.Payload)
	return int32(sh), seq
}

// fakeBySeq checks that each shard's messages arrive in order, each once, and
// returns their sequence numbers by shard.
func fakeBySeq(t *testing.T, msgs []client.Received) map[int32][]int {
	t.Helper()
	out := map[int32][]int{}
	for _, m := range msgs {
		sh, seq := fakeShardSeq(t, m)
		if prev := out[sh]; len(prev) > 0 {
			require.Greater(t, seq, prev[len(prev)-1], "shard %d out of order or repeated", sh)
		}
		out[sh] = append(out[sh], seq)
	}
	return out
}

func fakeSeqs(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// Deliveries and acks reach the backend; the last subscriber's Close saves
// the acked position, with acks above a gap and the gap's attempts, and the
// next subscriber gets only the gap.
func TestFakeDispatch_DeliversInShardOrderAndCloseSavesTheAckedPositions(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 4}, nil)
	n.fb.Fill("t", 10)
	s := n.subscribe(0)
	msgs := s.waitCount(40)
	for sh, got := range fakeBySeq(t, msgs) {
		assert.Equal(t, fakeSeqs(0, 10), got, "shard %d", sh)
	}
	for _, m := range msgs {
		assert.EqualValues(t, 1, m.DeliveryAttempt)
		assert.False(t, m.PublishTime.IsZero())
	}
	assert.ElementsMatch(t, fakeIDs(msgs), n.fb.Delivered(), "every delivery reported once")

	var gap string
	var ack []string
	for _, m := range msgs {
		if string(m.Payload) == "0:5" {
			gap = m.ID
		} else {
			ack = append(ack, m.ID)
		}
	}
	require.NoError(t, s.Ack(ack...))
	fakeWait(t, "39 acks at the backend", func() bool { return len(n.fb.Acked()) == 39 })
	assert.ElementsMatch(t, ack, n.fb.Acked())

	require.NoError(t, s.Close())
	fakeWait(t, "the consumer to close", func() bool { return n.fb.OpenConsumers() == 0 })
	p0, ok := n.fb.Saved("s", "t", 0)
	require.True(t, ok)
	assert.EqualValues(t, 5, p0.Next, "shard 0 saved up to its un-acked message")
	assert.Equal(t, []int64{6, 7, 8, 9}, p0.Acked, "acks above the gap saved with it")
	assert.Equal(t, map[int64]uint32{5: 1}, p0.Attempts)
	for sh := int32(1); sh < 4; sh++ {
		p, _ := n.fb.Saved("s", "t", sh)
		assert.EqualValues(t, 10, p.Next, "shard %d", sh)
		assert.Empty(t, p.Acked)
		assert.Empty(t, p.Attempts)
	}

	again := n.subscribe(0)
	got := again.waitCount(1)
	assert.Equal(t, gap, got[0].ID, "the same id")
	assert.Equal(t, "0:5", string(got[0].Payload))
	assert.EqualValues(t, 2, got[0].DeliveryAttempt, "the attempt saved with the position counts")
	n.barrier(again)
	assert.Len(t, n.fb.Delivered(), 41, "nothing acked comes back")
	require.NoError(t, again.Ack(gap))
	require.NoError(t, again.Close())
	fakeWait(t, "the consumer to close", func() bool { return n.fb.OpenConsumers() == 0 })
	p0, _ = n.fb.Saved("s", "t", 0)
	assert.Equal(t, fakePosition{Next: 10, Attempts: map[int64]uint32{}}, p0)
}

// A subscriber at max un-acked gets nothing more until it acks; k acks let
// exactly k more through.
func TestFakeDispatch_MaxUnackedPausesDeliveryAndAcksResumeIt(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 2}, nil)
	n.fb.Fill("t", 10)
	s := n.subscribe(5)
	require.EqualValues(t, 5, s.MaxUnacked)
	msgs := s.waitCount(5)
	n.barrier(s)
	require.Len(t, n.fb.Delivered(), 5, "at the limit the node delivers nothing more")
	require.Equal(t, 5, s.count())

	require.NoError(t, s.Ack(msgs[0].ID, msgs[1].ID))
	s.waitCount(7)
	n.barrier(s)
	require.Len(t, n.fb.Delivered(), 7, "two acks, two more")

	all := s.ackUntil(20)
	require.Len(t, all, 20)
	for sh, got := range fakeBySeq(t, all) {
		assert.Equal(t, fakeSeqs(0, 10), got, "shard %d", sh)
	}
}

// A nacked message comes back before the later messages of its shard, with
// delivery_attempt 2; attempts are saved with the position, so the next
// reader counts on.
func TestFakeDispatch_NackRedeliversBeforeLaterMessagesWithAttempt2(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 1}, nil)
	n.fb.Fill("t", 6)
	s := n.subscribe(3)
	m := s.waitCount(3)
	require.NoError(t, s.Nack(m[1].ID))
	got := s.waitCount(4)
	assert.Equal(t, m[1].ID, got[3].ID, "the nacked message before 0:3")
	assert.EqualValues(t, 2, got[3].DeliveryAttempt)
	n.barrier(s)
	require.Len(t, n.fb.Delivered(), 4)

	require.NoError(t, s.Ack(m[0].ID, m[2].ID))
	got = s.waitCount(6)
	require.NoError(t, s.Ack(fakeIDs(got[3:6])...))
	got = s.waitCount(7)
	var payloads []string
	var attempts []uint32
	for _, r := range got {
		payloads = append(payloads, string(r.Payload))
		attempts = append(attempts, r.DeliveryAttempt)
	}
	assert.Equal(t, []string{"0:0", "0:1", "0:2", "0:1", "0:3", "0:4", "0:5"}, payloads)
	assert.Equal(t, []uint32{1, 1, 1, 2, 1, 1, 1}, attempts)

	// Nacked once more and left un-acked: the next reader sees attempt 3.
	require.NoError(t, s.Nack(got[6].ID))
	got = s.waitCount(8)
	assert.EqualValues(t, 2, got[7].DeliveryAttempt)
	require.NoError(t, s.Close())
	fakeWait(t, "the consumer to close", func() bool { return n.fb.OpenConsumers() == 0 })
	p, _ := n.fb.Saved("s", "t", 0)
	assert.Equal(t, fakePosition{Next: 5, Attempts: map[int64]uint32{5: 2}}, p)

	again := n.subscribe(0)
	r := again.waitCount(1)[0]
	assert.Equal(t, "0:5", string(r.Payload))
	assert.EqualValues(t, 3, r.DeliveryAttempt)
}

// A subscriber that holds a message past the ack timeout gets the terminal
// DEADLINE_EXCEEDED notice; what it held goes to the other subscriber,
// before anything newer of each shard.
func TestFakeDispatch_AckTimeoutEndsTheStreamAndItsMessagesGoToAnother(t *testing.T) {
	const timeout = 200 * time.Millisecond
	n := startFakeNode(t, map[string]int{"t": 2}, func(c *node.Config) { c.AckTimeout = timeout })
	n.fb.Fill("t", 5)
	stalled := n.subscribe(0)
	stalled.waitCount(10)
	healthy := n.subscribe(0)
	n.fb.Fill("t", 5)

	st := stalled.waitEnd()
	assert.Equal(t, codes.DeadlineExceeded, st.Code(), st.Message())
	assert.True(t, stalled.hasNotice(codes.DeadlineExceeded, true), "the terminal notice came first")
	held := map[string]bool{}
	for _, m := range stalled.messages() {
		held[m.ID] = true
	}

	got := healthy.ackUntil(20)
	require.Len(t, got, 20)
	for sh, s := range fakeBySeq(t, got) {
		assert.Equal(t, fakeSeqs(0, 10), s, "shard %d: the stalled one's messages first, then the rest", sh)
	}
	for _, m := range got {
		want := uint32(1)
		if held[m.ID] {
			want = 2
		}
		assert.Equal(t, want, m.DeliveryAttempt, "%s", m.Payload)
	}
	require.NoError(t, healthy.Close())
	fakeWait(t, "the consumer to close", func() bool { return n.fb.OpenConsumers() == 0 })
	for sh := range int32(2) {
		p, _ := n.fb.Saved("s", "t", sh)
		assert.EqualValues(t, 10, p.Next, "shard %d", sh)
	}
}

// A second subscriber takes the ring's shards from the first, but gets
// nothing of them while the first holds messages of them in flight; once
// those are acked it goes on from there, in order.
func TestFakeDispatch_JoiningSubscriberTakesShardsOnlyAfterTheHolderAcks(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 4}, nil)
	n.fb.Fill("t", 4)
	a := n.subscribe(0)
	a.waitCount(16)
	b := n.subscribe(0)

	names := []string{"t/0", "t/1", "t/2", "t/3"}
	moved := map[string]bool{}
	for shard, owner := range ring.Assign([]string{a.ID, b.ID}, names) {
		moved[shard] = owner == b.ID
	}
	require.Len(t, slices.Collect(maps.Keys(moved)), 4)
	var kept int
	for _, m := range moved {
		if !m {
			kept++
		}
	}
	require.Equal(t, 2, kept, "the ring splits 4 shards 2 and 2")

	// One Fill is one Poll: once a has its shards' new messages, the node
	// has dispatched b's too, if it was going to.
	n.fb.Fill("t", 4)
	a.waitCount(16 + 4*kept)
	assert.Len(t, n.fb.Delivered(), 16+4*kept, "nothing of b's shards delivered while a holds them")
	assert.Zero(t, b.count())

	require.NoError(t, a.Ack(fakeIDs(a.messages())...))
	gotB := b.waitCount(4 * (4 - kept))
	n.barrier(a)
	assert.Equal(t, 16+4*kept, a.count(), "a gets nothing more of the moved shards")
	for sh, s := range fakeBySeq(t, gotB) {
		require.True(t, moved[fmt.Sprintf("t/%d", sh)], "b got shard %d, which stayed with a", sh)
		assert.Equal(t, fakeSeqs(4, 8), s, "shard %d goes on where a left it", sh)
	}
	for sh, s := range fakeBySeq(t, a.messages()) {
		if moved[fmt.Sprintf("t/%d", sh)] {
			assert.Equal(t, fakeSeqs(0, 4), s, "a kept only what it held of moved shard %d", sh)
		} else {
			assert.Equal(t, fakeSeqs(0, 8), s, "shard %d", sh)
		}
	}
}

// The last subscriber leaving closes the backend consumer (its acks saved
// first) and the node holds nothing; the next one opens a new consumer at
// the saved position.
func TestFakeDispatch_LastSubscriberLeavingClosesTheConsumerAndTheNextResumes(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 2}, nil)
	n.fb.Fill("t", 5)
	s := n.subscribe(0)
	msgs := s.waitCount(10)
	require.Equal(t, 1, n.fb.OpenConsumers())
	acked := map[string]bool{}
	for _, m := range msgs {
		switch string(m.Payload) {
		case "0:0", "0:1", "0:2", "1:0", "1:1", "1:3":
			acked[m.ID] = true
		}
	}
	require.NoError(t, s.Ack(slices.Collect(maps.Keys(acked))...))
	fakeWait(t, "6 acks at the backend", func() bool { return len(n.fb.Acked()) == 6 })

	require.NoError(t, s.Close())
	fakeWait(t, "the consumer to close", func() bool { return n.fb.OpenConsumers() == 0 })
	fakeWait(t, "the node to hold nothing", func() bool {
		return n.metric("streamgate_subscribe_backend_consumers") == 0 && n.metric("streamgate_subscribe_buffered_messages") == 0
	})
	assert.Equal(t, 1, n.fb.Opened())
	p0, _ := n.fb.Saved("s", "t", 0)
	assert.Equal(t, fakePosition{Next: 3, Attempts: map[int64]uint32{3: 1, 4: 1}}, p0)
	p1, _ := n.fb.Saved("s", "t", 1)
	assert.Equal(t, fakePosition{Next: 2, Acked: []int64{3}, Attempts: map[int64]uint32{2: 1, 4: 1}}, p1)

	n.fb.Fill("t", 1)
	again := n.subscribe(0)
	got := again.waitCount(6)
	assert.Equal(t, 1, n.fb.OpenConsumers())
	assert.Equal(t, 2, n.fb.Opened())
	n.barrier(again)
	assert.Len(t, n.fb.Delivered(), 16, "nothing acked comes back")
	by := fakeBySeq(t, got)
	assert.Equal(t, []int{3, 4, 5}, by[0])
	assert.Equal(t, []int{2, 4, 5}, by[1])
	for _, m := range got {
		want := uint32(2)
		if _, seq := fakeShardSeq(t, m); seq == 5 {
			want = 1
		}
		assert.Equal(t, want, m.DeliveryAttempt, "%s", m.Payload)
	}
}

// While polls fail every subscriber gets a non-terminal UNAVAILABLE notice
// (one that joins meanwhile too), then OK when they work again, and what
// was published meanwhile arrives, once each.
func TestFakeDispatch_PollErrorGivesEverySubscriberUnavailableThenOKAndLosesNothing(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 4}, nil)
	a, b := n.subscribe(0), n.subscribe(0)
	n.fb.Fill("t", 2)
	fakeWait(t, "8 messages", func() bool { return a.count()+b.count() == 8 })
	require.NoError(t, a.Ack(fakeIDs(a.messages())...))
	require.NoError(t, b.Ack(fakeIDs(b.messages())...))

	n.fb.SetPollError(errors.New("injected fetch failure"))
	n.fb.Fill("t", 2)
	for _, s := range []*fakeSub{a, b} {
		fakeWait(t, "an UNAVAILABLE notice", func() bool { return s.hasNotice(codes.Unavailable, false) })
		assert.False(t, s.hasNotice(codes.OK, false))
	}
	c := n.subscribe(0)
	fakeWait(t, "an UNAVAILABLE notice for a subscriber joining meanwhile", func() bool { return c.hasNotice(codes.Unavailable, false) })
	n.fb.SetPollError(nil)
	for _, s := range []*fakeSub{a, b, c} {
		fakeWait(t, "an OK notice", func() bool { return s.hasNotice(codes.OK, false) })
	}
	fakeWait(t, "16 messages", func() bool { return a.count()+b.count()+c.count() == 16 })
	all := map[int32][]int{}
	for _, s := range []*fakeSub{a, b, c} {
		assert.False(t, s.ended())
		for sh, got := range fakeBySeq(t, s.messages()) {
			all[sh] = append(all[sh], got...)
		}
	}
	for sh, got := range all {
		slices.Sort(got)
		assert.Equal(t, fakeSeqs(0, 4), got, "shard %d: each message once", sh)
	}
}

// Acks and nacks of ids the stream does not hold (never delivered, unknown
// to the backend, acked already) are ignored and do not end the stream.
func TestFakeDispatch_UnknownAndRepeatedAckIDsAreIgnored(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 1}, nil)
	n.fb.Fill("t", 3)
	s := n.subscribe(0)
	m := s.waitCount(3)
	require.NoError(t, s.Ack("no-such-id"))
	require.NoError(t, s.Ack(fakeID(broker.ShardID{Topic: "t", Index: 0}, 99))) // well-formed, never fetched
	require.NoError(t, s.Nack("nor-this"))
	require.NoError(t, s.Ack(m[0].ID))
	require.NoError(t, s.Ack(m[0].ID))
	require.NoError(t, s.Nack(m[0].ID))
	n.unknown += 5
	n.barrier(s)
	assert.EqualValues(t, 6, n.metric("streamgate_subscribe_unknown_acks_total"))
	assert.Equal(t, []string{m[0].ID}, n.fb.Acked(), "only the real ack reaches the backend, once")
	assert.Len(t, n.fb.Delivered(), 3, "a nack of an acked id redelivers nothing")
	assert.False(t, s.ended())

	require.NoError(t, s.Ack(m[1].ID, m[2].ID))
	fakeWait(t, "3 acks at the backend", func() bool { return len(n.fb.Acked()) == 3 })
}

// A shard whose save is fenced (another reader took it) is reported lost:
// the node voids what it holds of it (an ABORTED notice; acks of those ids
// from before are ignored) and, reading it again, delivers the messages
// again from the saved position.
func TestFakeDispatch_ShardLostVoidsInFlightMessagesAndTheyAreDeliveredAgain(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 2}, nil)
	n.fb.Fill("t", 3)
	s := n.subscribe(0)
	msgs := s.waitCount(6)
	var shard0 []string
	for _, m := range msgs {
		if sh, _ := fakeShardSeq(t, m); sh == 0 {
			shard0 = append(shard0, m.ID)
		}
	}
	n.fb.Steal("s", "t", 0)
	n.fb.SaveAll()
	fakeWait(t, "an ABORTED notice", func() bool { return s.hasNotice(codes.Aborted, false) })
	got := s.waitCount(9)
	assert.Equal(t, shard0, fakeIDs(got[6:]), "shard 0 again, same ids, in order")
	assert.False(t, s.ended())

	require.NoError(t, s.Ack(fakeIDs(got)...))
	fakeWait(t, "6 acks at the backend", func() bool { return len(n.fb.Acked()) == 6 })
	require.NoError(t, s.Close())
	fakeWait(t, "the consumer to close", func() bool { return n.fb.OpenConsumers() == 0 })
	for sh := range int32(2) {
		p, _ := n.fb.Saved("s", "t", sh)
		assert.EqualValues(t, 3, p.Next, "shard %d", sh)
	}
}

// The high-level Receive on the fake: every message handled once, acked,
// and saved when Receive returns.
func TestFakeDispatch_ReceiveHandlesEveryMessageOnceAndItIsSaved(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 4}, nil)
	n.fb.Fill("t", 25)
	sub := n.cl.Subscription("s", "t")
	sub.ReceiveSettings.FromBeginning = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []client.Received
	done := make(chan error, 1)
	go func() {
		done <- sub.Receive(ctx, func(_ context.Context, d *client.Delivery) {
			mu.Lock()
			got = append(got, d.Received)
			mu.Unlock()
			d.Ack()
		})
	}()
	fakeWait(t, "100 messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 100 })
	cancel()
	require.NoError(t, <-done)
	fakeWait(t, "the consumer to close", func() bool { return n.fb.OpenConsumers() == 0 })
	for sh, s := range fakeBySeq(t, got) {
		assert.Equal(t, fakeSeqs(0, 25), s, "shard %d", sh)
	}
	for sh := range int32(4) {
		p, _ := n.fb.Saved("s", "t", sh)
		assert.EqualValues(t, 25, p.Next, "shard %d", sh)
	}
}

// Nacks of a moved shard's messages by their holder send them to the
// shard's new owner, before the shard's later messages, but only once the
// holder has settled everything it holds of the shard.
func TestFakeDispatch_NackedMessagesOfAMovedShardGoToTheNewOwnerFirst(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 2}, nil)
	n.fb.Fill("t", 4)
	a := n.subscribe(0)
	a.waitCount(8)
	b := n.subscribe(0)
	var mv int32 = -1
	for shard, owner := range ring.Assign([]string{a.ID, b.ID}, []string{"t/0", "t/1"}) {
		if owner == b.ID {
			mv = int32(shard[len(shard)-1] - '0')
		}
	}
	require.NotEqual(t, int32(-1), mv, "b owns one of the two shards")
	var held []string // a's messages of the moved shard, by seq
	for _, m := range a.messages() {
		if sh, _ := fakeShardSeq(t, m); sh == mv {
			held = append(held, m.ID)
		}
	}
	n.fb.Fill("t", 2)
	a.waitCount(10) // the shard it kept

	require.NoError(t, a.Nack(held[1]))
	n.barrier(a)
	assert.Zero(t, b.count(), "a still holds the shard's other messages")
	assert.Len(t, n.fb.Delivered(), 10)
	require.NoError(t, a.Ack(held[0], held[2], held[3]))
	got := b.waitCount(3)
	assert.Equal(t, held[1], got[0].ID, "the nacked message first")
	assert.EqualValues(t, 2, got[0].DeliveryAttempt)
	assert.Equal(t, []int{1, 4, 5}, fakeBySeq(t, got)[mv])
	n.barrier(b)
	assert.Equal(t, 3, b.count())
	assert.Equal(t, 10, a.count())
}

// With the backend at its per-shard limit of messages not saved, the node
// gets nothing more of the shard however much room its subscriber has;
// acks that move the saved position let exactly that many more through.
func TestFakeDispatch_BackendShardLimitHoldsFetchingUntilAcksAreSaved(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 2}, nil)
	n.fb.SetShardLimit(3)
	n.fb.Fill("t", 10)
	s := n.subscribe(0)
	msgs := s.waitCount(6)
	n.barrier(s)
	require.Len(t, n.fb.Delivered(), 6, "three of each shard")
	of0 := map[int]string{}
	for _, m := range msgs {
		if sh, seq := fakeShardSeq(t, m); sh == 0 {
			of0[seq] = m.ID
		}
	}
	require.NoError(t, s.Ack(of0[2]))
	n.barrier(s)
	assert.Len(t, n.fb.Delivered(), 6, "an ack above the first un-acked message saves nothing")
	require.NoError(t, s.Ack(of0[0]))
	s.waitCount(7)
	n.barrier(s)
	assert.Len(t, n.fb.Delivered(), 7, "one saved, one more")
	p, _ := n.fb.Saved("s", "t", 0)
	assert.EqualValues(t, 1, p.Next)
	require.NoError(t, s.Ack(of0[1]))
	s.waitCount(9)
	n.barrier(s)
	assert.Len(t, n.fb.Delivered(), 9, "two saved (1 and the 2 acked before), two more")

	all := s.ackUntil(20)
	for sh, got := range fakeBySeq(t, all) {
		assert.Equal(t, fakeSeqs(0, 10), got, "shard %d", sh)
	}
}

// Shutdown: the node stops fetching, waits for subscribers to settle what
// they hold, ends each with the terminal UNAVAILABLE "node draining"
// notice, and saves the positions.
func TestFakeDispatch_ShutdownLetsSubscribersSettleThenEndsThemAndSaves(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 2}, nil)
	n.fb.Fill("t", 3)
	s := n.subscribe(0)
	msgs := s.waitCount(6)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		n.shutdown()
	}()
	fakeWait(t, "the node to stop fetching", func() bool { return n.fb.Reading("s") == 0 })
	n.fb.Fill("t", 1)
	assert.False(t, s.ended(), "a subscriber holding messages may settle them")
	require.NoError(t, s.Ack(fakeIDs(msgs)...))
	st := s.waitEnd()
	assert.Equal(t, codes.Unavailable, st.Code(), st.Message())
	assert.True(t, s.hasNotice(codes.Unavailable, true))
	select {
	case <-stopped:
	case <-time.After(fakeWaitFor):
		t.Fatal("Shutdown did not return")
	}
	assert.Len(t, n.fb.Delivered(), 6, "nothing fetched while draining")
	assert.Zero(t, n.fb.OpenConsumers())
	for sh := range int32(2) {
		p, _ := n.fb.Saved("s", "t", sh)
		assert.EqualValues(t, 3, p.Next, "shard %d", sh)
	}
}

// A shard added to a topic is read after the next shard refresh, from the
// first message published to it, for a subscription that starts at the
// latest too.
func TestFakeDispatch_AddedShardIsReadFromItsFirstMessage(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 1}, func(c *node.Config) { c.ShardRefreshInterval = 10 * time.Millisecond })
	n.fb.Fill("t", 1) // before the subscription: not delivered
	s := n.open(client.SubscribeOptions{Subscription: "s", Topics: []string{"t"}})
	n.fb.Append("t", 0, "0:1")
	s.waitCount(1)
	n.fb.AddShards("t", 1)
	n.fb.Append("t", 1, "1:0")
	got := s.waitCount(2)
	assert.Equal(t, []string{"0:1", "1:0"}, []string{string(got[0].Payload), string(got[1].Payload)})
	fakeWait(t, "both shards read", func() bool { return n.fb.Reading("s") == 2 })
}

// Subscribing again right after the last subscriber left: the new
// incarnation of the subscription starts from what the old one saved, so
// nothing acked comes back and nothing un-acked is lost, however fast the
// round trips.
func TestFakeDispatch_ResubscribingAtOnceResumesFromWhatTheLastOneSaved(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 2}, nil)
	n.fb.Fill("t", 50)
	acked := map[string]bool{}
	for round := 0; len(acked) < 100; round++ {
		require.Less(t, round, 100, "no progress")
		s := n.subscribe(10)
		msgs := s.waitCount(min(10, 100-len(acked)))
		var ack []string
		for i, m := range msgs {
			require.False(t, acked[m.ID], "round %d: %s was acked before", round, m.Payload)
			if i%2 == 0 || len(acked)+len(ack) >= 95 {
				ack = append(ack, m.ID)
			}
		}
		require.NoError(t, s.Ack(ack...))
		require.NoError(t, s.Close())
		for _, id := range ack {
			acked[id] = true
		}
	}
	fakeWait(t, "the consumer to close", func() bool { return n.fb.OpenConsumers() == 0 })
	for sh := range int32(2) {
		p, _ := n.fb.Saved("s", "t", sh)
		assert.EqualValues(t, 50, p.Next, "shard %d", sh)
	}
}

// A backend whose Poll fails at once (the contract allows it) is not
// polled in a tight loop: the node pauses after each failed poll (50ms
// doubling to 1s). Before, it polled a hundred thousand times a second for
// as long as the outage lasted.
func TestFakeDispatch_FailingPollsAreNotRetriedInATightLoop(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 1}, nil)
	s := n.subscribe(0)
	n.fb.SetPollErrorAtOnce(errors.New("connection refused"))
	fakeWait(t, "an UNAVAILABLE notice", func() bool { return s.hasNotice(codes.Unavailable, false) })
	p0, t0 := n.fb.Polls(), time.Now()
	assert.Never(t, func() bool { return n.fb.Polls()-p0 > 100 }, 300*time.Millisecond, 10*time.Millisecond,
		"more than 100 polls in 300 ms while the backend fails")
	t.Logf("%d polls in %s while the backend failed", n.fb.Polls()-p0, time.Since(t0).Round(time.Millisecond))
	n.fb.SetPollError(nil)
	fakeWait(t, "an OK notice", func() bool { return s.hasNotice(codes.OK, false) })
}

// A node whose standing in the cluster was in doubt delivers nothing until
// it has confirmed its claims (Consumer.Confirm saves each shard with its
// fence). A shard another reader took meanwhile is dropped: what the node
// held of it is void (an ABORTED notice), and the node claims it again and
// reads it from the saved position. The other shard's acks are saved by
// the Confirm.
func TestFakeDispatch_RegainedStandingConfirmsClaimsAndDropsAShardTakenMeanwhile(t *testing.T) {
	m := newFakeMembership("fake-node")
	n := startFakeNodeIn(t, map[string]int{"t": 2}, nil, m)
	n.fb.Fill("t", 3)
	s := n.subscribe(0)
	msgs := s.waitCount(6)
	fakeWait(t, "both shards claimed", func() bool { return slices.Equal(m.Claims("s"), []string{"t/0", "t/1"}) })
	of := map[int32][]string{}
	for _, r := range msgs {
		sh, _ := fakeShardSeq(t, r)
		of[sh] = append(of[sh], r.ID)
	}
	require.NoError(t, s.Ack(of[1][0], of[1][1]))
	fakeWait(t, "2 acks at the backend", func() bool { return len(n.fb.Acked()) == 2 })

	m.SetStanding(false)
	n.fb.Steal("s", "t", 0) // another node reads shard 0 now
	n.fb.Fill("t", 1)
	n.fb.SaveAll() // refused: the node's standing is in doubt
	n.barrier(s)
	assert.Len(t, n.fb.Delivered(), 6, "nothing delivered while in doubt")
	p1, _ := n.fb.Saved("s", "t", 1)
	assert.Zero(t, p1.Next, "nothing saved while in doubt")

	m.SetStanding(true)
	fakeWait(t, "an ABORTED notice", func() bool { return s.hasNotice(codes.Aborted, false) })
	got := s.waitCount(11)
	p1, _ = n.fb.Saved("s", "t", 1)
	assert.EqualValues(t, 2, p1.Next, "Confirm saved shard 1's acks")
	var again []string
	for _, r := range got[6:] {
		if sh, _ := fakeShardSeq(t, r); sh == 0 {
			again = append(again, r.ID)
		}
	}
	require.Len(t, again, 4)
	assert.Equal(t, of[0], again[:3], "shard 0 read again from its saved position, same ids")
	assert.Equal(t, []int{3}, fakeBySeq(t, got[6:])[1], "shard 1 goes on")
	fakeWait(t, "both shards claimed again", func() bool { return slices.Equal(m.Claims("s"), []string{"t/0", "t/1"}) })
	n.barrier(s)
	assert.Len(t, n.fb.Delivered(), 11)
}

// A subscriber that vanishes (its stream cut, no Close) hands what it held
// to the shards' next owner, first and in order, with delivery_attempt 2.
func TestFakeDispatch_VanishedSubscribersMessagesGoToAnotherFirst(t *testing.T) {
	n := startFakeNode(t, map[string]int{"t": 2}, nil)
	n.fb.Fill("t", 3)
	a := n.subscribe(0)
	held := a.waitCount(6)
	b := n.subscribe(0)
	a.abort()
	assert.Equal(t, codes.Canceled, a.waitEnd().Code())
	fakeWait(t, "the node to drop a", func() bool { return n.metric("streamgate_subscribe_subscribers") == 1 })
	n.fb.Fill("t", 1)
	got := b.waitCount(8)
	for sh, s := range fakeBySeq(t, got) {
		assert.Equal(t, fakeSeqs(0, 4), s, "shard %d: what a held first", sh)
	}
	assert.Subset(t, fakeIDs(got), fakeIDs(held))
	for _, m := range got {
		if _, seq := fakeShardSeq(t, m); seq < 3 {
			assert.EqualValues(t, 2, m.DeliveryAttempt, "%s", m.Payload)
		} else {
			assert.EqualValues(t, 1, m.DeliveryAttempt, "%s", m.Payload)
		}
	}
}
