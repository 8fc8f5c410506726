package e2e

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// brokerClient is a franz-go client in the test process for the devbroker
// container. The broker advertises brokerAlias:9092, which resolves only
// on the test network, so the client dials the port mapped on the host
// whenever the broker's metadata sends it there. opts are added.
func brokerClient(t *testing.T, mapped string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	advertised := net.JoinHostPort(brokerAlias, "9092")
	var d net.Dialer
	dial := func(ctx context.Context, network, host string) (net.Conn, error) {
		if host == advertised {
			host = mapped
		}
		return d.DialContext(ctx, network, host)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(mapped), kgo.Dialer(dial)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// requireAdvertised checks that the broker tells clients to reach it by
// its network alias, which is what the gateway container relies on.
func requireAdvertised(ctx context.Context, t *testing.T, cl *kgo.Client) {
	t.Helper()
	meta, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	require.NoError(t, err, "broker metadata")
	require.Len(t, meta.Brokers, 1)
	require.Equal(t, brokerAlias, meta.Brokers[0].Host, "advertised broker host")
	require.EqualValues(t, 9092, meta.Brokers[0].Port, "advertised broker port")
}

// recordCount is the number of records in topic: the sum over its
// partitions of the end offsets (the topic is new and nothing is deleted).
func recordCount(ctx context.Context, t *testing.T, cl *kgo.Client, topic string) int64 {
	t.Helper()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	require.NoError(t, err, "list end offsets")
	require.NoError(t, ends.Error(), "list end offsets")
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// consume reads topic from the start of every partition until it has n
// records or ctx ends. Records of one partition come in offset order.
func consume(ctx context.Context, t *testing.T, mapped, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := brokerClient(t, mapped,
		kgo.ConsumeTopics(topic),
		// The default since franz-go 1.22 is a minute back, not the start.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	var recs []*kgo.Record
	for len(recs) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read back %d of %d records before the deadline: %v", len(recs), n, ctx.Err())
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			t.Fatalf("fetch %s[%d]: %v", topic, partition, err)
		})
		recs = append(recs, fetches.Records()...)
	}
	return recs
}
