package brokertest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker"
)

// The subscription store's conformance suite (broker.SubscriptionStore),
// run apart from Run because a backend may not keep settings:
//
//	func TestSubscriptionStoreConformance(t *testing.T) {
//		brokertest.RunSubscriptions(t, newHarness(t))
//	}
//
// Its backends are started with Harness.Backend and must implement
// broker.SubscriptionStore; every backend of one run shares one broker,
// and so one store.

var subscriptionSubtests = []subtest{
	{name: "Subscriptions/CreateGetListUpdateDelete", run: testSubsCRUD},
	{name: "Subscriptions/ErrorsWrapTheSentinels", run: testSubsErrors},
	{name: "Subscriptions/DeleteThenCreateAgain", run: testSubsRecreate},
	{name: "Subscriptions/AWriteIsSeenByAnotherInstance", run: testSubsOtherInstance},
	{name: "Subscriptions/RacingUpdatesOneWinsAndAllAgree", run: testSubsRace},
	{name: "Subscriptions/RacingCreatesOneWins", run: testSubsCreateRace},
	{name: "Subscriptions/AFreshInstanceReadsEverythingStored", run: testSubsDurable},
	{name: "Subscriptions/AClosedBackendFailsWithErrClosed", run: testSubsClosed},
}

// RunSubscriptions runs the subscription store's subtests against h, one
// after another.
func RunSubscriptions(t *testing.T, h Harness) {
	run := fmt.Sprintf("%s%d", strings.ToLower(fmt.Sprint(time.Now().UnixNano()%(36*36*36*36))), runs.Add(1))
	for _, st := range subscriptionSubtests {
		t.Run(st.name, func(t *testing.T) {
			if kb, ok := h.(KnownBugs); ok {
				if reason := kb.KnownBug(st.name); reason != "" {
					t.Skip("known bug: " + reason)
				}
			}
			st.run(t, newEnv(t, h, run, st.name))
		})
	}
}

// store starts a backend client and returns its subscription store.
func (e *env) store() broker.SubscriptionStore {
	e.t.Helper()
	s, ok := e.backend(Options{}).(broker.SubscriptionStore)
	if !ok {
		e.t.Skip("the backend implements no broker.SubscriptionStore")
	}
	return s
}

// settings is a subscription with every setting set, n making it differ.
func settings(name string, n int) broker.SubscriptionConfig {
	return broker.SubscriptionConfig{
		Name:                name,
		Topics:              []string{fmt.Sprintf("t%d.a", n), fmt.Sprintf("t%d.b", n)},
		Start:               broker.StartEarliest,
		AckDeadline:         time.Duration(n+1) * time.Second,
		MaxUnacked:          100 + n,
		MaxDeliveryAttempts: 5,
		DeadLetterTopic:     fmt.Sprintf("dlq%d", n),
		RetryMin:            time.Second,
		RetryMax:            time.Minute,
	}
}

// sameSettings requires got to hold want's settings and name.
func sameSettings(t *testing.T, want, got broker.SubscriptionConfig) {
	t.Helper()
	got.Version, got.Created, got.Updated = 0, time.Time{}, time.Time{}
	want.Version, want.Created, want.Updated = 0, time.Time{}, time.Time{}
	require.Equal(t, want, got)
}

// mine filters a list down to the subscriptions this subtest made.
func (e *env) mine(list []broker.SubscriptionConfig) []broker.SubscriptionConfig {
	var out []broker.SubscriptionConfig
	for _, c := range list {
		if strings.HasPrefix(c.Name, e.prefix+".") {
			out = append(out, c)
		}
	}
	return out
}

func testSubsCRUD(t *testing.T, e *env) {
	s := e.store()
	ctx := ctxFor(t, waitFor)
	a, b := e.subscription(), e.subscription()
	before := time.Now().Add(-time.Minute) // clocks: only roughly now

	ca, err := s.CreateSubscription(ctx, settings(a, 1))
	require.NoError(t, err)
	sameSettings(t, settings(a, 1), ca)
	require.NotZero(t, ca.Version)
	require.True(t, ca.Created.After(before), "Created is set: %v", ca.Created)
	require.Equal(t, ca.Created, ca.Updated)
	cb, err := s.CreateSubscription(ctx, settings(b, 2))
	require.NoError(t, err)
	require.NotEqual(t, ca.Version, cb.Version)

	got, err := s.GetSubscription(ctx, a)
	require.NoError(t, err)
	require.Equal(t, ca, got)
	list, err := s.ListSubscriptions(ctx)
	require.NoError(t, err)
	require.Equal(t, []broker.SubscriptionConfig{ca, cb}, e.mine(list), "sorted by name")

	up := settings(a, 3)
	up.Version = ca.Version
	ua, err := s.UpdateSubscription(ctx, up)
	require.NoError(t, err)
	sameSettings(t, settings(a, 3), ua)
	require.Greater(t, ua.Version, ca.Version)
	require.Equal(t, ca.Created, ua.Created, "Created is kept")
	require.False(t, ua.Updated.Before(ca.Updated))
	any := settings(a, 4) // Version 0: whatever is stored
	ua2, err := s.UpdateSubscription(ctx, any)
	require.NoError(t, err)
	require.Greater(t, ua2.Version, ua.Version)
	got, err = s.GetSubscription(ctx, a)
	require.NoError(t, err)
	require.Equal(t, ua2, got)

	require.NoError(t, s.DeleteSubscription(ctx, a, ua2.Version))
	_, err = s.GetSubscription(ctx, a)
	require.ErrorIs(t, err, broker.ErrSubscriptionNotFound)
	require.NoError(t, s.DeleteSubscription(ctx, b, 0))
	list, err = s.ListSubscriptions(ctx)
	require.NoError(t, err)
	require.Empty(t, e.mine(list))
}

func testSubsErrors(t *testing.T, e *env) {
	s := e.store()
	ctx := ctxFor(t, waitFor)
	a, none := e.subscription(), e.subscription()
	ca, err := s.CreateSubscription(ctx, settings(a, 1))
	require.NoError(t, err)

	_, err = s.CreateSubscription(ctx, settings(a, 2))
	require.ErrorIs(t, err, broker.ErrSubscriptionExists)
	require.Contains(t, err.Error(), a, "the message names the subscription")
	_, err = s.GetSubscription(ctx, none)
	require.ErrorIs(t, err, broker.ErrSubscriptionNotFound)
	_, err = s.UpdateSubscription(ctx, settings(none, 1))
	require.ErrorIs(t, err, broker.ErrSubscriptionNotFound)
	require.ErrorIs(t, s.DeleteSubscription(ctx, none, 0), broker.ErrSubscriptionNotFound)
	require.ErrorIs(t, s.DeleteSubscription(ctx, none, 7), broker.ErrSubscriptionNotFound)

	up := settings(a, 2)
	up.Version = ca.Version
	ua, err := s.UpdateSubscription(ctx, up)
	require.NoError(t, err)
	// ca.Version is stale now; a version never stored is no better.
	for _, v := range []int64{ca.Version, ua.Version + 1000} {
		stale := settings(a, 3)
		stale.Version = v
		_, err = s.UpdateSubscription(ctx, stale)
		require.ErrorIs(t, err, broker.ErrVersionMismatch, "update at version %d", v)
		require.ErrorIs(t, s.DeleteSubscription(ctx, a, v), broker.ErrVersionMismatch, "delete at version %d", v)
	}
	got, err := s.GetSubscription(ctx, a)
	require.NoError(t, err)
	require.Equal(t, ua, got, "failed writes change nothing")
}

func testSubsRecreate(t *testing.T, e *env) {
	s := e.store()
	ctx := ctxFor(t, waitFor)
	a := e.subscription()
	c1, err := s.CreateSubscription(ctx, settings(a, 1))
	require.NoError(t, err)
	require.NoError(t, s.DeleteSubscription(ctx, a, c1.Version))
	require.ErrorIs(t, s.DeleteSubscription(ctx, a, c1.Version), broker.ErrSubscriptionNotFound)
	c2, err := s.CreateSubscription(ctx, settings(a, 2))
	require.NoError(t, err)
	sameSettings(t, settings(a, 2), c2)
	require.Greater(t, c2.Version, c1.Version, "versions never repeat")
	stale := settings(a, 3)
	stale.Version = c1.Version
	_, err = s.UpdateSubscription(ctx, stale)
	require.ErrorIs(t, err, broker.ErrVersionMismatch, "a version of the deleted subscription does not match the new one")
}

func testSubsOtherInstance(t *testing.T, e *env) {
	s1, s2 := e.store(), e.store()
	ctx := ctxFor(t, waitFor)
	a := e.subscription()
	_, err := s2.ListSubscriptions(ctx) // s2 is reading the store
	require.NoError(t, err)
	changes := s2.SubscriptionChanges()
	drain(changes)

	c, err := s1.CreateSubscription(ctx, settings(a, 1))
	require.NoError(t, err)
	waitChange(t, changes)
	eventually(t, "the other instance to show the create", func() bool {
		got, err := s2.GetSubscription(ctx, a)
		return err == nil && assert.ObjectsAreEqual(c, got)
	})

	u := settings(a, 2)
	u.Version = c.Version
	u2, err := s1.UpdateSubscription(ctx, u)
	require.NoError(t, err)
	waitChange(t, changes)
	eventually(t, "the other instance to show the update", func() bool {
		got, err := s2.GetSubscription(ctx, a)
		return err == nil && got.Version == u2.Version
	})
	got, err := s2.GetSubscription(ctx, a)
	require.NoError(t, err)
	require.Equal(t, u2, got)

	// And back: s2 writes with the version it read, s1 sees it.
	require.NoError(t, s2.DeleteSubscription(ctx, a, got.Version))
	eventually(t, "the first instance to show the delete", func() bool {
		_, err := s1.GetSubscription(ctx, a)
		return errors.Is(err, broker.ErrSubscriptionNotFound)
	})
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func waitChange(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitFor):
		t.Fatal("SubscriptionChanges did not fire")
	}
}

func testSubsRace(t *testing.T, e *env) {
	s1, s2 := e.store(), e.store()
	ctx := ctxFor(t, waitFor)
	a := e.subscription()
	c, err := s1.CreateSubscription(ctx, settings(a, 0))
	require.NoError(t, err)
	eventually(t, "the second instance to show the subscription", func() bool {
		_, err := s2.GetSubscription(ctx, a)
		return err == nil
	})
	version := c.Version
	for round := range 5 {
		res := make([]broker.SubscriptionConfig, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, s := range []broker.SubscriptionStore{s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				up := settings(a, 10*round+i+1)
				up.Version = version
				res[i], errs[i] = s.UpdateSubscription(ctx, up)
			}()
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			if err == nil {
				require.Equal(t, -1, won, "round %d: both updates won", round)
				won = i
				continue
			}
			require.ErrorIs(t, err, broker.ErrVersionMismatch, "round %d", round)
		}
		require.NotEqual(t, -1, won, "round %d: neither update won: %v", round, errs)
		winner := res[won]
		require.Greater(t, winner.Version, version)
		for i, s := range []broker.SubscriptionStore{s1, s2} {
			eventually(t, fmt.Sprintf("instance %d to agree on round %d's winner", i+1, round), func() bool {
				got, err := s.GetSubscription(ctx, a)
				return err == nil && got.Version == winner.Version
			})
			got, err := s.GetSubscription(ctx, a)
			require.NoError(t, err)
			assert.Equal(t, winner, got, "instance %d after round %d", i+1, round)
		}
		version = winner.Version
	}
}

func testSubsCreateRace(t *testing.T, e *env) {
	s1, s2 := e.store(), e.store()
	ctx := ctxFor(t, waitFor)
	for round := range 3 {
		a := e.subscription()
		res := make([]broker.SubscriptionConfig, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, s := range []broker.SubscriptionStore{s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i], errs[i] = s.CreateSubscription(ctx, settings(a, i))
			}()
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			if err == nil {
				require.Equal(t, -1, won, "round %d: both creates won", round)
				won = i
				continue
			}
			require.ErrorIs(t, err, broker.ErrSubscriptionExists, "round %d", round)
		}
		require.NotEqual(t, -1, won, "round %d: neither create won: %v", round, errs)
		for i, s := range []broker.SubscriptionStore{s1, s2} {
			eventually(t, fmt.Sprintf("instance %d to show round %d's winner", i+1, round), func() bool {
				got, err := s.GetSubscription(ctx, a)
				return err == nil && got.Version == res[won].Version
			})
		}
	}
}

func testSubsDurable(t *testing.T, e *env) {
	s := e.store()
	ctx := ctxFor(t, waitFor)
	var want []broker.SubscriptionConfig
	for i := range 4 {
		c, err := s.CreateSubscription(ctx, settings(e.subscription(), i))
		require.NoError(t, err)
		want = append(want, c)
	}
	up := settings(want[1].Name, 9)
	up.Version = want[1].Version
	u, err := s.UpdateSubscription(ctx, up)
	require.NoError(t, err)
	want[1] = u
	require.NoError(t, s.DeleteSubscription(ctx, want[2].Name, want[2].Version))
	want = append(want[:2], want[3])

	// A fresh instance answers at once from what is stored: no polling.
	fresh := e.store()
	list, err := fresh.ListSubscriptions(ctx)
	require.NoError(t, err)
	require.Equal(t, want, e.mine(list))
	got, err := fresh.GetSubscription(ctx, want[0].Name)
	require.NoError(t, err)
	require.Equal(t, want[0], got)
}

func testSubsClosed(t *testing.T, e *env) {
	ctx := ctxFor(t, waitFor)
	used, unused := e.backend(Options{}), e.backend(Options{})
	s, ok := used.(broker.SubscriptionStore)
	if !ok {
		t.Skip("the backend implements no broker.SubscriptionStore")
	}
	a := e.subscription()
	_, err := s.CreateSubscription(ctx, settings(a, 1))
	require.NoError(t, err)
	e.h.Crash(t, used)
	e.h.Crash(t, unused) // its store was never started
	for i, s := range []broker.SubscriptionStore{s, unused.(broker.SubscriptionStore)} {
		_, err = s.CreateSubscription(ctx, settings(e.subscription(), 2))
		require.ErrorIs(t, err, broker.ErrClosed, "backend %d", i)
		require.ErrorIs(t, s.DeleteSubscription(ctx, a, 0), broker.ErrClosed, "backend %d", i)
	}
}
