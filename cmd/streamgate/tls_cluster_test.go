package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/devbroker"
	"github.com/streamgate/streamgate/internal/tlstest"
)

// TestCLI_TLSTwoServeNodesRequiringClientCertificatesAnswerTheDescribeFanOut
// runs two `serve` nodes with TLS and required client certificates and no
// --cluster-tls-* flag: they call each other with their own certificate,
// verified against --tls-client-ca. A describe asked of n1 counts the
// messages held un-acked by a subscriber of n2, which only n2 knows.
func TestCLI_TLSTwoServeNodesRequiringClientCertificatesAnswerTheDescribeFanOut(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	nodePair, cliPair := ca.Server(t, "node"), ca.Issue(t, "alice", tlstest.Options{})
	cfg := devbroker.DefaultConfig()
	cfg.Addr = freeAddr(t)
	cfg.Topics, cfg.Partitions = []string{"orders"}, 1
	b, err := devbroker.Start(cfg)
	require.NoError(t, err)
	defer b.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var grpcAddrs []string
	var done []chan error
	seed := ""
	for i, name := range []string{"n1", "n2"} {
		grpcAddr, httpAddr, gossipAddr := freeAddr(t), freeAddr(t), freeAddr(t)
		args := []string{"serve", "--brokers", b.ListenAddr(), "--node-name", name, "--grpc-addr", grpcAddr,
			"--http-addr", httpAddr, "--gossip-addr", gossipAddr, "--drain-timeout", "2s",
			"--tls-cert", nodePair.CertFile, "--tls-key", nodePair.KeyFile, "--tls-client-ca", ca.File}
		if i == 0 {
			seed = gossipAddr
		} else {
			args = append(args, "--join", seed)
		}
		errc := make(chan error, 1)
		go func() { errc <- run(ctx, args, nil, &bytes.Buffer{}, &syncWriter{w: &bytes.Buffer{}}) }()
		done = append(done, errc)
		grpcAddrs = append(grpcAddrs, grpcAddr)
		waitReady(t, httpAddr)
	}
	defer func() {
		cancel()
		for _, errc := range done {
			require.NoError(t, <-errc)
		}
	}()

	opt, err := client.WithTLS(client.TLS{CAFile: ca.File, CertFile: cliPair.CertFile, KeyFile: cliPair.KeyFile})
	require.NoError(t, err)
	dial := func(addr string) *client.Client {
		c, err := client.Dial(addr, opt)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	c1, c2 := dial(grpcAddrs[0]), dial(grpcAddrs[1])
	require.Eventually(t, func() bool {
		_, members, err := c1.Members(context.Background())
		return err == nil && len(members) == 2
	}, 15*time.Second, 50*time.Millisecond, "n2 joined n1")

	sub, err := c2.Subscribe(context.Background(), client.SubscribeOptions{Subscription: "billing", Topics: []string{"orders"}, FromBeginning: true})
	require.NoError(t, err)
	defer sub.Close()
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"publish", "--addr", grpcAddrs[0], "--topic", "orders", "--message", "a", "--message", "b", "--message", "c",
		"--tls-ca", ca.File, "--tls-cert", cliPair.CertFile, "--tls-key", cliPair.KeyFile}, nil, &out, &errOut)
	require.NoError(t, err, errOut.String())
	got := 0
	for got < 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		msgs, _, err := sub.RecvContext(ctx)
		cancel()
		require.NoError(t, err)
		got += len(msgs) // held un-acked
	}

	var inFlight int
	require.Eventually(t, func() bool {
		info, err := c1.DescribeSubscription(context.Background(), "billing")
		if err != nil {
			return false
		}
		inFlight = 0
		for _, s := range info.Shards {
			inFlight += s.InFlight
		}
		return inFlight == 3
	}, 15*time.Second, 50*time.Millisecond, "n1 asked n2 over TLS with its certificate for the messages in flight")
}
