package node_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Subscriptions as resources (issue 11) on the fake backend with a fake
// store: the Admin methods' statuses, and the open path.

var storeTopics = map[string]int{"t": 2, "u": 1, "dlq": 1}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), fakeWaitFor)
	t.Cleanup(cancel)
	return ctx
}

func TestSubscriptions_CreateGetUpdateListDeleteRoundTrip(t *testing.T) {
	n := startStoreNode(t, storeTopics, nil)
	ctx := ctx5(t)
	want := client.SubscriptionConfig{Name: "billing", Topics: []string{"u", "t", "t"}, FromBeginning: true,
		AckDeadline: 30 * time.Second, MaxUnacked: 50, MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq",
		MinBackoff: 10 * time.Second, MaxBackoff: 600 * time.Second}
	created, err := n.cl.CreateSubscription(ctx, want)
	require.NoError(t, err)
	want.Topics = []string{"t", "u"} // sorted, without duplicates
	assert.Positive(t, created.Version)
	assert.False(t, created.Created.IsZero())
	assert.Equal(t, created.Created, created.Updated)
	got := *created
	got.Version, got.Created, got.Updated = 0, time.Time{}, time.Time{}
	assert.Equal(t, want, got)

	read, err := n.cl.GetSubscription(ctx, "billing")
	require.NoError(t, err)
	assert.Equal(t, created, read)

	up := client.SubscriptionConfig{Name: "billing", AckDeadline: 90 * time.Second, MaxDeliveryAttempts: 0, Topics: []string{"ignored"}}
	updated, err := n.cl.UpdateSubscription(ctx, up, client.FieldAckDeadline, client.FieldMaxDeliveryAttempts, client.FieldDeadLetterTopic)
	require.NoError(t, err)
	assert.Greater(t, updated.Version, created.Version, "every change raises the version")
	assert.Equal(t, 90*time.Second, updated.AckDeadline)
	assert.Zero(t, updated.MaxDeliveryAttempts)
	assert.Empty(t, updated.DeadLetterTopic)
	assert.Equal(t, []string{"t", "u"}, updated.Topics, "fields not named are kept")
	assert.Equal(t, 50, updated.MaxUnacked)
	assert.Equal(t, created.Created, updated.Created)

	_, err = n.cl.CreateSubscription(ctx, client.SubscriptionConfig{Name: "audit", Topics: []string{"t"}})
	require.NoError(t, err)
	list, err := n.cl.ListSubscriptions(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, "audit", list[0].Name, "sorted by name")
	assert.Equal(t, *updated, list[1])
	assert.Zero(t, list[0].AckDeadline, "0: the server's default, resolved at use")

	require.NoError(t, n.cl.DeleteSubscription(ctx, "billing", updated.Version))
	_, err = n.cl.GetSubscription(ctx, "billing")
	assert.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	assert.Equal(t, `subscription "billing" not found`, status.Convert(err).Message())
}

// Every bad request gets its own status and a message naming the field.
func TestSubscriptions_EveryBadRequestGetsAPreciseStatus(t *testing.T) {
	n := startStoreNode(t, storeTopics, nil)
	ctx := ctx5(t)
	admin := pb.NewAdminClient(n.cl.Conn())
	existing, err := admin.CreateSubscription(ctx, &pb.CreateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s", Topics: []string{"t"}}})
	require.NoError(t, err)
	ok := func(f func(*pb.Subscription)) *pb.Subscription {
		s := &pb.Subscription{Name: "new", Topics: []string{"t"}}
		f(s)
		return s
	}
	for _, tc := range []struct {
		name string
		sub  *pb.Subscription
		code codes.Code
		msg  string
	}{
		{"missing", nil, codes.InvalidArgument, "subscription is missing"},
		{"empty name", ok(func(s *pb.Subscription) { s.Name = "" }), codes.InvalidArgument, "name is empty"},
		{"long name", ok(func(s *pb.Subscription) { s.Name = strings.Repeat("n", 250) }), codes.InvalidArgument, "at most 249 bytes"},
		{"name not UTF-8", ok(func(s *pb.Subscription) { s.Name = "\xff" }), codes.InvalidArgument, "valid UTF-8"},
		{"no topics", ok(func(s *pb.Subscription) { s.Topics = nil }), codes.InvalidArgument, "topics: none given"},
		{"empty topic", ok(func(s *pb.Subscription) { s.Topics = []string{"t", ""} }), codes.InvalidArgument, "topics: a topic name is empty"},
		{"topic not UTF-8", ok(func(s *pb.Subscription) { s.Topics = []string{"\xfe"} }), codes.InvalidArgument, "topics: topic names must be valid UTF-8"},
		{"missing topic", ok(func(s *pb.Subscription) { s.Topics = []string{"t", "nope"} }), codes.NotFound, "topic not found"},
		{"bad start", ok(func(s *pb.Subscription) { s.StartPosition = 9 }), codes.InvalidArgument, "unknown start_position 9"},
		{"ack deadline over 600", ok(func(s *pb.Subscription) { s.AckDeadlineSeconds = 601 }), codes.InvalidArgument, "ack_deadline_seconds 601 is out of range: want 1..600"},
		{"max unacked over the server's", ok(func(s *pb.Subscription) { s.MaxUnacked = 1001 }), codes.InvalidArgument, "max_unacked 1001 is out of range: want 1..1000"},
		{"attempts under 5", ok(func(s *pb.Subscription) { s.MaxDeliveryAttempts, s.DeadLetterTopic = 4, "dlq" }), codes.InvalidArgument, "max_delivery_attempts 4 is out of range: want 5..100"},
		{"attempts over 100", ok(func(s *pb.Subscription) { s.MaxDeliveryAttempts, s.DeadLetterTopic = 101, "dlq" }), codes.InvalidArgument, "max_delivery_attempts 101 is out of range"},
		{"attempts without a dead-letter topic", ok(func(s *pb.Subscription) { s.MaxDeliveryAttempts = 5 }), codes.InvalidArgument, "max_delivery_attempts 5 needs a dead_letter_topic"},
		{"dead-letter topic without attempts", ok(func(s *pb.Subscription) { s.DeadLetterTopic = "dlq" }), codes.InvalidArgument, "max_delivery_attempts is 0"},
		{"dead-letter topic is a topic of its own", ok(func(s *pb.Subscription) { s.MaxDeliveryAttempts, s.DeadLetterTopic = 5, "t" }), codes.InvalidArgument, `dead_letter_topic "t" is one of the subscription's topics`},
		{"missing dead-letter topic", ok(func(s *pb.Subscription) { s.MaxDeliveryAttempts, s.DeadLetterTopic = 5, "gone" }), codes.NotFound, `dead_letter_topic "gone" does not exist`},
		{"backoff over 600", ok(func(s *pb.Subscription) { s.RetryPolicy = &pb.RetryPolicy{MaximumBackoffSeconds: 601} }), codes.InvalidArgument, "each want 0..600"},
		{"minimum over maximum", ok(func(s *pb.Subscription) {
			s.RetryPolicy = &pb.RetryPolicy{MinimumBackoffSeconds: 20, MaximumBackoffSeconds: 10}
		}), codes.InvalidArgument, "minimum_backoff_seconds 20 is over maximum_backoff_seconds 10"},
		{"bad ordering", ok(func(s *pb.Subscription) { s.Ordering = 3 }), codes.InvalidArgument, "unknown ordering 3"},
		{"name taken", ok(func(s *pb.Subscription) { s.Name = "s" }), codes.AlreadyExists, `subscription "s" already exists`},
	} {
		t.Run("create/"+tc.name, func(t *testing.T) {
			_, err := admin.CreateSubscription(ctx, &pb.CreateSubscriptionRequest{Subscription: tc.sub})
			assert.Equal(t, tc.code, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), tc.msg)
		})
	}

	for _, tc := range []struct {
		name string
		req  *pb.UpdateSubscriptionRequest
		code codes.Code
		msg  string
	}{
		{"missing", &pb.UpdateSubscriptionRequest{UpdateMask: []string{"max_unacked"}}, codes.InvalidArgument, "subscription is missing"},
		{"no mask", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s"}}, codes.InvalidArgument, "update_mask is empty"},
		{"unknown field", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s"}, UpdateMask: []string{"colour"}}, codes.InvalidArgument, `unknown field "colour"`},
		{"topics", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s"}, UpdateMask: []string{"topics"}}, codes.InvalidArgument, "topics is fixed after creation"},
		{"start position", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s"}, UpdateMask: []string{"start_position"}}, codes.InvalidArgument, "start_position is fixed after creation"},
		{"name", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s"}, UpdateMask: []string{"name"}}, codes.InvalidArgument, "name is fixed after creation"},
		{"version", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s"}, UpdateMask: []string{"version"}}, codes.InvalidArgument, "version is set by the server"},
		{"unknown subscription", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "nobody"}, UpdateMask: []string{"max_unacked"}}, codes.NotFound, `subscription "nobody" not found`},
		{"stale version", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s", Version: existing.GetVersion() + 1}, UpdateMask: []string{"max_unacked"}}, codes.Aborted, "version mismatch"},
		{"bad value", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s", AckDeadlineSeconds: 601}, UpdateMask: []string{"ack_deadline_seconds"}}, codes.InvalidArgument, "ack_deadline_seconds 601"},
		{"attempts without a dead-letter topic", &pb.UpdateSubscriptionRequest{Subscription: &pb.Subscription{Name: "s", MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq"}, UpdateMask: []string{"max_delivery_attempts"}}, codes.InvalidArgument, "needs a dead_letter_topic"},
	} {
		t.Run("update/"+tc.name, func(t *testing.T) {
			_, err := admin.UpdateSubscription(ctx, tc.req)
			assert.Equal(t, tc.code, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), tc.msg)
		})
	}

	_, err = admin.GetSubscription(ctx, &pb.GetSubscriptionRequest{})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "get without a name: %v", err)
	_, err = admin.GetSubscription(ctx, &pb.GetSubscriptionRequest{Name: "nobody"})
	assert.Equal(t, codes.NotFound, status.Code(err), "get of an unknown one: %v", err)
	_, err = admin.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Name: "nobody"})
	assert.Equal(t, codes.NotFound, status.Code(err), "delete of an unknown one: %v", err)
	_, err = admin.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Name: "s", Version: existing.GetVersion() + 1})
	assert.Equal(t, codes.Aborted, status.Code(err), "delete of a stale version: %v", err)
	got, err := admin.GetSubscription(ctx, &pb.GetSubscriptionRequest{Name: "s"})
	require.NoError(t, err)
	assert.Equal(t, existing.GetVersion(), got.GetVersion(), "nothing above changed it")
}

// A versioned update applies once; the second with the same version is
// ABORTED, and so is a delete with it.
func TestSubscriptions_StaleVersionIsAborted(t *testing.T) {
	n := startStoreNode(t, storeTopics, nil)
	ctx := ctx5(t)
	v1, err := n.cl.CreateSubscription(ctx, client.SubscriptionConfig{Name: "s", Topics: []string{"t"}})
	require.NoError(t, err)
	v2, err := n.cl.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "s", MaxUnacked: 10, Version: v1.Version}, client.FieldMaxUnacked)
	require.NoError(t, err)
	assert.Greater(t, v2.Version, v1.Version)
	_, err = n.cl.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "s", MaxUnacked: 20, Version: v1.Version}, client.FieldMaxUnacked)
	assert.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	err = n.cl.DeleteSubscription(ctx, "s", v1.Version)
	assert.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	got, err := n.cl.GetSubscription(ctx, "s")
	require.NoError(t, err)
	assert.Equal(t, 10, got.MaxUnacked)
	require.NoError(t, n.cl.DeleteSubscription(ctx, "s", v2.Version))
}

// A backend without a store serves subscriptions with the server's
// defaults and says so on the Admin methods.
func TestSubscriptions_WithoutAStoreTheAdminMethodsAreUnimplemented(t *testing.T) {
	n := startFakeNode(t, storeTopics, nil)
	ctx := ctx5(t)
	_, err := n.cl.ListSubscriptions(ctx)
	assert.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "keeps no subscription settings")
	_, err = n.cl.CreateSubscription(ctx, client.SubscriptionConfig{Name: "s", Topics: []string{"t"}})
	assert.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	s := n.subscribe(0)
	assert.Equal(t, 60*time.Second, s.AckDeadline, "the server's --ack-timeout")
}

// An open of an unknown subscription creates it with its topics and start
// and the server's defaults; an open with other topics is refused.
func TestSubscriptions_OpenCreatesImplicitlyAndOtherTopicsAreFailedPrecondition(t *testing.T) {
	n := startStoreNode(t, storeTopics, func(c *node.Config) { c.AckTimeout, c.MaxUnacked = 2*time.Second, 100 })
	ctx := ctx5(t)
	s := n.open(client.SubscribeOptions{Subscription: "s", Topics: []string{"u", "t"}, FromBeginning: true})
	assert.Equal(t, 2*time.Second, s.AckDeadline, "the server's --ack-timeout")
	assert.EqualValues(t, 100, s.MaxUnacked, "the server's --max-unacked")
	list, err := n.cl.ListSubscriptions(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "s", list[0].Name)
	assert.Equal(t, []string{"t", "u"}, list[0].Topics)
	assert.True(t, list[0].FromBeginning)
	assert.Zero(t, list[0].AckDeadline, "stored as the server's default")
	assert.Zero(t, list[0].MaxUnacked)

	_, err = n.cl.Subscribe(ctx, client.SubscribeOptions{Subscription: "s", Topics: []string{"t"}})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	assert.Equal(t, `subscription "s" reads topics [t u] (stored with the subscription); this subscriber asked for [t] (every subscriber of a subscription names the same topics, fixed when it is created)`,
		status.Convert(err).Message())

	// Stored ones too, with nobody subscribed.
	_, err = n.cl.CreateSubscription(ctx, client.SubscriptionConfig{Name: "idle", Topics: []string{"u"}})
	require.NoError(t, err)
	_, err = n.cl.Subscribe(ctx, client.SubscribeOptions{Subscription: "idle", Topics: []string{"t"}})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "reads topics [u]")
}

// The stored settings apply to a stream: its limit is the smaller of its
// own and the stored one, its ack deadline the stored one, and the stored
// start position wins over the open's.
func TestSubscriptions_StoredSettingsApplyToStreams(t *testing.T) {
	n := startStoreNode(t, storeTopics, nil)
	ctx := ctx5(t)
	n.fb.Append("u", 0, "a", "b", "c")
	_, err := n.cl.CreateSubscription(ctx, client.SubscriptionConfig{Name: "s", Topics: []string{"u"}, FromBeginning: true,
		AckDeadline: 7 * time.Second, MaxUnacked: 2})
	require.NoError(t, err)
	s := n.open(client.SubscribeOptions{Subscription: "s", Topics: []string{"u"}, FromBeginning: false, MaxUnacked: 5})
	assert.Equal(t, 7*time.Second, s.AckDeadline)
	assert.EqualValues(t, 2, s.MaxUnacked, "min(the open's 5, the stored 2)")
	msgs := s.waitCount(2)
	assert.Equal(t, "a", string(msgs[0].Payload), "the stored earliest start won over the open's latest")
	s2 := n.open(client.SubscribeOptions{Subscription: "s", Topics: []string{"u"}, MaxUnacked: 1})
	assert.EqualValues(t, 1, s2.MaxUnacked)
}

// An update reaches open streams: through the store watcher, a held
// message times out by the new deadline; a new stream's opened says it.
// A delete ends every stream with NOT_FOUND.
func TestSubscriptions_UpdateReachesOpenStreamsAndDeleteEndsThem(t *testing.T) {
	n := startStoreNode(t, storeTopics, nil) // --ack-timeout 60 s
	ctx := ctx5(t)
	s := n.open(client.SubscribeOptions{Subscription: "s", Topics: []string{"u"}})
	assert.Equal(t, 60*time.Second, s.AckDeadline)
	up, err := n.cl.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "s", AckDeadline: time.Second}, client.FieldAckDeadline)
	require.NoError(t, err)
	fakeWait(t, "the running subscription to take the new settings", func() bool {
		return n.log.has("subscription settings applied version=" + strconv.FormatInt(up.Version, 10) + " ack_deadline=1s")
	})
	n.fb.Append("u", 0, "held")
	s.waitCount(1)
	start := time.Now()
	st := s.waitEnd()
	assert.Equal(t, codes.DeadlineExceeded, st.Code(), "%v", st)
	assert.Contains(t, st.Message(), "the ack deadline of 1s")
	assert.Less(t, time.Since(start), 4*time.Second, "ended by the new 1 s deadline, not the old 60 s")

	s2 := n.open(client.SubscribeOptions{Subscription: "s", Topics: []string{"u"}})
	assert.Equal(t, time.Second, s2.AckDeadline)
	s3 := n.open(client.SubscribeOptions{Subscription: "s", Topics: []string{"u"}})
	require.NoError(t, n.cl.DeleteSubscription(ctx, "s", 0))
	for _, sub := range []*fakeSub{s2, s3} {
		st := sub.waitEnd()
		assert.Equal(t, codes.NotFound, st.Code(), "%v", st)
		assert.Equal(t, `subscription "s" deleted`, st.Message())
	}
}

// Many opens of one new subscription at once store it once; an open that
// finds it created meanwhile by another node (not in this node's view
// yet) reads it and follows it: its topics are refused when they differ.
func TestSubscriptions_ConcurrentOpensCreateOnceAndARaceReadsTheWinner(t *testing.T) {
	n := startStoreNode(t, storeTopics, nil)
	ctx := ctx5(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := n.cl.Subscribe(ctx, client.SubscribeOptions{Subscription: "fleet", Topics: []string{"t"}, OpenTimeout: fakeWaitFor})
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 1, n.store.createCalls(), "one write for 20 opens at once")

	n.store.storedElsewhere(broker.SubscriptionConfig{Name: "raced", Topics: []string{"u"}, AckDeadline: 9 * time.Second})
	_, err := n.cl.Subscribe(ctx, client.SubscribeOptions{Subscription: "raced", Topics: []string{"t"}, OpenTimeout: fakeWaitFor})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "reads topics [u]")
	s := n.open(client.SubscribeOptions{Subscription: "raced", Topics: []string{"u"}})
	assert.Equal(t, 9*time.Second, s.AckDeadline, "the winner's settings")
}
