package node_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/auth"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// TestAuthNodeClusterTokenFanOut: with auth on, a node's describe asks the
// other member for its in-flight counts with Options.ClusterToken, whose
// identity the policy lets administer every subscription; the un-acked
// messages a subscriber on node 1 holds show in a describe asked of node 2.
func TestAuthNodeClusterTokenFanOut(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	policy := filepath.Join(dir, "policy.yaml")
	require.NoError(t, os.WriteFile(tokens, []byte(tokenLine("alice", "alice-tok")+tokenLine("bob", "bob-tok", "readers")+
		tokenLine("ops", "ops-tok")+tokenLine("streamgate-node", "node-tok")), 0o600))
	require.NoError(t, os.WriteFile(policy, []byte(authTestPolicy+"  - identities: [streamgate-node]\n    actions: [admin]\n    subscriptions: [\"*\"]\n"), 0o600))
	envs := testenv.StartCluster(t, 2, testenv.Options{
		Topics: []string{"orders"}, Partitions: 2,
		NodeOptions: func(o *node.Options) {
			cfg := auth.DefaultConfig()
			cfg.TokensFile, cfg.PolicyFile = tokens, policy
			a, err := auth.New(cfg, nil, nil)
			require.NoError(t, err)
			o.Auth, o.ClusterToken = a, "node-tok"
		},
		DialOptions: []grpc.DialOption{client.WithToken("ops-tok")},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	res, err := publishBatch(ctx, t, connAs(t, envs[0].Addr, "alice-tok"), "orders")
	require.NoError(t, err)
	require.Nil(t, res["orders"].GetError())

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	stream, err := pb.NewSubscriberClient(connAs(t, envs[0].Addr, "bob-tok")).Subscribe(sctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: &pb.Open{
		Subscription: "billing-fanout", Topics: []string{"orders"}, StartPosition: pb.StartPosition_START_POSITION_EARLIEST}}}))
	for got := 0; got == 0; {
		resp, err := stream.Recv()
		require.NoError(t, err)
		got = len(resp.GetMessages().GetMessages())
	}

	admin := pb.NewAdminClient(connAs(t, envs[1].Addr, "ops-tok"))
	require.Eventually(t, func() bool {
		d, err := admin.DescribeSubscription(ctx, &pb.DescribeSubscriptionRequest{Subscription: "billing-fanout"})
		require.NoError(t, err)
		in := uint32(0)
		for _, s := range d.GetShards() {
			in += s.GetInFlight()
		}
		return in == 1
	}, 15*time.Second, 50*time.Millisecond, "node 2 reads node 1's in-flight count with the cluster token")
}
