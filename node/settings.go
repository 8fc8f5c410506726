package node

import "time"

// settings are the stored settings of a subscription (Admin's
// Subscription resource) that the dispatcher applies. A subscription
// starts with the server's defaults and takes the stored ones when a
// stream opens or the stored ones change (evSettings). Owned by run.
type settings struct {
	// ackDeadline is a delivered message's ack deadline, unless extended.
	ackDeadline time.Duration
	// maxUnacked caps each stream's un-acked messages (a stream may ask
	// for less).
	maxUnacked int
	// maxAttempts: a message nacked or timed out on this delivery is
	// dead-lettered to deadLetter; 0 is off.
	maxAttempts int
	deadLetter  string
	// retryMin and retryMax bound the redelivery backoff of a message
	// nacked without a delay or timed out, doubling from retryMin with
	// each attempt; 0 and 0: at once.
	retryMin, retryMax time.Duration

	// version and created identify the stored settings these came from
	// (0 and zero: the server's defaults, no store); a subscription keeps
	// the newest it was given (applySettings).
	version int64
	created time.Time
	// deleted: the stored subscription is gone; its streams end.
	deleted bool
}

// defaultSettings are the server's defaults, from its flags.
func defaultSettings(cfg Config) settings {
	return settings{ackDeadline: cfg.AckTimeout, maxUnacked: cfg.MaxUnacked}
}
