// The stored settings on the Subscribe path: an open finds its
// subscription's settings in the store (or creates them, implicitly, with
// the server's defaults), and every running subscription follows changes
// of them (watchSubscriptions). Without a store every subscription runs
// with the server's defaults, as before subscriptions were resources.

package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
)

// settingsFor resolves stored settings against the server's defaults: 0
// stands for the server's value, and no stream may hold more than the
// server's --max-unacked.
func settingsFor(cfg Config, sc broker.SubscriptionConfig) settings {
	s := defaultSettings(cfg)
	if sc.AckDeadline > 0 {
		s.ackDeadline = sc.AckDeadline
	}
	if sc.MaxUnacked > 0 {
		s.maxUnacked = min(sc.MaxUnacked, cfg.MaxUnacked)
	}
	s.maxAttempts, s.deadLetter = sc.MaxDeliveryAttempts, sc.DeadLetterTopic
	s.retryMin, s.retryMax = sc.RetryMin, sc.RetryMax
	s.version, s.created = sc.Version, sc.Created
	return s
}

// resolveOpen finds the settings of the subscription spec names. A stored
// subscription's topics must be the open's (else FAILED_PRECONDITION), and
// its start position wins over the open's (spec.Start is set to it). An
// unknown subscription is created with the open's topics and start and the
// server's defaults (stored as 0: resolved at use).
func (s *subscribeService) resolveOpen(ctx context.Context, spec *broker.SubscriptionSpec) (settings, error) {
	st, ok := s.backend.(broker.SubscriptionStore)
	if !ok {
		return defaultSettings(s.cfg), nil
	}
	stored, err := st.GetSubscription(ctx, spec.Name)
	if errors.Is(err, broker.ErrSubscriptionNotFound) {
		stored, err = s.createImplicitly(ctx, st, broker.SubscriptionConfig{Name: spec.Name, Topics: slices.Clone(spec.Topics), Start: spec.Start})
	}
	if err != nil {
		return settings{}, storeError(spec.Name, err)
	}
	if topics := sortedCopy(stored.Topics); !slices.Equal(topics, spec.Topics) {
		return settings{}, preconditionf("subscription %q reads topics %v (stored with the subscription); this subscriber asked for %v (every subscriber of a subscription names the same topics, fixed when it is created)", spec.Name, topics, spec.Topics)
	}
	spec.Start = stored.Start
	return settingsFor(s.cfg, stored), nil
}

// creations dedupes implicit creations: of many opens of one new
// subscription at once (a fleet of subscribers starting), one writes it
// and the others take its result.
type creations struct {
	mu sync.Mutex // guards m
	m  map[string]*creation
}

// creation is one implicit creation under way; cfg and err are set before
// done closes.
type creation struct {
	done chan struct{}
	cfg  broker.SubscriptionConfig
	err  error
}

// createImplicitly stores cfg, or reads what another open stored first.
func (s *subscribeService) createImplicitly(ctx context.Context, st broker.SubscriptionStore, cfg broker.SubscriptionConfig) (broker.SubscriptionConfig, error) {
	s.creating.mu.Lock()
	if s.creating.m == nil {
		s.creating.m = map[string]*creation{}
	}
	c, waiting := s.creating.m[cfg.Name]
	if !waiting {
		c = &creation{done: make(chan struct{})}
		s.creating.m[cfg.Name] = c
	}
	s.creating.mu.Unlock()
	if waiting {
		select {
		case <-c.done:
		case <-ctx.Done():
			return cfg, ctx.Err()
		}
		if c.err == nil {
			return c.cfg, nil
		}
		// The writer failed (its client may have left): try ourselves.
		return createOrRead(ctx, st, cfg)
	}
	c.cfg, c.err = createOrRead(ctx, st, cfg)
	s.creating.mu.Lock()
	delete(s.creating.m, cfg.Name)
	s.creating.mu.Unlock()
	close(c.done)
	if c.err == nil {
		s.log.Info("subscription created implicitly by an open", "subscription", cfg.Name, "topics", cfg.Topics)
	}
	return c.cfg, c.err
}

// createOrRead creates cfg, or reads the subscription when it exists
// already: created by an open here that finished since the caller looked
// (a node's own write is in its view), or meanwhile on another node.
func createOrRead(ctx context.Context, st broker.SubscriptionStore, cfg broker.SubscriptionConfig) (broker.SubscriptionConfig, error) {
	if stored, err := st.GetSubscription(ctx, cfg.Name); !errors.Is(err, broker.ErrSubscriptionNotFound) {
		return stored, err
	}
	stored, err := st.CreateSubscription(ctx, cfg)
	if errors.Is(err, broker.ErrSubscriptionExists) {
		return awaitStored(ctx, st, cfg.Name)
	}
	return stored, err
}

// awaitStored reads a subscription that a create found existing: another
// node's write reaches this node's view of the store within moments.
func awaitStored(ctx context.Context, st broker.SubscriptionStore, name string) (broker.SubscriptionConfig, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		cfg, err := st.GetSubscription(ctx, name)
		if !errors.Is(err, broker.ErrSubscriptionNotFound) {
			return cfg, err
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return cfg, fmt.Errorf("%w: subscription %q exists but is not readable here yet; retry", broker.ErrUnavailable, name)
		}
	}
}

// watchSubscriptions hands every open subscription its stored settings
// whenever the store changes, and tells those that were deleted, until
// ctx ends. It runs on a goroutine of the server's.
func (s *subscribeService) watchSubscriptions(ctx context.Context) {
	st, ok := s.backend.(broker.SubscriptionStore)
	if !ok {
		return
	}
	changes := st.SubscriptionChanges()
	for {
		select {
		case <-changes:
		case <-ctx.Done():
			return
		}
		for _, sub := range s.open() {
			stored, err := st.GetSubscription(ctx, sub.name)
			var next settings
			switch {
			case err == nil:
				next = settingsFor(s.cfg, stored)
			case errors.Is(err, broker.ErrSubscriptionNotFound):
				next = settings{deleted: true}
			default:
				s.log.Warn("reading a subscription's settings", "subscription", sub.name, "err", err)
				continue // the next change reads it again
			}
			sub.send(ctx, event{kind: evSettings, set: next})
		}
	}
}

// settleSettings gives sub the stored settings again once a stream has
// joined it. The store watcher covers every change from then on (sub is
// open); one made between the stream's read and its join (a delete, or a
// delete and a new creation) could have reached the watcher before sub was
// open, and the join's older settings would stand.
func (s *subscribeService) settleSettings(ctx context.Context, sub *subscription) {
	st, ok := s.backend.(broker.SubscriptionStore)
	if !ok {
		return
	}
	stored, err := st.GetSubscription(ctx, sub.name)
	switch {
	case err == nil:
		sub.send(ctx, event{kind: evSettings, set: settingsFor(s.cfg, stored)})
	case errors.Is(err, broker.ErrSubscriptionNotFound):
		sub.send(ctx, event{kind: evSettings, set: settings{deleted: true}})
	}
}

// applySettings takes settings in force (evSettings), on run. The settings
// of a stream's open and the watcher's may arrive out of order: older
// versions of the same stored subscription are ignored. A deleted
// subscription ends every stream with NOT_FOUND.
func (s *subscription) applySettings(next settings) {
	if next.deleted {
		for _, sess := range s.sessions {
			s.end(sess, codes.NotFound, fmt.Sprintf("subscription %q deleted", s.name))
		}
		return
	}
	if next.created.Equal(s.settings.created) && next.version < s.settings.version {
		return
	}
	if next.version != s.settings.version || !next.created.Equal(s.settings.created) {
		s.log.Info("subscription settings applied", "version", next.version, "ack_deadline", next.ackDeadline)
	}
	s.settings = next
}
