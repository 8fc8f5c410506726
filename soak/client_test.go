package soak

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
)

// TestClient_ReceiveGoesOnAcrossAKilledAndADrainedNode runs one Receive
// loop against a list of three node processes, kills (SIGKILL) the node
// its stream is on, then drains (SIGTERM) the next one: the loop follows
// to the last node by itself, every published message is handled, and the
// saved positions reach the end.
func TestClient_ReceiveGoesOnAcrossAKilledAndADrainedNode(t *testing.T) {
	const topic, name, partitions = "t", "follow", 6
	f := newFleet(t, partitions, []string{topic}, "--commit-interval", "300ms", "--drain-timeout", "10s")
	f.add(3)
	var addrs []string
	for _, p := range f.nodes {
		addrs = append(addrs, p.grpc)
	}
	c, err := client.Dial(strings.Join(addrs, ","))
	require.NoError(t, err)
	defer c.Close()

	var (
		mu      sync.Mutex
		handled = map[string]int{}
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(handled)
	}
	sub := c.Subscription(name, topic)
	sub.ReceiveSettings.FromBeginning = true
	sub.ReceiveSettings.MinBackoff, sub.ReceiveSettings.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	reconnects := make(chan client.Reconnect, 20)
	sub.ReceiveSettings.OnReconnect = func(r client.Reconnect) { reconnects <- r }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	received := make(chan error, 1)
	go func() {
		received <- sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
			mu.Lock()
			handled[string(m.Payload)]++
			mu.Unlock()
			m.Ack()
		})
	}()

	// A steady trickle straight to the broker, so that publishing does not
	// depend on the nodes under test.
	prod, err := kgo.NewClient(kgo.SeedBrokers(f.kf.ListenAddrs()...))
	require.NoError(t, err)
	defer prod.Close()
	var (
		pubMu     sync.Mutex
		published []string
		pubWG     sync.WaitGroup
	)
	pubCtx, stopPub := context.WithCancel(ctx)
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		pace := time.NewTicker(2 * time.Millisecond)
		defer pace.Stop()
		for i := 0; pubCtx.Err() == nil; i++ {
			payload := fmt.Sprintf("m%d", i)
			if prod.ProduceSync(pubCtx, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%50), Value: []byte(payload)}).FirstErr() == nil {
				pubMu.Lock()
				published = append(published, payload)
				pubMu.Unlock()
			}
			select {
			case <-pace.C:
			case <-pubCtx.Done():
			}
		}
	}()

	// serving finds the node whose subscriber count shows the stream.
	serving := func() *proc {
		var found *proc
		require.True(t, waitFor(20*time.Second, func() bool {
			qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
			defer qcancel()
			_, members, err := c.Members(qctx)
			if err != nil {
				return false
			}
			for _, m := range members {
				if m.State == "alive" && !m.Draining && m.Subscribers > 0 {
					for _, p := range f.nodes {
						if p.name == m.Name {
							found = p
						}
					}
				}
			}
			return found != nil
		}), "a node serves the stream")
		return found
	}
	progress := func(what string) {
		t.Helper()
		n := count()
		require.True(t, waitFor(30*time.Second, func() bool { return count() >= n+100 }), "messages are handled %s", what)
	}
	nextReconnect := func(away string) client.Reconnect {
		t.Helper()
		select {
		case rc := <-reconnects:
			require.NotEqual(t, away, rc.To, "the new stream is on another node")
			t.Logf("reconnected from %s to %s after %d attempt(s), %d message(s) to come again: %v", rc.From, rc.To, rc.Attempts, rc.Dropped, rc.Err)
			return rc
		case <-time.After(30 * time.Second):
			t.Fatalf("no reconnect away from %s", away)
			return client.Reconnect{}
		}
	}

	progress("at first")
	killed := serving()
	f.kill(killed)
	nextReconnect(killed.name)
	progress("after the kill")

	drained := serving()
	require.NotEqual(t, killed.name, drained.name)
	f.drain(drained, 30*time.Second)
	nextReconnect(drained.name)
	progress("after the drain")

	stopPub()
	pubWG.Wait()
	require.True(t, waitFor(30*time.Second, func() bool {
		pubMu.Lock()
		defer pubMu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		for _, p := range published {
			if handled[p] == 0 {
				return false
			}
		}
		return true
	}), "every published message is handled")
	cancel()
	require.NoError(t, <-received)

	group := kafka.DefaultConfig().GroupPrefix + name
	require.True(t, waitFor(20*time.Second, func() bool {
		ends, err := f.ends(context.Background(), topic)
		if err != nil {
			return false
		}
		saved, err := f.saved(context.Background(), group)
		if err != nil {
			return false
		}
		for p, end := range ends {
			if end > 0 && saved[p].At != end {
				return false
			}
		}
		return true
	}), "the saved positions reach the end: nothing acked comes again")
	pubMu.Lock()
	t.Logf("%d published, %d handled", len(published), count())
	pubMu.Unlock()
}
