package registry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

func newTestStore(l *memLog, compacting bool) *Store {
	v := NewView(compacting, nil)
	l.attach(v)
	return NewStore(l, v, Options{WriteTimeout: 5 * time.Second})
}

func sub(name string, topics ...string) broker.SubscriptionConfig {
	return broker.SubscriptionConfig{Name: name, Topics: topics}
}

// TestRegistryStoreErrors: the store's sentinels, wrapped, for each
// failing call; versions grow with every change.
func TestRegistryStoreErrors(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(newMemLog(), true)
	a, err := s.CreateSubscription(ctx, sub("a", "t1"))
	require.NoError(t, err)
	_, err = s.CreateSubscription(ctx, sub("a", "t2"))
	require.ErrorIs(t, err, broker.ErrSubscriptionExists)
	_, err = s.GetSubscription(ctx, "nope")
	require.ErrorIs(t, err, broker.ErrSubscriptionNotFound)
	_, err = s.UpdateSubscription(ctx, sub("nope", "t"))
	require.ErrorIs(t, err, broker.ErrSubscriptionNotFound)
	require.ErrorIs(t, s.DeleteSubscription(ctx, "nope", 0), broker.ErrSubscriptionNotFound)

	stale := sub("a", "t3")
	stale.Version = a.Version + 100
	_, err = s.UpdateSubscription(ctx, stale)
	require.ErrorIs(t, err, broker.ErrVersionMismatch)
	b := sub("a", "t3")
	b.Version = a.Version
	b2, err := s.UpdateSubscription(ctx, b)
	require.NoError(t, err)
	assert.Greater(t, b2.Version, a.Version)
	assert.Equal(t, a.Created, b2.Created)
	_, err = s.UpdateSubscription(ctx, b) // a.Version again
	require.ErrorIs(t, err, broker.ErrVersionMismatch)
	require.ErrorIs(t, s.DeleteSubscription(ctx, "a", a.Version), broker.ErrVersionMismatch)
	require.NoError(t, s.DeleteSubscription(ctx, "a", b2.Version))
	_, err = s.GetSubscription(ctx, "a")
	require.ErrorIs(t, err, broker.ErrSubscriptionNotFound)
	c, err := s.CreateSubscription(ctx, sub("a", "t4"))
	require.NoError(t, err)
	assert.Greater(t, c.Version, b2.Version)
}

// TestRegistryRaceOneWins: two stores update one subscription expecting
// the same version while neither has seen the other's record: exactly one
// wins, both views agree, and the last record of the key states it.
func TestRegistryRaceOneWins(t *testing.T) {
	for _, anyVersion := range []bool{false, true} {
		t.Run(fmt.Sprintf("any=%v", anyVersion), func(t *testing.T) {
			ctx := context.Background()
			l := newMemLog()
			s1, s2 := newTestStore(l, true), newTestStore(l, true)
			base, err := s1.CreateSubscription(ctx, sub("a", "t0"))
			require.NoError(t, err)
			_, err = s2.GetSubscription(ctx, "a") // s2 has read the log
			require.NoError(t, err)
			l.hold()
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for i, s := range []*Store{s1, s2} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cfg := sub("a", fmt.Sprintf("t%d", i+1))
					if !anyVersion {
						cfg.Version = base.Version
					}
					_, errs[i] = s.UpdateSubscription(ctx, cfg)
				}()
			}
			deadline := time.Now().Add(5 * time.Second)
			for l.unapplied() < 2 {
				require.True(t, time.Now().Before(deadline), "both writes appended")
				select {
				case <-l.pending:
				case <-time.After(100 * time.Millisecond): // re-check the deadline
				}
			}
			l.release()
			wg.Wait()
			if anyVersion {
				require.NoError(t, errs[0])
				require.NoError(t, errs[1], "an update of any version tries again after losing")
			} else {
				assert.Equal(t, 1, countNil(errs), "exactly one wins: %v", errs)
				for _, err := range errs {
					if err != nil {
						require.ErrorIs(t, err, broker.ErrVersionMismatch)
					}
				}
			}
			g1, err := s1.GetSubscription(ctx, "a")
			require.NoError(t, err)
			g2, err := s2.GetSubscription(ctx, "a")
			require.NoError(t, err)
			assert.Equal(t, g1, g2)
			assertCompactionAgrees(t, l, g1)
		})
	}
}

func countNil(errs []error) int {
	n := 0
	for _, err := range errs {
		if err == nil {
			n++
		}
	}
	return n
}

// assertCompactionAgrees: a reader that sees only the last record of
// each key (fully compacted, with and without tombstones, and compacted up
// to every position) gets the state of a reader of the whole log.
func assertCompactionAgrees(t *testing.T, l *memLog, _ ...broker.SubscriptionConfig) {
	t.Helper()
	recs := l.snapshot()
	full := replay(compacted(recs, 0, false), len(recs))
	want := full.list()
	for upTo := 0; upTo <= len(recs); upTo++ {
		for _, drop := range []bool{false, true} {
			got := replay(compacted(recs, upTo, drop), len(recs)).list()
			if !assert.Equal(t, want, got, "compacted below %d of %d (tombstones dropped: %v)", upTo, len(recs), drop) {
				for pos, r := range recs {
					t.Logf("%d %s %s", pos, r.key, r.value)
				}
				t.FailNow()
			}
		}
	}
}

// TestRegistryCompactedReaderAgreesUnderRandomRaces: stores that create,
// update and delete a few names at once, racing, leave a log whose every
// compaction reads as the whole log does.
func TestRegistryCompactedReaderAgreesUnderRandomRaces(t *testing.T) {
	for _, lagging := range []bool{false, true} {
		t.Run(fmt.Sprintf("lagging=%v", lagging), func(t *testing.T) { testRandomRaces(t, lagging) })
	}
}

func testRandomRaces(t *testing.T, lagging bool) {
	ctx := context.Background()
	l := newMemLog()
	var stores []*Store
	stop := make(chan struct{})
	var dones []<-chan struct{}
	for i := range 3 {
		if !lagging {
			stores = append(stores, newTestStore(l, true))
			continue
		}
		v := NewView(true, nil)
		dones = append(dones, l.attachLagging(v, uint64(i), stop))
		stores = append(stores, NewStore(l, v, Options{WriteTimeout: 5 * time.Second}))
	}
	defer func() {
		close(stop)
		for _, d := range dones {
			<-d
		}
	}()
	names := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for n := range 60 {
				name := names[r.IntN(len(names))]
				var err error
				switch r.IntN(4) {
				case 0:
					_, err = s.CreateSubscription(ctx, sub(name, fmt.Sprintf("c%d-%d", i, n)))
				case 1, 2:
					cfg := sub(name, fmt.Sprintf("u%d-%d", i, n))
					if g, gerr := s.GetSubscription(ctx, name); gerr == nil && r.IntN(2) == 0 {
						cfg.Version = g.Version
					}
					_, err = s.UpdateSubscription(ctx, cfg)
				case 3:
					err = s.DeleteSubscription(ctx, name, 0)
				}
				if err != nil && !errors.Is(err, broker.ErrSubscriptionExists) &&
					!errors.Is(err, broker.ErrSubscriptionNotFound) && !errors.Is(err, broker.ErrVersionMismatch) {
					t.Errorf("store %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	for _, s := range stores {
		require.NoError(t, s.catchUp(ctx))
	}
	want, err := stores[0].ListSubscriptions(ctx)
	require.NoError(t, err)
	for _, s := range stores[1:] {
		got, err := s.ListSubscriptions(ctx)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	assertCompactionAgrees(t, l)
}

// TestRegistryReadsWaitForTheLog: a store whose view has not read the log
// yet does not answer from its empty view.
func TestRegistryReadsWaitForTheLog(t *testing.T) {
	ctx := context.Background()
	l := newMemLog()
	s1 := newTestStore(l, true)
	_, err := s1.CreateSubscription(ctx, sub("a", "t"))
	require.NoError(t, err)

	v := NewView(true, nil)
	s2 := NewStore(l, v, Options{WriteTimeout: 5 * time.Second})
	got := make(chan []broker.SubscriptionConfig, 1)
	go func() {
		list, err := s2.ListSubscriptions(ctx)
		assert.NoError(t, err)
		got <- list
	}()
	select {
	case <-got:
		t.Fatal("answered before the view read the log")
	case <-time.After(100 * time.Millisecond): // the absence of an answer
	}
	l.attach(v)
	select {
	case list := <-got:
		require.Len(t, list, 1)
		assert.Equal(t, "a", list[0].Name)
	case <-time.After(5 * time.Second):
		t.Fatal("no answer after the view read the log")
	}
}

// TestRegistryRepairsAMisstatedName: a writer died between its rejected
// record and its restate; the next store to start restates the name, so
// that compaction keeps a record that tells the truth.
func TestRegistryRepairsAMisstatedName(t *testing.T) {
	ctx := context.Background()
	l := newMemLog()
	s1 := newTestStore(l, true)
	c, err := s1.CreateSubscription(ctx, sub("a", "t1"))
	require.NoError(t, err)
	up := sub("a", "t2")
	up.Version = c.Version
	_, err = s1.UpdateSubscription(ctx, up)
	require.NoError(t, err)
	// The dead writer's update, expecting the version it had read.
	_, err = l.Append(ctx, "a", Encode(&Record{Op: OpUpdate, Name: "a", Expect: c.Version, Settings: settings("dead")}))
	require.NoError(t, err)
	recs := l.snapshot()
	bad := replay(compacted(recs, len(recs), false), len(recs)).list()
	require.Equal(t, []string{"dead"}, bad[0].Topics, "the case repaired: compaction would keep the rejected record")

	s2 := newTestStore(l, true)
	got, err := s2.GetSubscription(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, []string{"t2"}, got.Topics)
	assertCompactionAgrees(t, l)
	require.Greater(t, len(l.snapshot()), len(recs), "the new store restated the name")
}
