package broker

import (
	"context"
	"time"
)

// SeekKind says where a Seek moves a subscription's positions.
type SeekKind int

const (
	// SeekEarliest: each shard's first message the backend still holds.
	SeekEarliest SeekKind = iota + 1
	// SeekLatest: after each shard's last message; only messages
	// published after the seek are delivered.
	SeekLatest
	// SeekTime: each shard's first message published at or after
	// SeekTo.Time, or the shard's end when there is none.
	SeekTime
)

// SeekTo is the target of a Seek.
type SeekTo struct {
	Kind SeekKind
	Time time.Time // SeekTime only
}

// Seeker is implemented by backends that can move a subscription's saved
// positions; the node type-asserts its backend.
//
// Seek writes the saved position of each of shards to the target, as a
// new reader of the shard would: it takes the shard's reader fence first,
// so that every later save of a reader that still holds the shard fails
// (that reader reports ShardLost and forgets it), and a reader can never
// move the position back over the seek. The saved position keeps the
// subscription's origin (how it started) and drops the acks above the
// position and the delivery counts: every message from the target on is
// new to the subscription. A shard with no saved position gets one.
//
// It may be called from any goroutine, at the same time as the
// subscription's consumers (which it fences) and as Prepare. It retries
// each shard until it is written or ctx ends, and is idempotent: a seek
// repeated after a failure writes the same positions (for SeekEarliest
// and SeekLatest, those of the moment of the repeat).
type Seeker interface {
	Seek(ctx context.Context, subscription string, shards []ShardID, to SeekTo) error
}
