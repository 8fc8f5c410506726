package cursor

// Saved is what a saved position carries beside the position itself: how
// the subscription started, the acked positions above it, ascending, and
// the delivery counts of un-acked messages at or above it, ascending.
// Backends store it in their own format (Kafka: commit metadata).
type Saved struct {
	Origin   Origin
	Acked    []int64
	Attempts []Attempts
}

// Origin is how a subscription started: when it was created and whether it
// reads from the earliest message. Every save carries it, so that a shard
// without a position (added to the topic later, or left unsaved by a
// Prepare that failed half-way) starts where the subscription did: at the
// shard's first message for earliest, else at the first message published
// after the creation.
type Origin struct {
	CreatedMs int64 // 0: unknown (a position saved before origins were kept)
	Earliest  bool
}

// Attempts is the delivery count of the message at Pos.
type Attempts struct {
	Pos int64
	N   uint16
}
