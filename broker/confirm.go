package broker

import (
	"context"
	"errors"
)

// Ack confirmations (a subscriber's confirm_acks, Pub/Sub's exactly-once
// delivery): the node tells a subscriber which of its acks are durably
// saved, which needs the backend to say when the saved position of a
// shard covers an ack.

// ErrAckVoid: an ack does not count (any more): its message is not held
// by the consumer (unknown, acked already), or its shard was lost to
// another reader or reset, so the message is or will be delivered again.
var ErrAckVoid = errors.New("the ack is void: the message is not held, or its shard moved or was reset")

// AckSaving is implemented by a Subscriber whose consumers all implement
// AckSaver. The node checks it when a subscriber opens with confirm_acks.
type AckSaving interface {
	// SavesAcks reports whether consumers confirm saved acks; a wrapper
	// may answer false for a backend that does not.
	SavesAcks() bool
}

// AckReceipt names one ack that a consumer took (AckSaver.AckForSave), for
// AckSaver.SaveAcks. Only the consumer that made it reads Pos.
type AckReceipt struct {
	ID    string
	Shard ShardID
	// Pos is the message's position in its shard, as the backend counts
	// positions; opaque to the node.
	Pos int64
}

// AckSaver is implemented by consumers that can say when acks are saved.
//
// An ack is saved when the position saved for its shard, with the fence
// of the consumer that took the ack, covers it: the saved position is
// past the message, or the acks saved with it (above it) include the
// message. From then on no reader delivers the message again, whatever
// happens to this node. Saves are the consumer's regular fenced saves:
// SaveAcks only asks for one now and watches them, so calls that run at
// once coalesce into one save of each shard (one save in flight per shard,
// and one more asked for, which covers every ack taken before it starts).
//
// AckForSave may be called from any goroutine, like Ack; SaveAcks from
// any goroutine, several at once, and it blocks.
type AckSaver interface {
	// AckForSave acks ids as Ack does and returns a receipt for each id
	// whose ack took: the message was delivered, not acked before, and its
	// shard is held. Ids without a receipt are void (ErrAckVoid).
	AckForSave(ids ...string) []AckReceipt
	// SaveAcks saves the position of the receipts' shards now, with their
	// fences, and returns one error per receipt, in order: nil once the
	// saved position covers the ack; an error wrapping ErrAckVoid when the
	// shard was lost to another reader (a fenced save, ShardLost, Abandon)
	// or reset before its save covered the ack; an error wrapping
	// ErrUnavailable when a save that began after the ack failed, the
	// node's standing is in doubt, the consumer closed, or ctx ended
	// first. An ack reported unavailable may still be saved later.
	SaveAcks(ctx context.Context, receipts []AckReceipt) []error
}
