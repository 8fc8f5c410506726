package node_test

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
)

func TestServer_ReflectionListsBothServicesAsGrpcurlDoes(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := rpb.NewServerReflectionClient(env.Client.Conn()).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	assert.Subset(t, names, []string{"streamgate.v1.Publisher", "streamgate.v1.Subscriber", "grpc.health.v1.Health"})

	h, err := healthpb.NewHealthClient(env.Client.Conn()).Check(ctx, &healthpb.HealthCheckRequest{Service: "streamgate.v1.Publisher"})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, h.GetStatus())
}

// TestInterop_PublishThroughStreamgateReadBackWithKcat checks that a real
// third-party Kafka client (kcat, librdkafka) sees what streamgate wrote.
func TestInterop_PublishThroughStreamgateReadBackWithKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (Debian: apt-get install kcat); CI installs it")
	}
	env := testenv.Start(t, testenv.Options{Topics: []string{"interop"}, Partitions: 3})
	const n = 100
	msgs := make([]client.Message, n)
	for i := range msgs {
		msgs[i] = client.Message{
			RequestID: fmt.Sprint(i),
			Topic:     "interop",
			Key:       fmt.Appendf(nil, "key-%d", i%7),
			Payload:   fmt.Appendf(nil, "payload %d", i),
			Headers:   []client.Header{{Key: "trace", Value: fmt.Appendf(nil, "t%d", i)}, {Key: "src", Value: []byte("streamgate")}},
		}
	}
	for _, r := range publish(t, env.Client, msgs, 20) {
		require.Equal(t, codes.OK, r.Code, r.Error)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", env.Brokers[0], "-C", "-t", "interop",
		"-o", "beginning", "-e", "-q", "-f", "%k|%h|%s\n").CombinedOutput()
	require.NoError(t, err, "kcat: %s", out)

	var got []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		got = append(got, sc.Text())
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("key-%d|trace=t%d,src=streamgate|payload %d", i%7, i, i))
	}
	slices.Sort(got)
	slices.Sort(want)
	assert.Equal(t, want, got)
}

func TestAdmin_DescribeSubscriptionOnASingleNodeShowsOwnersReadersAndBacklog(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 2})
	sub := testenv.Subscribe(t, env.Client, earliest("s", "t"))
	var info *client.SubscriptionInfo
	require.Eventually(t, func() bool {
		var err error
		info, err = env.Client.DescribeSubscription(context.Background(), "s")
		return err == nil && len(info.Shards) == 2 && info.Shards[0].ClaimedBy != "" && info.Shards[1].ClaimedBy != ""
	}, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, []string{"t"}, info.Topics)
	require.Len(t, info.Subscribers, 1)
	for _, sh := range info.Shards {
		assert.Equal(t, sub.Opened.GetSubscriberId(), sh.SubscriberID)
		assert.Equal(t, "test-node", sh.ClaimedBy)
		assert.EqualValues(t, 0, sh.Backlog)
	}
	_, err := env.Client.DescribeSubscription(context.Background(), "nobody")
	assert.Equal(t, codes.NotFound, status.Code(err))
}
