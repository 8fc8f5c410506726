package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/internal/devbroker"
)

// TestCLI_StatusAgainstAThreeNodeClusterPrintsMembersAndAssignment runs
// three `serve` nodes on one devbroker, a subscriber, and `status`.
func TestCLI_StatusAgainstAThreeNodeClusterPrintsMembersAndAssignment(t *testing.T) {
	cfg := devbroker.DefaultConfig()
	cfg.Topics, cfg.Partitions = []string{"orders"}, 3
	b, err := devbroker.Start(cfg)
	require.NoError(t, err)
	defer b.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var grpcAddrs []string
	var done []chan error
	seed := ""
	for i, name := range []string{"n1", "n2", "n3"} {
		grpcAddr, httpAddr, gossipAddr := freeAddr(t), freeAddr(t), freeAddr(t)
		args := []string{"serve", "--brokers", b.ListenAddr(), "--node-name", name, "--grpc-addr", grpcAddr,
			"--http-addr", httpAddr, "--gossip-addr", gossipAddr, "--drain-timeout", "2s"}
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

	// A subscriber on n2 reads all three shards.
	subCtx, stopSub := context.WithCancel(context.Background())
	defer stopSub()
	subDone := make(chan error, 1)
	go func() {
		subDone <- run(subCtx, []string{"subscribe", "--addr", grpcAddrs[1], "--subscription", "billing", "--topic", "orders"},
			nil, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	defer func() { stopSub(); <-subDone }()

	var out bytes.Buffer
	require.Eventually(t, func() bool {
		out.Reset()
		err := run(context.Background(), []string{"status", "--addr", grpcAddrs[0], "--subscription", "billing"}, nil, &out, &bytes.Buffer{})
		return err == nil && strings.Count(out.String(), "  n2  ") >= 3 &&
			strings.Count(out.String(), "alive") == 3
	}, 15*time.Second, 100*time.Millisecond, "status shows three members and every shard read by n2:\n%s", &out)
	text := out.String()
	for _, name := range []string{"n1", "n2", "n3"} {
		assert.Contains(t, text, name)
	}
	assert.Contains(t, text, "orders/0")
	assert.Contains(t, text, "orders/2")
	t.Logf("streamgate status:\n%s", text)
}
