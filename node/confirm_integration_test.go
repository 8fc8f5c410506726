package node_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// confirmSub is a raw Subscribe stream that records ack results too, and
// runs onResult on its receiving goroutine as each arrives (to look at the
// backend at that moment).
type confirmSub struct {
	t       *testing.T
	stream  pb.Subscriber_SubscribeClient
	mu      sync.Mutex // guards the fields below
	msgs    []*pb.Message
	notices []*pb.Notice
	results []*pb.AckResult
	saved   map[string]bool
	failed  map[string]*pb.Status
	ended   error // io.EOF when it ended cleanly
}

func openConfirm(t *testing.T, env *testenv.Env, open *pb.Open, onResult func(*pb.AckResult)) *confirmSub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := pb.NewSubscriberClient(env.Client.Conn()).Subscribe(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: open}}))
	resp, err := stream.Recv()
	if err != nil {
		cancel()
		require.NoError(t, err, "open")
	}
	require.NotNil(t, resp.GetOpened())
	s := &confirmSub{t: t, stream: stream, saved: map[string]bool{}, failed: map[string]*pb.Status{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				s.mu.Lock()
				s.ended = err
				s.mu.Unlock()
				return
			}
			if r := resp.GetAckResult(); r != nil && onResult != nil {
				onResult(r)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, resp.GetMessages().GetMessages()...)
			if n := resp.GetNotice(); n != nil {
				s.notices = append(s.notices, n)
			}
			if r := resp.GetAckResult(); r != nil {
				s.results = append(s.results, r)
				for _, id := range r.GetSavedIds() {
					s.saved[id] = true
				}
				for _, f := range r.GetFailures() {
					s.failed[f.GetMessageId()] = f.GetStatus()
				}
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func (s *confirmSub) ack(ids ...string) {
	s.t.Helper()
	require.NoError(s.t, s.stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{MessageIds: ids}}}))
}

func (s *confirmSub) waitFor(what string, cond func() bool) {
	s.t.Helper()
	require.Eventually(s.t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return cond()
	}, 15*time.Second, 10*time.Millisecond, what)
}

func (s *confirmSub) waitMessages(n int) []*pb.Message {
	s.t.Helper()
	s.waitFor("messages", func() bool { return len(s.msgs) >= n })
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// answered says whether every id has a result.
func (s *confirmSub) answered(ids ...string) bool {
	for _, id := range ids {
		if !s.saved[id] && s.failed[id] == nil {
			return false
		}
	}
	return true
}

func idsOf(msgs []*pb.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetId()
	}
	return out
}

// noRegularSaves leaves saving to the confirmations: no timed saves, none
// by count within a test.
func noRegularSaves(c *kafka.Config) {
	c.CommitInterval = time.Hour
	c.CommitEvery = 1 << 30
}

// TestConfirm_SavedArrivesOnlyOnceThePositionIsSaved: with regular saves
// an hour apart, confirmed acks are saved at once, and when "saved"
// arrives the saved position already covers them (the save came first),
// in order and out of order.
func TestConfirm_SavedArrivesOnlyOnceThePositionIsSaved(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: noRegularSaves})
	produceSpread(t, env, "t", 1, 10, 0)
	type check struct {
		ids   []string
		saved map[string]map[int32]kafka.SavedPosition
	}
	checks := make(chan check, 10)
	open := earliest("c", "t")
	open.ConfirmAcks = true
	s := openConfirm(t, env, open, func(r *pb.AckResult) {
		checks <- check{ids: r.GetSavedIds(), saved: env.Saved(t, "c")} // right as the answer arrives
	})
	msgs := s.waitMessages(10)
	s.ack(idsOf(msgs[:3])...)
	s.waitFor("answers", func() bool { return s.answered(idsOf(msgs[:3])...) })
	s.ack(msgs[6].GetId())
	s.waitFor("answers", func() bool { return s.answered(msgs[6].GetId()) })

	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Empty(t, s.failed)
	for _, m := range append(msgs[:3:3], msgs[6]) {
		assert.True(t, s.saved[m.GetId()], "%s saved", m.GetPayload())
	}
	close(checks)
	for c := range checks {
		p := c.saved["t"][0]
		for _, id := range c.ids {
			i := slices.IndexFunc(msgs, func(m *pb.Message) bool { return m.GetId() == id })
			require.GreaterOrEqual(t, i, 0)
			off := int64(i) // one shard: the i-th message is at offset i
			assert.True(t, off < p.Offset || slices.Contains(p.Acked, off),
				"when saved arrived for offset %d, the saved position (%d, acked %v) covered it", off, p.Offset, p.Acked)
		}
	}
}

// TestConfirm_UnknownAndRepeatedIDsFailAndAStreamWithoutConfirmGetsNone:
// ids a stream does not hold fail with FAILED_PRECONDITION at once; a
// stream opened without confirm_acks never gets an AckResult.
func TestConfirm_UnknownAndRepeatedIDsFailAndAStreamWithoutConfirmGetsNone(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t", "u"}, Partitions: 1, Kafka: noRegularSaves})
	produceSpread(t, env, "t", 1, 2, 0)
	produceSpread(t, env, "u", 1, 2, 0)
	open := earliest("c", "t")
	open.ConfirmAcks = true
	s := openConfirm(t, env, open, nil)
	msgs := s.waitMessages(2)
	s.ack("no-such-id", msgs[0].GetId(), msgs[0].GetId())
	s.waitFor("answers", func() bool { return s.answered("no-such-id", msgs[0].GetId()) && len(s.results) >= 2 })
	s.mu.Lock()
	assert.EqualValues(t, codes.FailedPrecondition, s.failed["no-such-id"].GetCode(), "%v", s.failed["no-such-id"])
	assert.True(t, s.saved[msgs[0].GetId()], "the first ack of the id is saved")
	assert.EqualValues(t, codes.FailedPrecondition, s.failed[msgs[0].GetId()].GetCode(), "the repeated ack is not held any more")
	s.mu.Unlock()

	plain := openConfirm(t, env, earliest("p", "u"), nil)
	pm := plain.waitMessages(2)
	plain.ack(idsOf(pm)...)
	plain.ack("no-such-id")
	require.Eventually(t, func() bool {
		p := env.Saved(t, "p")["u"][0]
		return p.Offset == 0 // prepared; nothing saved by acks
	}, 5*time.Second, 20*time.Millisecond)
	require.Never(t, func() bool {
		plain.mu.Lock()
		defer plain.mu.Unlock()
		return len(plain.results) > 0
	}, 700*time.Millisecond, 20*time.Millisecond, "no AckResult without confirm_acks")
}

// TestConfirm_ASaveThatCannotHappenIsNeverSaved: while the broker fails
// every position save (at the end of its transaction), confirmed acks are answered UNAVAILABLE, never
// saved, and nothing is saved.
func TestConfirm_ASaveThatCannotHappenIsNeverSaved(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: noRegularSaves})
	produceSpread(t, env, "t", 1, 4, 0)
	open := earliest("c", "t")
	open.ConfirmAcks = true
	s := openConfirm(t, env, open, nil)
	msgs := s.waitMessages(4)

	// The offsets reach the broker inside the save's transaction, but the
	// transaction does not commit.
	fault := env.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.UnknownServerError, Count: -1})
	s.ack(idsOf(msgs[:2])...)
	s.waitFor("answers", func() bool { return s.answered(idsOf(msgs[:2])...) })
	s.mu.Lock()
	for _, m := range msgs[:2] {
		assert.False(t, s.saved[m.GetId()])
		assert.EqualValues(t, codes.Unavailable, s.failed[m.GetId()].GetCode(), "%v", s.failed[m.GetId()])
	}
	s.mu.Unlock()
	assert.EqualValues(t, 0, env.Saved(t, "c")["t"][0].Offset, "nothing saved")
	fault.Remove()
}

// TestConfirm_NodeKilledBetweenAckAndSaveNeverSaidSaved: the save of a
// confirmed ack is held at the broker and the node is killed meanwhile:
// the stream ends without "saved", and the next node delivers the message
// again.
func TestConfirm_NodeKilledBetweenAckAndSaveNeverSaidSaved(t *testing.T) {
	a := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: noRegularSaves})
	produceSpread(t, a, "t", 1, 3, 0)
	open := earliest("c", "t")
	open.ConfirmAcks = true
	s := openConfirm(t, a, open, nil)
	msgs := s.waitMessages(3)

	held, resume := make(chan struct{}), make(chan struct{})
	var once, resumeOnce sync.Once
	t.Cleanup(func() { resumeOnce.Do(func() { close(resume) }) })
	a.Cluster.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		hold := false
		once.Do(func() { hold = true })
		if !hold {
			return nil, nil, false
		}
		close(held)
		a.Cluster.SleepControl(func() { <-resume })
		return nil, errors.New("the node is gone"), true // the held save never lands
	})
	s.ack(msgs[0].GetId())
	select {
	case <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the confirmation's save never reached the broker")
	}
	a.Kill()
	s.waitFor("the stream to end", func() bool { return s.ended != nil })
	resumeOnce.Do(func() { close(resume) })
	s.mu.Lock()
	assert.False(t, s.saved[msgs[0].GetId()], "never said saved")
	s.mu.Unlock()

	b := testenv.Start(t, testenv.Options{Cluster: a.Cluster, Kafka: noRegularSaves})
	s2 := openConfirm(t, b, open, nil)
	again := s2.waitMessages(3)
	assert.Equal(t, idsOf(msgs), idsOf(again), "the next node delivers the message again")
}

// TestConfirm_AnIDVoidedByAShardResetFailsWithFailedPrecondition: a
// message whose shard was reset under the stream (its topic deleted and
// created again) is void: its ack fails with FAILED_PRECONDITION.
func TestConfirm_AnIDVoidedByAShardResetFailsWithFailedPrecondition(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1,
		Kafka: func(c *kafka.Config) { noRegularSaves(c); c.TopicCheckInterval = 200 * time.Millisecond }})
	produceSpread(t, env, "t", 1, 2, 0)
	open := earliest("c", "t")
	open.ConfirmAcks = true
	s := openConfirm(t, env, open, nil)
	msgs := s.waitMessages(2)

	env.DeleteTopic(t, "t")
	env.CreateTopic(t, "t", 1)
	s.waitFor("an ABORTED notice", func() bool {
		return slices.ContainsFunc(s.notices, func(n *pb.Notice) bool { return n.GetStatus().GetCode() == int32(codes.Aborted) })
	})
	s.ack(idsOf(msgs)...)
	s.waitFor("answers", func() bool { return s.answered(idsOf(msgs)...) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		assert.EqualValues(t, codes.FailedPrecondition, s.failed[m.GetId()].GetCode(), "%v", s.failed[m.GetId()])
	}
}

// TestConfirm_OpenOnABackendThatCannotConfirmIsUnimplemented: a backend
// without broker.AckSaving refuses confirm_acks at open.
func TestConfirm_OpenOnABackendThatCannotConfirmIsUnimplemented(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1,
		WrapBackend: func(b node.Backend) node.Backend { return plainBackend{b} }})
	open := earliest("c", "t")
	open.ConfirmAcks = true
	_, err := testenv.TrySubscribe(t, env.Client, open)
	require.Error(t, err)
	assert.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	assert.True(t, strings.Contains(err.Error(), "confirm_acks"), "%v", err)
	// Without the option the same backend serves.
	testenv.Subscribe(t, env.Client, earliest("c", "t"))
}

// plainBackend hides every optional interface of the backend it wraps.
type plainBackend struct{ node.Backend }

// TestConfirm_AnIDVoidedByAShardMoveFailsWithFailedPrecondition: another
// reader takes the shard (its save fence, as a node that claims it
// does): the confirmed ack's save is fenced, so it fails with
// FAILED_PRECONDITION, not saved; the messages the stream held are void
// (ABORTED), and the shard's next reading delivers them all again, the
// acked one too. (Acks of held messages made void fail the same way: see
// the shard reset test; here the shard is read again at once, so a later
// ack may find its message delivered again and legitimately held.)
func TestConfirm_AnIDVoidedByAShardMoveFailsWithFailedPrecondition(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: noRegularSaves})
	produceSpread(t, env, "t", 1, 3, 0)
	open := earliest("c", "t")
	open.ConfirmAcks = true
	s := openConfirm(t, env, open, nil)
	msgs := s.waitMessages(3)

	// The reader fence of partition t/0 (broker/kafka's fence.go names it
	// <group>#<topic>-<partition>): taking it is what a new reader does.
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...))
	require.NoError(t, err)
	defer cl.Close()
	req := kmsg.NewPtrInitProducerIDRequest()
	txnID := kafka.DefaultConfig().GroupPrefix + "c#t-0"
	req.TransactionalID, req.TransactionTimeoutMillis = &txnID, 60_000
	resp, err := req.RequestWith(t.Context(), cl)
	require.NoError(t, err)
	require.Zero(t, resp.ErrorCode)

	s.ack(msgs[0].GetId())
	s.waitFor("the answer", func() bool { return s.answered(msgs[0].GetId()) })
	s.waitFor("an ABORTED notice", func() bool {
		return slices.ContainsFunc(s.notices, func(n *pb.Notice) bool { return n.GetStatus().GetCode() == int32(codes.Aborted) })
	})
	s.mu.Lock()
	assert.False(t, s.saved[msgs[0].GetId()])
	assert.EqualValues(t, codes.FailedPrecondition, s.failed[msgs[0].GetId()].GetCode(), "%v", s.failed[msgs[0].GetId()])
	s.mu.Unlock()
	again := s.waitMessages(6)[3:]
	assert.Equal(t, idsOf(msgs), idsOf(again), "read again from the saved position, which has none of the acks")
	assert.EqualValues(t, 0, env.Saved(t, "c")["t"][0].Offset)
}

// TestConfirm_ADrainingNodeAnswersAcksBeforeEndingTheStream: a stream
// whose acks wait for their save when the node drains is ended only once
// they are answered, so "saved" still reaches the client.
func TestConfirm_ADrainingNodeAnswersAcksBeforeEndingTheStream(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: noRegularSaves})
	produceSpread(t, env, "t", 1, 2, 0)
	open := earliest("c", "t")
	open.ConfirmAcks = true
	s := openConfirm(t, env, open, nil)
	msgs := s.waitMessages(2)

	held, resume := make(chan struct{}), make(chan struct{})
	var once, resumeOnce sync.Once
	release := func() { resumeOnce.Do(func() { close(resume) }) }
	t.Cleanup(release)
	env.Cluster.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			env.Cluster.SleepControl(func() { <-resume })
		})
		return nil, nil, false
	})
	s.ack(idsOf(msgs)...)
	select {
	case <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the acks' save never reached the broker")
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); env.Stop() }()
	require.Eventually(t, func() bool {
		_, err := testenv.TrySubscribe(t, env.Client, earliest("other", "t"))
		return status.Code(err) == codes.Unavailable
	}, 10*time.Second, 20*time.Millisecond, "the node drains")
	release()
	s.waitFor("the stream to end", func() bool { return s.ended != nil })
	<-stopped
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		assert.True(t, s.saved[m.GetId()], "%s answered saved before the end (failed: %v)", m.GetPayload(), s.failed[m.GetId()])
	}
	assert.Equal(t, codes.Unavailable, status.Code(s.ended), "%v", s.ended)
}

// TestConfirm_ADrainingNodeAnswersAcksBeforeANackEndsTheStream: on a
// draining node, a nack of a stream's last held message ends the stream
// only once its earlier acks are answered, as an ack would.
func TestConfirm_ADrainingNodeAnswersAcksBeforeANackEndsTheStream(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1, Kafka: noRegularSaves})
	produceSpread(t, env, "t", 1, 2, 0)
	open := earliest("c", "t")
	open.ConfirmAcks = true
	s := openConfirm(t, env, open, nil)
	msgs := s.waitMessages(2)

	held, resume := make(chan struct{}), make(chan struct{})
	var once, resumeOnce sync.Once
	release := func() { resumeOnce.Do(func() { close(resume) }) }
	t.Cleanup(release)
	env.Cluster.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			env.Cluster.SleepControl(func() { <-resume })
		})
		return nil, nil, false
	})
	s.ack(msgs[0].GetId())
	select {
	case <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the ack's save never reached the broker")
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); env.Stop() }()
	require.Eventually(t, func() bool {
		_, err := testenv.TrySubscribe(t, env.Client, earliest("other", "t"))
		return status.Code(err) == codes.Unavailable
	}, 10*time.Second, 20*time.Millisecond, "the node drains")
	require.NoError(t, s.stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{MessageIds: []string{msgs[1].GetId()}}}}))
	// The nack reaches the node before the save is let go: another ack
	// of an id the stream does not hold is answered at once, after it.
	s.ack("bogus")
	s.waitFor("the bogus ack's answer", func() bool { return s.failed["bogus"] != nil || s.ended != nil })
	release()
	s.waitFor("the stream to end", func() bool { return s.ended != nil })
	<-stopped
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.True(t, s.saved[msgs[0].GetId()], "answered saved before the end (failed: %v)", s.failed[msgs[0].GetId()])
	assert.Equal(t, codes.Unavailable, status.Code(s.ended), "%v", s.ended)
}
