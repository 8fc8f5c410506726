package broker

import (
	"context"
	"errors"
	"time"
)

// Sentinels of the subscription store.
var (
	// ErrSubscriptionNotFound: no stored subscription has the name.
	ErrSubscriptionNotFound = errors.New("subscription not found")
	// ErrSubscriptionExists: a create found the name taken.
	ErrSubscriptionExists = errors.New("subscription already exists")
	// ErrVersionMismatch: an update or delete named a version that is no
	// longer the stored one.
	ErrVersionMismatch = errors.New("subscription version mismatch")
)

// SubscriptionConfig is a subscription's stored settings: what the Admin
// API's Subscription resource holds, in backend-neutral words. The node
// validates it; the store keeps it as given.
type SubscriptionConfig struct {
	Name   string
	Topics []string // sorted, no duplicates
	Start  StartPosition
	// AckDeadline is a delivered message's ack deadline; 0: the server's
	// default.
	AckDeadline time.Duration
	// MaxUnacked caps each stream's un-acked messages; 0: the server's.
	MaxUnacked int
	// MaxDeliveryAttempts: 0 is off; else a message nacked or timed out
	// on that delivery goes to DeadLetterTopic.
	MaxDeliveryAttempts int
	DeadLetterTopic     string
	// RetryMin and RetryMax bound the redelivery backoff; 0 and 0: none.
	RetryMin, RetryMax time.Duration
	// Version is set by the store: every change gives a greater one.
	Version int64
	// Created and Updated are set by the store.
	Created, Updated time.Time
}

// SubscriptionStore keeps subscriptions' settings durably in the backend,
// where every node reads them, so any node answers for any subscription.
// Writes are compare-and-set: of two concurrent changes of one
// subscription, exactly one succeeds, and every node's view applies the
// same changes in the same order. Reads (Get, List) answer from the
// process's view of the store, which follows every change within moments;
// a node's own successful write is in its view when the write returns.
// Until the view has once caught up with what the backend holds, reads
// wait for it (bounded by ctx) rather than answer from an empty view. A
// backend that cannot be read or written fails with ErrUnavailable (a
// write that failed so may still take effect: its outcome is unknown), a
// closed one with ErrClosed.
// It is safe for concurrent use. Backends that keep no settings do not
// implement it; the node then serves subscriptions with its defaults and
// answers the Admin API's subscription methods with UNIMPLEMENTED.
type SubscriptionStore interface {
	// CreateSubscription stores cfg under cfg.Name, failing with
	// ErrSubscriptionExists when the name is taken. It returns what was
	// stored, with Version, Created and Updated set.
	CreateSubscription(ctx context.Context, cfg SubscriptionConfig) (SubscriptionConfig, error)
	// GetSubscription returns the stored settings of name, or
	// ErrSubscriptionNotFound.
	GetSubscription(ctx context.Context, name string) (SubscriptionConfig, error)
	// ListSubscriptions returns every stored subscription, sorted by name.
	ListSubscriptions(ctx context.Context) ([]SubscriptionConfig, error)
	// UpdateSubscription replaces the stored settings of cfg.Name with
	// cfg (Created kept). With cfg.Version non-zero it fails with
	// ErrVersionMismatch unless that is the stored version.
	UpdateSubscription(ctx context.Context, cfg SubscriptionConfig) (SubscriptionConfig, error)
	// DeleteSubscription removes name's settings (not its saved
	// positions). With version non-zero it fails with ErrVersionMismatch
	// unless that is the stored version.
	DeleteSubscription(ctx context.Context, name string, version int64) error
	// SubscriptionChanges receives a value (capacity 1, coalesced) when
	// the view changed; List or Get tell what it holds now.
	SubscriptionChanges() <-chan struct{}
}
