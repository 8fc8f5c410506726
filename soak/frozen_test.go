package soak

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
)

// Issue 7.3: a node frozen (SIGSTOP) for longer than failure detection,
// while the others take its shards over, must not deliver those shards
// when it runs again, nor move any saved position backwards; and nothing
// acked and saved meanwhile is delivered again.
func TestProcess_AFrozenNodeNeitherDeliversNorMovesSavedPositionsBackwardsAfterItResumes(t *testing.T) {
	const topic, sub, partitions = "t", "frozen", 6
	f := newFleet(t, partitions, []string{topic}, "--commit-interval", "300ms", "--commit-every", "50", "--log-level", "info")
	f.add(3)
	rec := newRecord()
	group := kafka.DefaultConfig().GroupPrefix + sub

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bg sync.WaitGroup
	pl := &poller{samples: map[int32][]positionSample{}}
	bg.Add(1)
	go func() { defer bg.Done(); pl.run(ctx, f, group, 20*time.Millisecond) }()

	// One subscriber on each node, acking everything it gets.
	sessions := map[string]int{}
	for _, p := range f.nodes {
		c, err := client.Dial(p.grpc)
		require.NoError(t, err)
		defer c.Close()
		s, err := c.Subscribe(ctx, client.SubscribeOptions{Subscription: sub, Topics: []string{topic}})
		require.NoError(t, err)
		id := rec.openSession(p.name)
		sessions[p.name] = id
		bg.Add(1)
		go func() {
			defer bg.Done()
			for {
				msgs, _, err := s.Recv()
				if err != nil {
					return
				}
				ids := make([]string, len(msgs))
				for i, m := range msgs {
					rec.delivered(id, m.ID, m.Shard, string(m.Payload), m.DeliveryAttempt)
					ids[i] = m.ID
				}
				rec.acked(ids)
				_ = s.Ack(ids...)
			}
		}()
	}
	// Publishing all along, straight to the broker.
	prod, err := kgo.NewClient(kgo.SeedBrokers(f.kf.ListenAddrs()...))
	require.NoError(t, err)
	defer prod.Close()
	pubCtx, stopPub := context.WithCancel(ctx)
	bg.Add(1)
	go func() {
		defer bg.Done()
		pace := time.NewTicker(time.Millisecond) // a steady trickle, not a flood: the load is not the point
		defer pace.Stop()
		for i := 0; pubCtx.Err() == nil; i++ {
			_ = prod.ProduceSync(pubCtx, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%50), Value: fmt.Appendf(nil, "m%d", i)})
			select {
			case <-pace.C:
			case <-pubCtx.Done():
			}
		}
	}()

	frozen := f.nodes[2]
	require.True(t, waitFor(20*time.Second, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, m := range rec.msgs {
			if m.deliveries[0].sess == sessions[frozen.name] {
				return true
			}
		}
		return false
	}), "the node to freeze delivers")
	freezeAt := time.Now()
	f.freeze(frozen)
	time.Sleep(4 * time.Second) // the fault itself: frozen for longer than failure detection
	f.thaw(frozen)
	thawAt := time.Now()
	rec.addFault(fault{kind: "freeze", node: frozen.name, start: freezeAt, end: thawAt})
	// It runs on, and takes shards back once the cluster agrees: wait
	// until it delivers something new again.
	require.True(t, waitFor(30*time.Second, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, m := range rec.msgs {
			if d := m.deliveries[0]; d.sess == sessions[frozen.name] && d.at.After(thawAt.Add(time.Second)) {
				return true
			}
		}
		return false
	}), "the frozen node serves again")
	stopPub()
	require.True(t, waitFor(30*time.Second, func() bool {
		recs := readTopic(t, f, topic)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for payload := range recs {
			if !rec.ackedPayload(payload) {
				return false
			}
		}
		return true
	}), "every record is acked in the end")
	cancel()
	bg.Wait()
	recs := readTopic(t, f, topic)

	// After it runs again (allowing for what it had written to its sockets
	// before it stopped), the frozen node delivers nothing that another
	// node delivered after the freeze began.
	overlap := 0
	rec.mu.Lock()
	for id, m := range rec.msgs {
		var late, elsewhere bool
		for _, d := range m.deliveries {
			switch {
			case d.sess == sessions[frozen.name] && d.at.After(thawAt.Add(300*time.Millisecond)):
				late = true
			case d.sess != sessions[frozen.name] && d.at.After(freezeAt):
				elsewhere = true
			}
		}
		if late && elsewhere {
			if overlap++; overlap < 5 {
				t.Logf("%s delivered by %s after it ran again and by another node since the freeze", id, frozen.name)
			}
		}
	}
	rec.mu.Unlock()
	assert.Zero(t, overlap, "messages the frozen node delivered after it ran again, that another node delivered meanwhile")

	pl.mu.Lock()
	backwards := slices.Clone(pl.backwards)
	pl.mu.Unlock()
	assert.Empty(t, backwards, "saved positions moved backwards")
	savedLost := 0
	rec.mu.Lock()
	for id, m := range rec.msgs {
		r := recs[m.payload]
		at := pl.savedAt(r.partition, r.offset)
		if at.IsZero() {
			continue
		}
		for _, d := range m.deliveries {
			if d.at.After(at.Add(100*time.Millisecond)) && !(d.sess == sessions[frozen.name] && d.at.Before(thawAt.Add(300*time.Millisecond))) {
				if savedLost++; savedLost < 5 {
					t.Logf("%s saved by +%s, delivered again at +%s", id, at.Sub(rec.start), d.at.Sub(rec.start))
				}
				break
			}
		}
	}
	rec.mu.Unlock()
	assert.Zero(t, savedLost, "messages delivered again after their ack was saved")
	t.Logf("%s", rec.summarize())
}
