package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/streamgate/streamgate/broker/kafka"
)

// kfakeFault is a broker fault the injector turns on for a while: fetches
// failing, or saves of positions failing.
func kfakeFault(kind string) kfake.Fault {
	if kind == "fetch" {
		return kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.UnknownServerError, Count: -1}
	}
	return kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: -1}
}

// envDuration reads a duration from the environment, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: want a duration such as 5m", name, v)
	}
	return d
}

// TestSoak runs three nodes under faults while publishers and subscribers
// use them through the public API, then reads the topic back and checks:
// nothing published OK is missing; every record was acked at least once;
// per shard, first deliveries came in offset order; no saved position ever
// moved backwards; none was redelivered after its ack was saved; no two
// nodes read a shard at once; the saved positions reach the end. It
// reports redeliveries by cause.
//
// STREAMGATE_SOAK_DURATION sets how long faults are injected (default
// 40s), STREAMGATE_SOAK_SEED the seed (default: the time; printed).
func TestSoak(t *testing.T) {
	duration := envDuration(t, "STREAMGATE_SOAK_DURATION", 40*time.Second)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("STREAMGATE_SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("STREAMGATE_SOAK_SEED=%q: want a number", v)
		}
	}
	t.Logf("soak: seed %d (STREAMGATE_SOAK_SEED=%d reruns it), faults for %s", seed, seed, duration)

	const topic, sub, partitions = "soak", "soak", 8
	ackTimeout := 4 * time.Second
	f := newFleet(t, partitions, []string{topic},
		"--commit-interval", "1s", "--commit-every", "200",
		"--ack-timeout", ackTimeout.String(), "--drain-timeout", "3s",
		"--max-unacked", "200", "--log-level", "info")
	f.add(3)
	w := &workload{
		f: f, rec: newRecord(), topic: topic, sub: sub, ackTimeout: ackTimeout,
		stallOdds: 0.08, nackOdds: 0.002, churnAfter: [2]time.Duration{4 * time.Second, 12 * time.Second},
		rng: rand.New(rand.NewPCG(seed, seed>>1|1)), faults: rand.New(rand.NewPCG(seed>>1|1, seed)),
		publishEvery: 40 * time.Millisecond,
	}
	group := kafka.DefaultConfig().GroupPrefix + sub

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var bg sync.WaitGroup
	goBg := func(fn func()) {
		bg.Add(1)
		go func() { defer bg.Done(); fn() }()
	}
	pl := &poller{samples: map[int32][]positionSample{}}
	cw := &claimWatch{}
	goBg(func() { pl.run(ctx, f, group, 50*time.Millisecond) })
	goBg(func() { cw.run(ctx, f, sub, 100*time.Millisecond) })

	// The subscribers first: the subscription exists before anything is
	// published, so every record must reach them.
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	for range 4 {
		goBg(func() { w.subscriber(subCtx) })
	}
	require.Eventually(t, func() bool {
		got, err := f.saved(ctx, group)
		return err == nil && len(got) == partitions
	}, 20*time.Second, 20*time.Millisecond, "the subscription exists")

	pubCtx, stopPubs := context.WithCancel(ctx)
	for i := range 2 {
		goBg(func() { w.publisher(pubCtx, i) })
	}
	faultCtx, stopFaults := context.WithTimeout(ctx, duration)
	defer stopFaults()
	injected := make(chan struct{})
	go func() {
		defer close(injected)
		w.injector(faultCtx, [2]time.Duration{2 * time.Second, 4 * time.Second},
			[]string{"kill", "drain", "freeze", "freeze", "fetch-faults", "save-faults"})
	}()
	<-injected
	stopPubs()
	t.Logf("soak: faults done at +%s: %v", time.Since(w.rec.start).Round(time.Millisecond), faultList(w.rec))

	// Let the fleet settle: every record acked, positions at the end.
	readBack := func() map[string]rec {
		return readTopic(t, f, topic)
	}
	var topicRecs map[string]rec
	settled := waitFor(90*time.Second, func() bool {
		topicRecs = readBack()
		w.rec.mu.Lock()
		for payload := range topicRecs {
			if !w.rec.ackedPayload(payload) {
				w.rec.mu.Unlock()
				return false
			}
		}
		w.rec.mu.Unlock()
		return true
	})
	if !settled {
		w.rec.mu.Lock()
		t.Logf("open failures: %v", w.rec.openFails)
		n := 0
		for payload := range topicRecs {
			if !w.rec.ackedPayload(payload) {
				n++
			}
		}
		whys := map[string]int{}
		for _, ses := range w.rec.sessions {
			whys[ses.node+" "+ses.why]++
		}
		t.Logf("%d of %d records not acked; sessions: %d, ended: %v", n, len(topicRecs), len(w.rec.sessions), whys)
		w.rec.mu.Unlock()
	}
	require.True(t, settled, "every record in the topic is acked within 90s of the last fault")
	ends, err := f.ends(ctx, topic)
	require.NoError(t, err)
	assert.True(t, waitFor(30*time.Second, func() bool {
		got, err := f.saved(ctx, group)
		if err != nil {
			return false
		}
		for p, end := range ends {
			if got[p].At != end {
				return false
			}
		}
		return true
	}), "saved positions reach the end")
	stopSubs()
	stop()
	bg.Wait()

	// Nothing published OK is missing.
	w.rec.mu.Lock()
	missing := 0
	for _, payload := range w.rec.published {
		if _, ok := topicRecs[payload]; !ok {
			missing++
		}
	}
	published, failed := len(w.rec.published), w.rec.failed
	w.rec.mu.Unlock()
	assert.Zero(t, missing, "messages published OK and missing from the topic")

	// Per shard, first deliveries in offset order.
	disorder := 0
	for shard, ids := range w.rec.firstDeliveries() {
		last := int64(-1)
		for _, id := range ids {
			r := topicRecs[w.rec.msgs[id].payload]
			if r.offset < last {
				disorder++
				if disorder < 5 {
					t.Logf("shard %s: offset %d first delivered after %d", shard, r.offset, last)
				}
			}
			last = max(last, r.offset)
		}
	}
	assert.Zero(t, disorder, "first deliveries out of shard order")

	// No ack that was saved is lost: nothing redelivered after its ack
	// was saved.
	savedLost, inTransit := 0, 0
	thawed := map[string][]time.Time{}
	for _, f := range w.rec.sortedFaults() {
		if f.kind == "freeze" {
			thawed[f.node] = append(thawed[f.node], f.end)
		}
	}
	for id, m := range w.rec.msgs {
		r := topicRecs[m.payload]
		at := pl.savedAt(r.partition, r.offset)
		if at.IsZero() {
			continue
		}
		for _, d := range m.deliveries {
			if d.at.After(at.Add(100 * time.Millisecond)) { // the poll saw it saved before this delivery left the node
				// Bytes a node had written before it was frozen reach the
				// client when it runs again: sent before, received after.
				node := w.rec.sessions[d.sess].node
				if slices.ContainsFunc(thawed[node], func(t time.Time) bool { return d.at.After(t) && d.at.Before(t.Add(300*time.Millisecond)) }) && d.attempt == 1 {
					inTransit++
					continue
				}
				savedLost++
				if savedLost < 5 {
					t.Logf("%s (p%d@%d) saved by +%s, delivered again at +%s", id, r.partition, r.offset, at.Sub(w.rec.start), d.at.Sub(w.rec.start))
				}
				break
			}
		}
	}
	pl.mu.Lock()
	backwards := slices.Clone(pl.backwards)
	pl.mu.Unlock()
	cw.mu.Lock()
	overlaps, rounds := slices.Clone(cw.overlaps), cw.rounds
	cw.mu.Unlock()

	sum := w.rec.summarize()
	t.Logf("soak: %d published OK, %d failed or unconfirmed, %d records in the topic", published, failed, len(topicRecs))
	t.Logf("soak: %s", sum)
	t.Logf("soak: %d claim rounds watched, %d overlaps; %d backward moves; %d saved acks redelivered (%d more were in transit when their node froze)", rounds, len(overlaps), len(backwards), savedLost, inTransit)
	assert.Empty(t, backwards, "saved positions moved backwards")
	assert.Zero(t, savedLost, "messages redelivered after their ack was saved")
	assert.Empty(t, overlaps, "two nodes read one shard at once")
	assert.Zero(t, sum.byCause["unexplained"], "redeliveries with no cause: %v", sum.unexplained)
	if path := os.Getenv("STREAMGATE_SOAK_REPORT"); path != "" {
		writeReport(t, path, seed, duration, published, failed, len(topicRecs), missing, disorder, sum, len(backwards), savedLost, rounds, len(overlaps), w.rec.sortedFaults())
	}
}

// rec is one record of the topic.
type rec struct {
	partition int32
	offset    int64
}

// readTopic reads every record of topic, by payload.
func readTopic(t *testing.T, f *fleet, topic string) map[string]rec {
	t.Helper()
	ends, err := f.ends(context.Background(), topic)
	require.NoError(t, err)
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.kf.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	out := map[string]rec{}
	left := map[int32]int64{}
	for p, e := range ends {
		if e > 0 {
			left[p] = e
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "reading the topic back")
		fs.EachRecord(func(r *kgo.Record) {
			out[string(r.Value)] = rec{r.Partition, r.Offset}
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return out
}

// ackedPayload says whether a record with this payload was acked; the
// caller holds r.mu.
func (r *record) ackedPayload(payload string) bool {
	if r.byPayload == nil || len(r.byPayload) < len(r.msgs) {
		r.byPayload = map[string]*msgLog{}
		for _, m := range r.msgs {
			r.byPayload[m.payload] = m
		}
	}
	m := r.byPayload[payload]
	return m != nil && !m.acked.IsZero()
}

func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

func faultList(r *record) []string {
	var out []string
	for _, f := range r.sortedFaults() {
		out = append(out, fmt.Sprintf("%s %s +%s..+%s", f.kind, f.node, f.start.Sub(r.start).Round(100*time.Millisecond), f.end.Sub(r.start).Round(100*time.Millisecond)))
	}
	return out
}

func writeReport(t *testing.T, path string, seed uint64, d time.Duration, published, failed, records, missing, disorder int, sum summary, backwards, savedLost, rounds, overlaps int, faults []fault) {
	counts := map[string]int{}
	for _, f := range faults {
		counts[f.kind]++
	}
	var b []byte
	b = fmt.Appendf(b, "seed %d, faults for %s: %v\n", seed, d, counts)
	b = fmt.Appendf(b, "published OK %d, failed or unconfirmed %d, records %d, missing %d, out of shard order %d\n", published, failed, records, missing, disorder)
	b = fmt.Appendf(b, "%s\n", sum)
	b = fmt.Appendf(b, "backward moves %d, saved acks redelivered %d, claim rounds %d, overlaps %d\n", backwards, savedLost, rounds, overlaps)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Errorf("report: %v", err)
	}
}
