package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
)

// publishVia publishes n keyed messages through c.
func publishVia(t *testing.T, c *client.Client, topic string, from, n int) {
	t.Helper()
	p := c.Publisher(client.PublishSettings{})
	var rs []*client.PublishResult
	for i := from; i < from+n; i++ {
		rs = append(rs, p.Publish(t.Context(), client.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%40), Payload: fmt.Appendf(nil, "m%d", i)}))
	}
	for _, r := range rs {
		_, err := r.Get(t.Context())
		require.NoError(t, err)
	}
	require.NoError(t, p.Close())
}

// savedTotal sums a subscription's saved positions over topic's shards.
func savedTotal(t *testing.T, e *testenv.Env, sub, topic string) int64 {
	sum := int64(0)
	for _, off := range e.Committed(t, sub)[topic] {
		sum += off
	}
	return sum
}

// TestCLI_SubscribeMaxAcksEverythingItPrinted: `subscribe --max 1000` then
// exit keeps every ack (it lost 500 or 1,000 of them in 4 of 5 runs when
// the stream was canceled right after the half-close); the text format
// shows the delivery attempt.
func TestCLI_SubscribeMaxAcksEverythingItPrinted(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"cli-max"}, Kafka: func(c *kafka.Config) { c.CommitInterval = time.Hour; c.CommitEvery = 1 << 30 }})
	publishVia(t, e.Client, "cli-max", 0, 1000)
	for round := range 3 {
		sub := fmt.Sprintf("cli-max-%d", round)
		var out, errOut bytes.Buffer
		err := run(t.Context(), []string{"subscribe", "--addr", e.Addr, "--subscription", sub, "--topic", "cli-max", "--from-beginning", "--max", "1000"}, nil, &out, &errOut)
		require.NoError(t, err, errOut.String())
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		require.Len(t, lines, 1000)
		require.Contains(t, lines[0], "\tattempt=1\t")
		require.Eventually(t, func() bool { return savedTotal(t, e, sub, "cli-max") == 1000 }, 15*time.Second, 20*time.Millisecond,
			"every printed message was acked and saved")
	}
}

// TestCLI_SubscribeAndPublishFollowAKilledNode gives both commands the two
// nodes of a cluster: subscribe goes on on the survivor when its node is
// killed and prints every message; publish through the list works with
// one node gone.
func TestCLI_SubscribeAndPublishFollowAKilledNode(t *testing.T) {
	envs := testenv.StartCluster(t, 2, testenv.Options{Topics: []string{"follow"}})
	addrs := envs[0].Addr + "," + envs[1].Addr
	const total = 300
	var out, errOut syncBuffer
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		done <- run(ctx, []string{"subscribe", "--addr", addrs, "--subscription", "cli-follow", "--topic", "follow", "--from-beginning"}, nil, &out, &errOut)
	}()
	publishVia(t, envs[1].Client, "follow", 0, 100)
	require.Eventually(t, func() bool { return strings.Count(out.String(), "\n") >= 100 }, 20*time.Second, 10*time.Millisecond)

	// Kill the node the stream is on.
	serving := -1
	for i := range envs {
		if strings.Contains(errOut.String(), "on node "+nodeName(i)) {
			serving = i
		}
	}
	require.NotEqual(t, -1, serving, errOut.String())
	envs[serving].Kill()
	survivor := nodeName(1 - serving)

	var pubOut, pubErr bytes.Buffer
	var lines strings.Builder
	for i := 100; i < total; i++ {
		fmt.Fprintf(&lines, "m%d\n", i)
	}
	err := run(t.Context(), []string{"publish", "--addr", addrs, "--topic", "follow"}, strings.NewReader(lines.String()), &pubOut, &pubErr)
	require.NoError(t, err, pubErr.String())
	require.Equal(t, total-100, strings.Count(pubOut.String(), "\tok\t"))

	printed := func() map[string]bool {
		seen := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			f := strings.Split(l, "\t")
			seen[f[len(f)-1]] = true
		}
		return seen
	}
	require.Eventually(t, func() bool {
		seen := printed()
		for i := range total {
			if !seen[fmt.Sprintf("m%d", i)] {
				return false
			}
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "every message is printed; stderr:\n%s", &errOut)
	require.Contains(t, errOut.String(), "reconnected to "+survivor)
	cancel()
	require.NoError(t, <-done, errOut.String())
}

// TestCLI_PublishGeneratesLoad: --count/--size/--rate publish random
// payloads, spread over the shards (no key), print a summary, and keep to
// the rate.
func TestCLI_PublishGeneratesLoad(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"load"}})
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"publish", "--addr", e.Addr, "--topic", "load", "--count", "800", "--size", "256"}, nil, &out, &errOut)
	require.NoError(t, err, errOut.String())
	require.Empty(t, out.String(), "no line per message")
	require.Contains(t, errOut.String(), "published 800/800")
	recs := testenv.ReadAll(t, e.Consumer(t, "load"), 800, 20*time.Second)
	shards := map[int32]int{}
	for _, r := range recs {
		require.Len(t, r.Value, 256)
		shards[r.Partition]++
	}
	require.Len(t, shards, 8, "unkeyed messages reach every shard")

	start := time.Now()
	err = run(t.Context(), []string{"publish", "--addr", e.Addr, "--topic", "load", "--count", "20", "--size", "10", "--rate", "100"}, nil, &out, &errOut)
	require.NoError(t, err, errOut.String())
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "20 messages at 100/s take about 200 ms")

	err = run(t.Context(), []string{"publish", "--addr", e.Addr, "--topic", "load", "--count", "5", "--message", "x"}, nil, &out, &errOut)
	require.Error(t, err)
	require.Contains(t, errOut.String(), "--count generates messages")
}

// nodeName is the name testenv.StartCluster gives its i-th node.
func nodeName(i int) string { return fmt.Sprintf("node-%d", i+1) }

// syncBuffer is a buffer that a command writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
