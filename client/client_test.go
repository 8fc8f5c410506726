package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
)

// publish publishes n keyed messages through the node and fails the test
// on any failure; it returns the payloads.
func publish(t *testing.T, c *client.Client, topic string, n int) []string {
	t.Helper()
	p := c.Publisher(client.PublishSettings{})
	defer p.Close()
	var payloads []string
	var results []*client.PublishResult
	for i := range n {
		payload := fmt.Sprintf("%s-%d", topic, i)
		payloads = append(payloads, payload)
		results = append(results, p.Publish(t.Context(), client.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Payload: []byte(payload)}))
	}
	for _, r := range results {
		_, err := r.Get(t.Context())
		require.NoError(t, err)
	}
	return payloads
}

// waitSavedToEnd waits until the subscription's saved positions reach the
// end of every partition of topic, which means a next reader starts after
// everything: nothing is delivered again.
func waitSavedToEnd(t *testing.T, e *testenv.Env, sub, topic string, total int) {
	t.Helper()
	require.Eventually(t, func() bool {
		sum := int64(0)
		for _, off := range e.Committed(t, sub)[topic] {
			sum += off
		}
		return sum == int64(total)
	}, 15*time.Second, 20*time.Millisecond, "saved positions of %s reach the end of %s", sub, topic)
}

// TestSubscriber_CloseAfterAcksRedeliversNothing acks every message and
// closes at once, 20 times: the acks sent right before Close must all be
// applied and saved (the bug: Close canceled the stream right after the
// half-close and lost them).
func TestSubscriber_CloseAfterAcksRedeliversNothing(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Kafka: func(c *kafka.Config) { c.CommitInterval = time.Hour; c.CommitEvery = 1 << 30 }})
	const n = 1000
	for i := range 20 {
		topic, sub := fmt.Sprintf("close-%d", i), fmt.Sprintf("close-sub-%d", i)
		e.CreateTopic(t, topic, 4)
		publish(t, e.Client, topic, n)
		s, err := e.Client.Subscribe(t.Context(), client.SubscribeOptions{Subscription: sub, Topics: []string{topic}, FromBeginning: true})
		require.NoError(t, err)
		got := 0
		for got < n {
			msgs, _, err := s.Recv()
			require.NoError(t, err)
			ids := make([]string, len(msgs))
			for j, m := range msgs {
				ids[j] = m.ID
			}
			require.NoError(t, s.Ack(ids...))
			got += len(msgs)
		}
		require.NoError(t, s.Close())
		waitSavedToEnd(t, e, sub, topic, n)
	}
}

// TestReceive_CloseAfterAcksRedeliversNothing is the same through Receive:
// canceling its context after the handlers acked everything must keep
// every ack, 20 times.
func TestReceive_CloseAfterAcksRedeliversNothing(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Kafka: func(c *kafka.Config) { c.CommitInterval = time.Hour; c.CommitEvery = 1 << 30 }})
	const n = 500
	for i := range 20 {
		topic, name := fmt.Sprintf("rclose-%d", i), fmt.Sprintf("rclose-sub-%d", i)
		e.CreateTopic(t, topic, 4)
		publish(t, e.Client, topic, n)
		sub := e.Client.Subscription(name, topic)
		sub.ReceiveSettings.FromBeginning = true
		ctx, cancel := context.WithCancel(t.Context())
		var handled atomic.Int64
		err := sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
			m.Ack()
			if handled.Add(1) == n {
				cancel()
			}
		})
		cancel()
		require.NoError(t, err)
		require.EqualValues(t, n, handled.Load())
		waitSavedToEnd(t, e, name, topic, n)
	}
}

// TestReceive_KeepsEachShardInOrderAndBoundsHandlers runs handlers on 4
// goroutines: every shard's messages reach the handler in publish order,
// one at a time, and never more than 4 run at once.
func TestReceive_KeepsEachShardInOrderAndBoundsHandlers(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"ordered"}})
	const n = 2000
	publish(t, e.Client, "ordered", n)
	sub := e.Client.Subscription("ordered-sub", "ordered")
	sub.ReceiveSettings.FromBeginning = true
	sub.ReceiveSettings.NumGoroutines = 4
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		mu      sync.Mutex
		last    = map[string]int{} // key -> last index seen
		running atomic.Int32
		peak    atomic.Int32
		count   int
		bad     []string
	)
	// Until two handlers have overlapped once, each waits for another to
	// start (bounded): that shows shards run in parallel without relying
	// on timing.
	overlapped := make(chan struct{})
	var overlapOnce sync.Once
	err := sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
		r := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
		}
		if r > 1 {
			overlapOnce.Do(func() { close(overlapped) })
		}
		select {
		case <-overlapped:
		case <-time.After(5 * time.Second):
		}
		var idx int
		_, _ = fmt.Sscanf(strings.TrimPrefix(string(m.Payload), "ordered-"), "%d", &idx)
		mu.Lock()
		if prev, ok := last[string(m.Key)]; ok && idx <= prev {
			bad = append(bad, fmt.Sprintf("key %s: %d after %d", m.Key, idx, prev))
		}
		last[string(m.Key)] = idx
		count++
		done := count == n
		mu.Unlock()
		m.Ack()
		if done {
			cancel()
		}
	})
	require.NoError(t, err)
	require.Empty(t, bad)
	require.LessOrEqual(t, peak.Load(), int32(4))
	require.Greater(t, peak.Load(), int32(1), "shards run in parallel")
}

// TestReceive_ReturnsARefusedOpenAtOnce: an unknown topic or a bad name is
// the caller's to fix, not retried.
func TestReceive_ReturnsARefusedOpenAtOnce(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"exists"}})
	for name, sub := range map[string]*client.Subscription{
		"unknown topic": e.Client.Subscription("s", "no-such-topic"),
		"no topics":     e.Client.Subscription("s"),
		"empty name":    e.Client.Subscription("", "exists"),
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := sub.Receive(t.Context(), func(context.Context, *client.Delivery) {})
			require.Error(t, err)
			require.Contains(t, []codes.Code{codes.NotFound, codes.InvalidArgument}, status.Code(err), "%v", err)
			require.Less(t, time.Since(start), 5*time.Second, "fails fast, without retrying")
		})
	}
}

// TestReceive_ReturnsTheAckTimeout: a handler that never acks makes the
// server end the stream with DEADLINE_EXCEEDED once Receive stops
// extending its deadline (MaxExtension); Receive returns it rather than
// reconnecting and hiding it.
func TestReceive_ReturnsTheAckTimeout(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"slow"}, Node: func(c *node.Config) { c.AckTimeout = 500 * time.Millisecond }})
	publish(t, e.Client, "slow", 10)
	sub := e.Client.Subscription("slow-sub", "slow")
	sub.ReceiveSettings.FromBeginning = true
	sub.ReceiveSettings.MaxExtension = time.Second
	var notices []client.Notice
	sub.ReceiveSettings.OnNotice = func(n client.Notice) { notices = append(notices, n) }
	err := sub.Receive(t.Context(), func(context.Context, *client.Delivery) {})
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
	require.NotEmpty(t, notices)
	require.True(t, notices[len(notices)-1].Terminal)
}

// TestReceive_ReconnectsThroughACutConnection cuts the connection under a
// Receive loop (a proxy in front of the node stops): it reports the broken
// stream with how many messages come back, opens a new one once the node
// answers again, and everything published is handled and acked.
func TestReceive_ReconnectsThroughACutConnection(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"cut"}})
	proxy := testenv.NewProxy(t, e.Addr)
	c, err := client.Dial(proxy.Addr)
	require.NoError(t, err)
	defer c.Close()
	sub := c.Subscription("cut-sub", "cut")
	sub.ReceiveSettings.FromBeginning = true
	sub.ReceiveSettings.MinBackoff, sub.ReceiveSettings.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	reconnects := make(chan client.Reconnect, 10)
	sub.ReceiveSettings.OnReconnect = func(r client.Reconnect) { reconnects <- r }

	var mu sync.Mutex
	seen := map[string]bool{}
	first := make(chan struct{})
	var firstOnce sync.Once
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
			mu.Lock()
			seen[string(m.Payload)] = true
			mu.Unlock()
			firstOnce.Do(func() { close(first) })
			m.Ack()
		})
	}()
	before := publish(t, e.Client, "cut", 200)
	<-first
	proxy.Stop()
	// The stream broke; the loop retries until the proxy is back.
	proxy.Start(t)
	var rc client.Reconnect
	select {
	case rc = <-reconnects:
	case <-time.After(30 * time.Second):
		t.Fatal("no reconnect")
	}
	require.Error(t, rc.Err)
	require.Equal(t, "test-node", rc.To)
	after := publish(t, e.Client, "cut", 200)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range append(before, after...) {
			if !seen[p] {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond, "everything published is handled")
	cancel()
	require.NoError(t, <-done)
}

// TestPublisher_ResultsPerMessageAndCloseWaitsForAll publishes from many
// goroutines, one message bad: every message gets its own result, the bad
// one fails alone with INVALID_ARGUMENT, an unknown topic NOT_FOUND, and
// Close returns only when every result is in.
func TestPublisher_ResultsPerMessageAndCloseWaitsForAll(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"pub"}})
	p := e.Client.Publisher(client.PublishSettings{MaxOutstanding: 50, BatchCount: 20})
	var (
		mu      sync.Mutex
		results []*client.PublishResult
		wg      sync.WaitGroup
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				r := p.Publish(t.Context(), client.Message{Topic: "pub", Key: fmt.Appendf(nil, "g%d", g), Payload: fmt.Appendf(nil, "%d-%d", g, i)})
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	bad := p.Publish(t.Context(), client.Message{Payload: []byte("no topic")})
	unknown := p.Publish(t.Context(), client.Message{Topic: "no-such-topic", Payload: []byte("x")})
	wg.Wait()
	require.NoError(t, p.Close())
	ids := map[string]bool{}
	for _, r := range results {
		select {
		case <-r.Ready():
		default:
			t.Fatal("Close returned before a result")
		}
		id, err := r.Get(t.Context())
		require.NoError(t, err)
		require.False(t, ids[id], "ids are unique")
		ids[id] = true
	}
	_, err := bad.Get(t.Context())
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	_, err = unknown.Get(t.Context())
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	_, err = p.Publish(t.Context(), client.Message{Topic: "pub"}).Get(t.Context())
	require.ErrorIs(t, err, client.ErrPublisherClosed)
}

// bufferedBytes reads the node's gauge of publishes waiting for the broker.
func bufferedBytes(t *testing.T, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "streamgate_publish_buffered_bytes" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// TestPublisher_AStreamBrokenBeforeItsResults holds results back (the
// node's broker is unreachable) and cuts the client's connection: without
// ResendOnReconnect the messages fail with UNAVAILABLE saying they may or
// may not be published; with it they are sent again on a new stream and
// succeed once the broker is back.
func TestPublisher_AStreamBrokenBeforeItsResults(t *testing.T) {
	for _, resend := range []bool{false, true} {
		t.Run(fmt.Sprintf("resend=%v", resend), func(t *testing.T) {
			e := testenv.Start(t, testenv.Options{Topics: []string{"held"}, Proxied: true})
			proxy := testenv.NewProxy(t, e.Addr)
			c, err := client.Dial(proxy.Addr)
			require.NoError(t, err)
			defer c.Close()
			p := c.Publisher(client.PublishSettings{ResendOnReconnect: resend, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
			_, err = p.Publish(t.Context(), client.Message{Topic: "held", Payload: []byte("warm-up")}).Get(t.Context())
			require.NoError(t, err)

			e.Proxy.Stop() // the broker: results wait
			var rs []*client.PublishResult
			for i := range 10 { // each one sent before the next, so all are on the stream the cut breaks
				held := bufferedBytes(t, e.Registry)
				rs = append(rs, p.Publish(t.Context(), client.Message{Topic: "held", Payload: fmt.Appendf(nil, "m%d", i)}))
				p.Flush()
				require.Eventually(t, func() bool { return bufferedBytes(t, e.Registry) > held }, 10*time.Second, time.Millisecond)
			}
			proxy.Stop() // the client's connection
			proxy.Start(t)
			e.Proxy.Start(t)
			for _, r := range rs {
				_, err := r.Get(t.Context())
				if resend {
					require.NoError(t, err)
				} else {
					require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
					require.Contains(t, err.Error(), "may or may not be published")
				}
			}
			_, err = p.Publish(t.Context(), client.Message{Topic: "held", Payload: []byte("after")}).Get(t.Context())
			require.NoError(t, err, "the publisher goes on on a new stream")
			require.NoError(t, p.Close())
		})
	}
}

// TestDial_OptionsAddToTheDefaults: an option given to Dial no longer
// replaces the defaults (plaintext, the receive limit), it adds to them.
func TestDial_OptionsAddToTheDefaults(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Topics: []string{"dial"}})
	c, err := client.Dial(e.Addr, grpc.WithUserAgent("dial-test"))
	require.NoError(t, err)
	defer c.Close()
	_, _, err = c.Members(t.Context())
	require.NoError(t, err)

	// A list with a dead address in it: streams go to the one that answers.
	dead := testenv.NewProxy(t, e.Addr)
	dead.Stop()
	c2, err := client.Dial(dead.Addr + "," + e.Addr)
	require.NoError(t, err)
	defer c2.Close()
	publish(t, c2, "dial", 20)
}
