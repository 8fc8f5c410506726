package node_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testcerts"
	"github.com/streamgate/streamgate/internal/testenv"
)

// TestKafkaACL_ATopicTheBrokerDeniesTheGatewayIsPermissionDeniedToTheClient:
// the node reaches a TLS, SASL/SCRAM broker with ACLs as a user allowed
// "orders" only: a message to "payroll" fails alone with PERMISSION_DENIED
// naming the broker's refusal, messages to orders on the same stream are
// published, subscribing to payroll is refused the same way, and a
// subscription of orders reads and acks under the ACLs the README lists.
func TestKafkaACL_ATopicTheBrokerDeniesTheGatewayIsPermissionDeniedToTheClient(t *testing.T) {
	pki := testcerts.New(t)
	allow := func(res kmsg.ACLResourceType, name string, pattern kmsg.ACLResourcePatternType) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: pattern, Operation: kmsg.ACLOperationAll, Allow: true}
	}
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "payroll"),
		kfake.TLS(pki.ServerConfig()), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser(kafka.SASLScramSHA512, "admin", "admin-pw"),
		kfake.User(kafka.SASLScramSHA256, "gateway", "gateway-pw",
			allow(kmsg.ACLResourceTypeTopic, "orders", kmsg.ACLResourcePatternTypeLiteral),
			allow(kmsg.ACLResourceTypeTopic, "__streamgate_subscriptions", kmsg.ACLResourcePatternTypeLiteral),
			allow(kmsg.ACLResourceTypeGroup, "streamgate.", kmsg.ACLResourcePatternTypePrefixed),
			// Position saves are fenced by transactional ids (README).
			allow(kmsg.ACLResourceTypeTransactionalId, "streamgate.", kmsg.ACLResourcePatternTypePrefixed)))
	require.NoError(t, err)
	t.Cleanup(kf.Close)
	tlsCfg, err := kafka.TLSFiles{CAFile: pki.CAFile}.Load()
	require.NoError(t, err)
	env := testenv.Start(t, testenv.Options{Cluster: kf, Kafka: func(c *kafka.Config) {
		c.TLS = tlsCfg
		c.SASL = kafka.SASL{Mechanism: kafka.SASLScramSHA256, User: "gateway", Password: "gateway-pw"}
	}})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs := []client.Message{
		{RequestID: "a", Topic: "orders", Payload: []byte("1")},
		{RequestID: "b", Topic: "payroll", Payload: []byte("2")},
		{RequestID: "c", Topic: "orders", Payload: []byte("3")},
	}
	got := map[string]client.Result{}
	require.NoError(t, env.Client.Publish(ctx, slices.Values(msgs), 3, func(r client.Result) { got[r.RequestID] = r }))
	require.Len(t, got, 3)
	assert.Equal(t, codes.OK, got["a"].Code, got["a"].Error)
	assert.Equal(t, codes.OK, got["c"].Code, got["c"].Error)
	assert.Equal(t, codes.PermissionDenied, got["b"].Code)
	assert.Contains(t, got["b"].Error, "TOPIC_AUTHORIZATION_FAILED")

	_, err = env.Client.Subscribe(ctx, client.SubscribeOptions{Subscription: "audit", Topics: []string{"payroll"}, OpenTimeout: 20 * time.Second})
	require.Error(t, err)
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	// The allowed topic is read and acked under the ACLs.
	sub, err := env.Client.Subscribe(ctx, client.SubscribeOptions{Subscription: "billing", Topics: []string{"orders"}, FromBeginning: true})
	require.NoError(t, err)
	var payloads []string
	for len(payloads) < 2 {
		rs, notice, err := sub.RecvContext(ctx)
		require.NoError(t, err)
		require.Nil(t, notice, "%+v", notice)
		for _, r := range rs {
			payloads = append(payloads, string(r.Payload))
			require.NoError(t, sub.Ack(r.ID))
		}
	}
	assert.ElementsMatch(t, []string{"1", "3"}, payloads)
	require.NoError(t, sub.Close())
}
