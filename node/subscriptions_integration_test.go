package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Subscriptions as resources (issue 11) on Kafka (kfake): stored in the
// backend's subscription store, which every node reads.

func kctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A subscription created on one node is read, changed and deleted on the
// other; versions rise with every change and a stale one is ABORTED.
func TestSubscriptions_KafkaAnyNodeAnswersAndVersionsGuardChanges(t *testing.T) {
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t", "dlq"}, Partitions: 2})
	a, b := envs[0].Client, envs[1].Client
	ctx := kctx(t)
	created, err := a.CreateSubscription(ctx, client.SubscriptionConfig{Name: "billing", Topics: []string{"t"}, FromBeginning: true,
		AckDeadline: 30 * time.Second, MaxDeliveryAttempts: 5, DeadLetterTopic: "dlq", MinBackoff: time.Second, MaxBackoff: time.Minute})
	require.NoError(t, err)
	assert.Positive(t, created.Version)

	var read *client.SubscriptionConfig
	require.Eventually(t, func() bool {
		read, err = b.GetSubscription(ctx, "billing")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "node-2 reads what node-1 created: %v", err)
	assert.Equal(t, created, read)

	updated, err := b.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "billing", MaxUnacked: 10, Version: created.Version}, client.FieldMaxUnacked)
	require.NoError(t, err)
	assert.Greater(t, updated.Version, created.Version)
	assert.Equal(t, 10, updated.MaxUnacked)
	assert.Equal(t, 30*time.Second, updated.AckDeadline, "fields not named are kept")

	// node-1 sees the update within moments; a change made with the old
	// version is refused there too.
	require.Eventually(t, func() bool {
		got, err := a.GetSubscription(ctx, "billing")
		return err == nil && got.Version == updated.Version
	}, 10*time.Second, 20*time.Millisecond)
	_, err = a.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "billing", MaxUnacked: 20, Version: created.Version}, client.FieldMaxUnacked)
	assert.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	err = a.DeleteSubscription(ctx, "billing", created.Version)
	assert.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	_, err = a.CreateSubscription(ctx, client.SubscriptionConfig{Name: "billing", Topics: []string{"t"}})
	assert.Equal(t, codes.AlreadyExists, status.Code(err), "%v", err)

	list, err := a.ListSubscriptions(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, *updated, list[0])

	require.NoError(t, a.DeleteSubscription(ctx, "billing", updated.Version))
	for i, c := range []*client.Client{a, b} {
		require.Eventually(t, func() bool {
			_, err := c.GetSubscription(ctx, "billing")
			return status.Code(err) == codes.NotFound
		}, 10*time.Second, 20*time.Millisecond, "node-%d: deleted", i+1)
	}
}

// Missing topics are NOT_FOUND, for the subscription's topics and for the
// dead-letter topic.
func TestSubscriptions_KafkaMissingTopicsAreNotFound(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1})
	ctx := kctx(t)
	_, err := env.Client.CreateSubscription(ctx, client.SubscriptionConfig{Name: "s", Topics: []string{"t", "nope"}})
	assert.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	_, err = env.Client.CreateSubscription(ctx, client.SubscriptionConfig{Name: "s", Topics: []string{"t"}, MaxDeliveryAttempts: 5, DeadLetterTopic: "gone"})
	assert.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), `dead_letter_topic "gone" does not exist`)
	_, err = env.Client.GetSubscription(ctx, "s")
	assert.Equal(t, codes.NotFound, status.Code(err), "nothing was stored: %v", err)
}

// An open of an unknown subscription creates it (List on the other node
// shows its topics and start); an open with other topics, on either node,
// is FAILED_PRECONDITION naming both sets.
func TestSubscriptions_KafkaOpenCreatesImplicitlyAndOtherTopicsAreRefused(t *testing.T) {
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t", "u"}, Partitions: 2})
	ctx := kctx(t)
	sub := testenv.Subscribe(t, envs[0].Client, earliest("s", "u", "t"))
	assert.EqualValues(t, 60, sub.Opened.GetAckDeadlineSeconds(), "the server's --ack-timeout")
	var list []client.SubscriptionConfig
	require.Eventually(t, func() bool {
		var err error
		list, err = envs[1].Client.ListSubscriptions(ctx)
		return err == nil && len(list) == 1
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, "s", list[0].Name)
	assert.Equal(t, []string{"t", "u"}, list[0].Topics)
	assert.True(t, list[0].FromBeginning)
	assert.Zero(t, list[0].AckDeadline, "the server's default, resolved at use")

	require.NoError(t, sub.CloseSend()) // nobody subscribed: the stored topics still hold
	sub.WaitEnd(10 * time.Second)
	for i, env := range envs {
		_, err := testenv.TrySubscribe(t, env.Client, earliest("s", "t"))
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "node-%d: %v", i+1, err)
		assert.Contains(t, status.Convert(err).Message(), `subscription "s" reads topics [t u] (stored with the subscription); this subscriber asked for [t]`)
	}
}

// An update of the ack deadline reaches open streams: a new stream's
// opened says it, and a message held past it ends its holder; a delete
// ends every stream of the subscription, on every node, with NOT_FOUND.
func TestSubscriptions_KafkaUpdateReachesOpenStreamsAndDeleteEndsThemEverywhere(t *testing.T) {
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"t"}, Partitions: 1}) // --ack-timeout 60 s
	ctx := kctx(t)
	first := testenv.Subscribe(t, envs[0].Client, &pb.Open{Subscription: "s", Topics: []string{"t"}})
	assert.EqualValues(t, 60, first.Opened.GetAckDeadlineSeconds())
	var err error
	require.Eventually(t, func() bool { // node-2's view takes node-1's implicit creation
		_, err = envs[1].Client.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "s", AckDeadline: time.Second}, client.FieldAckDeadline)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "update on node-2: %v", err)
	var second *testenv.Subscriber
	require.Eventually(t, func() bool {
		second = testenv.Subscribe(t, envs[0].Client, &pb.Open{Subscription: "s", Topics: []string{"t"}})
		if second.Opened.GetAckDeadlineSeconds() == 1 {
			return true
		}
		second.Close()
		return false
	}, 10*time.Second, 50*time.Millisecond, "node-1's view takes the update")

	envs[0].Produce(t, &kgo.Record{Topic: "t", Partition: 0, Value: []byte("held")})
	start := time.Now()
	var holder *testenv.Subscriber
	require.Eventually(t, func() bool {
		for _, s := range []*testenv.Subscriber{first, second} {
			if s.Count() > 0 {
				holder = s
			}
		}
		return holder != nil
	}, 10*time.Second, 10*time.Millisecond)
	st := holder.WaitEnd(10 * time.Second)
	assert.Equal(t, codes.DeadlineExceeded, st.Code(), "%v", st)
	assert.Contains(t, st.Message(), "the ack deadline of 1s")
	assert.Less(t, time.Since(start), 5*time.Second, "the new 1 s deadline, not the old 60 s")

	streams := []*testenv.Subscriber{
		testenv.Subscribe(t, envs[0].Client, &pb.Open{Subscription: "s", Topics: []string{"t"}}),
		testenv.Subscribe(t, envs[1].Client, &pb.Open{Subscription: "s", Topics: []string{"t"}}),
	}
	require.NoError(t, envs[1].Client.DeleteSubscription(ctx, "s", 0))
	for i, s := range streams {
		st := s.WaitEnd(10 * time.Second)
		assert.Equal(t, codes.NotFound, st.Code(), "stream %d: %v", i, st)
		assert.Equal(t, `subscription "s" deleted`, st.Message())
	}
}
