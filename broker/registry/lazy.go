package registry

import (
	"context"

	"github.com/streamgate/streamgate/broker"
)

// Lazy implements broker.SubscriptionStore over a Store that its backend
// opens on first use: every method asks Open for the store (starting its
// reader the first time) and hands the call on. A backend embeds it and
// sets Open; Open fails (with broker.ErrClosed) once the backend closed.
type Lazy struct {
	Open func() (*Store, error)
}

var _ broker.SubscriptionStore = Lazy{}

// CreateSubscription implements broker.SubscriptionStore.
func (l Lazy) CreateSubscription(ctx context.Context, cfg broker.SubscriptionConfig) (broker.SubscriptionConfig, error) {
	s, err := l.Open()
	if err != nil {
		return broker.SubscriptionConfig{}, err
	}
	return s.CreateSubscription(ctx, cfg)
}

// GetSubscription implements broker.SubscriptionStore.
func (l Lazy) GetSubscription(ctx context.Context, name string) (broker.SubscriptionConfig, error) {
	s, err := l.Open()
	if err != nil {
		return broker.SubscriptionConfig{}, err
	}
	return s.GetSubscription(ctx, name)
}

// ListSubscriptions implements broker.SubscriptionStore.
func (l Lazy) ListSubscriptions(ctx context.Context) ([]broker.SubscriptionConfig, error) {
	s, err := l.Open()
	if err != nil {
		return nil, err
	}
	return s.ListSubscriptions(ctx)
}

// UpdateSubscription implements broker.SubscriptionStore.
func (l Lazy) UpdateSubscription(ctx context.Context, cfg broker.SubscriptionConfig) (broker.SubscriptionConfig, error) {
	s, err := l.Open()
	if err != nil {
		return broker.SubscriptionConfig{}, err
	}
	return s.UpdateSubscription(ctx, cfg)
}

// DeleteSubscription implements broker.SubscriptionStore.
func (l Lazy) DeleteSubscription(ctx context.Context, name string, version int64) error {
	s, err := l.Open()
	if err != nil {
		return err
	}
	return s.DeleteSubscription(ctx, name, version)
}

// SubscriptionChanges implements broker.SubscriptionStore. It opens the
// store, so a node that watches it follows every change.
func (l Lazy) SubscriptionChanges() <-chan struct{} {
	s, err := l.Open()
	if err != nil {
		return nil // closed: nothing will change
	}
	return s.SubscriptionChanges()
}
