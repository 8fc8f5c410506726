package node_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker/rabbitmq"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Subscriptions as resources on RabbitMQ streams (the backend's own store):
// created on one node, read and changed on the other, the stored topics
// and ack deadline applied to opens, and a delete ending the streams.
func TestSubscriptions_RabbitMQStoresSubscriptionsEveryNodeReads(t *testing.T) {
	srv := startRabbit(t)
	backend := func() *rabbitmq.Broker {
		b, err := rabbitmq.New(rabbitmq.DefaultConfig(srv.URI()))
		require.NoError(t, err)
		return b
	}
	admin := backend()
	require.NoError(t, admin.CreateTopic(t.Context(), "rq-subs", 2))
	require.NoError(t, admin.CreateTopic(t.Context(), "rq-other", 1))
	admin.Close()
	e1 := testenv.Start(t, testenv.Options{Backend: backend(), Gossip: true, NodeName: "node-1"})
	e2 := testenv.Start(t, testenv.Options{Backend: backend(), Gossip: true, NodeName: "node-2", Join: []string{e1.Gossip.LocalAddr()}})
	testenv.WaitConverged(t, e1, e2)
	ctx := kctx(t)

	created, err := e1.Client.CreateSubscription(ctx, client.SubscriptionConfig{Name: "rq", Topics: []string{"rq-subs"}, AckDeadline: 20 * time.Second})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		got, err := e2.Client.GetSubscription(ctx, "rq")
		return err == nil && got.Version == created.Version
	}, 10*time.Second, 20*time.Millisecond, "node-2 reads node-1's subscription")
	updated, err := e2.Client.UpdateSubscription(ctx, client.SubscriptionConfig{Name: "rq", AckDeadline: 30 * time.Second, Version: created.Version}, client.FieldAckDeadline)
	require.NoError(t, err)
	assert.Greater(t, updated.Version, created.Version)

	_, err = testenv.TrySubscribe(t, e1.Client, &pb.Open{Subscription: "rq", Topics: []string{"rq-other"}})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	var sub *testenv.Subscriber
	require.Eventually(t, func() bool {
		sub = testenv.Subscribe(t, e1.Client, &pb.Open{Subscription: "rq", Topics: []string{"rq-subs"}})
		if sub.Opened.GetAckDeadlineSeconds() == 30 {
			return true
		}
		sub.Close()
		return false
	}, 10*time.Second, 50*time.Millisecond, "node-1 applies node-2's update")

	require.NoError(t, e2.Client.DeleteSubscription(ctx, "rq", updated.Version))
	st := sub.WaitEnd(10 * time.Second)
	assert.Equal(t, codes.NotFound, st.Code(), "%v", st)
	assert.Equal(t, `subscription "rq" deleted`, st.Message())
}
