package brokertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

const (
	// waitFor bounds every wait for something the contract promises.
	waitFor = 15 * time.Second
	// quietFor is how long a reader is watched to see that nothing more
	// arrives: longer than one Poll ("up to about a second").
	quietFor = 1500 * time.Millisecond
)

// env is one subtest's view of the harness: names of its own, and helpers.
type env struct {
	t      *testing.T
	h      Harness
	prefix string

	mu sync.Mutex // guards n
	n  int
}

func newEnv(t *testing.T, h Harness, run, name string) *env {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '.'
	}, name)
	return &env{t: t, h: h, prefix: "sg." + run + "." + clean}
}

func (e *env) next() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	return e.n
}

// topic creates a topic of its own with shards shards.
func (e *env) topic(shards int) string {
	e.t.Helper()
	name := fmt.Sprintf("%s.t%d", e.prefix, e.next())
	e.h.CreateTopic(e.t, name, shards)
	return name
}

// subscription names a subscription of its own.
func (e *env) subscription() string { return fmt.Sprintf("%s.s%d", e.prefix, e.next()) }

// backend starts a backend client (one node's).
func (e *env) backend(o Options) Backend {
	e.t.Helper()
	return e.h.Backend(e.t, o)
}

// inspector starts a backend client to observe saved positions with, and
// skips the subtest when the backend cannot report them.
func (e *env) inspector() broker.Inspector {
	e.t.Helper()
	b := e.backend(Options{})
	in, ok := b.(broker.Inspector)
	if !ok {
		e.t.Skip("the backend implements no broker.Inspector: its saves cannot be observed")
	}
	return in
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// shards lists the shards of topics.
func shardsOf(t *testing.T, b Backend, topics ...string) []broker.ShardID {
	t.Helper()
	s, err := b.Shards(ctxFor(t, waitFor), topics)
	require.NoError(t, err)
	require.NotEmpty(t, s)
	return s
}

// messages builds n messages for topic with payloads "m<from>"...; key
// gives each one's key (nil: unkeyed).
func messages(topic string, from, n int, key func(i int) []byte) []*broker.Message {
	out := make([]*broker.Message, n)
	for i := range out {
		m := &broker.Message{Topic: topic, Payload: fmt.Appendf(nil, "m%d", from+i)}
		if key != nil {
			m.Key = key(from + i)
		}
		out[i] = m
	}
	return out
}

// names returns "m<from>" ... "m<to-1>".
func names(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("m%d", i))
	}
	return out
}

// keyMod spreads messages over mod keys.
func keyMod(mod int) func(int) []byte {
	return func(i int) []byte { return fmt.Appendf(nil, "k%d", i%mod) }
}

// publish publishes msgs one after another from this goroutine, waits for
// every result and requires them all to succeed; it returns the ids.
func publish(t *testing.T, b Backend, msgs []*broker.Message) []string {
	t.Helper()
	res := make([]broker.PublishResult, len(msgs))
	var wg sync.WaitGroup
	wg.Add(len(msgs))
	ctx := ctxFor(t, waitFor)
	for i, m := range msgs {
		var once sync.Once
		b.Publish(ctx, m, func(r broker.PublishResult) {
			once.Do(func() {
				res[i] = r
				wg.Done()
			})
		})
	}
	waitGroup(t, &wg, "publish results")
	ids := make([]string, len(msgs))
	for i, r := range res {
		require.NoError(t, r.Err, "publishing %q", msgs[i].Payload)
		require.NotEmpty(t, r.ID)
		ids[i] = r.ID
	}
	return ids
}

// publishOne publishes one message and returns its result.
func publishOne(t *testing.T, b Backend, m *broker.Message) broker.PublishResult {
	t.Helper()
	ch := make(chan broker.PublishResult, 1)
	b.Publish(ctxFor(t, waitFor), m, func(r broker.PublishResult) {
		select {
		case ch <- r:
		default:
		}
	})
	select {
	case r := <-ch:
		return r
	case <-time.After(waitFor):
		t.Fatalf("no publish result for %q within %s", m.Payload, waitFor)
		return broker.PublishResult{}
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// reader is one consumer of a subscription on one backend client.
type reader struct {
	t      *testing.T
	b      Backend
	c      broker.Consumer
	spec   broker.SubscriptionSpec
	shards []broker.ShardID
}

// open prepares spec on b, as the node does before it answers a
// subscriber, opens a consumer and assigns it shards (none: unassigned).
// The consumer is closed when t ends.
func open(t *testing.T, b Backend, spec broker.SubscriptionSpec, shards []broker.ShardID) *reader {
	t.Helper()
	require.NoError(t, b.Prepare(ctxFor(t, waitFor), spec, shards))
	c, err := b.Consume(ctxFor(t, waitFor), spec)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	if len(shards) > 0 {
		c.Assign(shards)
	}
	return &reader{t: t, b: b, c: c, spec: spec, shards: shards}
}

// spec is a subscription of topic.
func spec(name, topic string, start broker.StartPosition) broker.SubscriptionSpec {
	return broker.SubscriptionSpec{Name: name, Topics: []string{topic}, Start: start}
}

// poll polls once, failing on errors that are not ErrUnavailable (the only
// one the contract names for Poll); ErrUnavailable is logged.
func (r *reader) poll(max int) []broker.Delivery {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ds, err := r.c.Poll(ctx, max)
	if err != nil {
		require.ErrorIs(r.t, err, broker.ErrUnavailable, "Poll's errors wrap ErrUnavailable")
		r.t.Logf("poll: %v", err)
	}
	return ds
}

// take polls until n deliveries have arrived.
func (r *reader) take(n int) []broker.Delivery {
	r.t.Helper()
	var out []broker.Delivery
	deadline := time.Now().Add(waitFor)
	for len(out) < n {
		require.True(r.t, time.Now().Before(deadline), "got %d of %d deliveries within %s: %v", len(out), n, waitFor, payloads(out))
		ds := r.poll(n - len(out))
		require.LessOrEqual(r.t, len(ds), n-len(out), "Poll returns at most max")
		out = append(out, ds...)
	}
	return out
}

// quiet polls for quietFor and returns what arrived meanwhile.
func (r *reader) quiet() []broker.Delivery {
	r.t.Helper()
	var out []broker.Delivery
	for end := time.Now().Add(quietFor); time.Now().Before(end); {
		out = append(out, r.poll(100)...)
	}
	return out
}

// exactly takes n deliveries and checks that no more arrive.
func (r *reader) exactly(n int) []broker.Delivery {
	r.t.Helper()
	out := r.take(n)
	more := r.quiet()
	require.Empty(r.t, payloads(more), "nothing more arrives after %v", payloads(out))
	return out
}

// drain polls until nothing new has arrived for quietFor.
func (r *reader) drain() []broker.Delivery {
	r.t.Helper()
	var out []broker.Delivery
	deadline := time.Now().Add(waitFor)
	for {
		ds := r.quiet()
		if len(ds) == 0 {
			return out
		}
		out = append(out, ds...)
		require.True(r.t, time.Now().Before(deadline), "deliveries keep coming after %s", waitFor)
	}
}

func (r *reader) close() {
	r.t.Helper()
	require.NoError(r.t, r.c.Close(ctxFor(r.t, waitFor)))
}

func (r *reader) release(shards ...broker.ShardID) {
	r.t.Helper()
	require.NoError(r.t, r.c.Release(ctxFor(r.t, waitFor), shards))
}

// confirm saves now (Confirm saves the position of every shard given) and
// requires that none was lost.
func (r *reader) confirm(shards ...broker.ShardID) {
	r.t.Helper()
	lost, err := r.c.Confirm(ctxFor(r.t, waitFor), shards)
	require.NoError(r.t, err)
	require.Empty(r.t, lost)
}

func (r *reader) ack(ds ...broker.Delivery)       { r.c.Ack(ids(ds)...) }
func (r *reader) delivered(ds ...broker.Delivery) { r.c.Delivered(ids(ds)...) }

func ids(ds []broker.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func payloads(ds []broker.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Message.Payload)
	}
	return out
}

// pick returns the deliveries whose payloads are "m<i>" for each i.
func pick(t *testing.T, ds []broker.Delivery, is ...int) []broker.Delivery {
	t.Helper()
	by := map[string]broker.Delivery{}
	for _, d := range ds {
		by[string(d.Message.Payload)] = d
	}
	out := make([]broker.Delivery, len(is))
	for j, i := range is {
		d, ok := by[fmt.Sprintf("m%d", i)]
		require.True(t, ok, "m%d was delivered", i)
		out[j] = d
	}
	return out
}

// byShard groups deliveries by shard, keeping their order.
func byShard(ds []broker.Delivery) map[broker.ShardID][]broker.Delivery {
	out := map[broker.ShardID][]broker.Delivery{}
	for _, d := range ds {
		out[d.Shard] = append(out[d.Shard], d)
	}
	return out
}

// eventually polls cond every 20ms until it holds, failing after waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
		time.Sleep(20 * time.Millisecond)
	}
}

// backlog reads the saved backlog of each shard of topic.
func backlog(t *testing.T, in broker.Inspector, subscription, topic string) map[broker.ShardID]int64 {
	t.Helper()
	ps, err := in.Inspect(ctxFor(t, waitFor), subscription, []string{topic})
	require.NoError(t, err)
	out := map[broker.ShardID]int64{}
	for _, p := range ps {
		out[p.Shard] = p.Backlog
	}
	return out
}

var errNoEvent = errors.New("no event")

// event waits for the consumer's Events signal and takes the events.
func (r *reader) event() ([]broker.ShardEvent, error) {
	select {
	case <-r.c.Events():
		return r.c.TakeEvents(), nil
	case <-time.After(waitFor):
		return nil, errNoEvent
	}
}
