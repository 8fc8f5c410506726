// Package cursor is the backend-neutral part of a subscription's position
// on one shard: which fetched messages are acked, how often each was
// delivered, how far a save may go, and how much a shard holds unsaved.
// A position is an int64 that grows by at least one per message of a
// shard (Kafka's offset, a RabbitMQ stream's offset); backends read and
// write positions, this package decides what they mean for acks and saves.
package cursor

import (
	"cmp"
	"slices"
)

// Tracker follows one shard of one subscription: the messages fetched,
// which of them are acked, how often each was delivered, and how far a
// save may go.
//
// Invariant: a save never passes an un-acked message. The save point is
// the position of the first fetched message not yet acked, or the position
// after the last fetched message when all are acked. Acks above the save
// point are kept and travel with the saved position, so that whoever reads
// the shard next (this node after a restart, or another node) skips them;
// so do the delivery counts of the un-acked messages, so that a message's
// delivery_attempt counts deliveries cluster-wide.
//
// A Tracker is not safe for concurrent use; its owner locks. Each backend
// keeps one per shard it reads (broker/kafka, broker/rabbitmq).
type Tracker struct {
	savedPos int64   // the last saved position
	next     int64   // the position after the last fetched message
	entries  []entry // fetched messages from the first un-acked one, by position
	// preacked are positions acked before this tracker started (from the
	// saved position) that have not been fetched yet, ascending.
	preacked []int64
	// preattempts are delivery counts saved before this tracker started,
	// for messages not fetched yet, by position.
	preattempts []Attempts
	acks        int    // acks since the last save
	counted     int    // deliveries counted since the last save: their counts are saved too
	origin      Origin // how the subscription started, saved with every save
}

type entry struct {
	pos      int64
	acked    bool
	attempts uint16 // deliveries so far; saturates
}

// NewTracker starts at a saved position with the acks and delivery counts
// saved with it.
func NewTracker(savedPos int64, saved Saved) *Tracker {
	t := &Tracker{savedPos: savedPos, next: savedPos, origin: saved.Origin}
	for _, o := range saved.Acked {
		if o >= savedPos {
			t.preacked = append(t.preacked, o)
		}
	}
	slices.Sort(t.preacked)
	t.preacked = slices.Compact(t.preacked)
	for _, a := range saved.Attempts {
		if a.Pos >= savedPos && a.N > 0 {
			t.preattempts = append(t.preattempts, a)
		}
	}
	slices.SortFunc(t.preattempts, func(a, b Attempts) int { return cmp.Compare(a.Pos, b.Pos) })
	t.preattempts = slices.CompactFunc(t.preattempts, func(a, b Attempts) bool { return a.Pos == b.Pos })
	return t
}

// Fetched records a fetched message and says whether to deliver it, and how
// often it was delivered before: messages acked before (preacked) are not
// Delivered again, and a message at or below one already fetched is a
// duplicate.
func (t *Tracker) Fetched(pos int64) (deliver bool, prior uint32) {
	if pos < t.next {
		return false, 0
	}
	prev := t.next
	t.next = pos + 1
	if n := len(t.entries); n > 0 && t.entries[n-1].pos >= prev {
		// Fetched again after a rewind (messages come back in order). An
		// un-acked entry the log skipped is gone (compacted away): nothing
		// will ever ack it, so it must not hold the save back.
		i, found := t.find(pos)
		if found && !t.entries[i].acked {
			deliver, prior = true, uint32(t.entries[i].attempts)
		}
		for j := range i {
			if e := &t.entries[j]; e.pos >= prev && !e.acked {
				e.acked = true
			}
		}
		t.dropAcked()
		if found || i < n {
			return deliver, prior // a new message cannot fall between two fetched ones
		}
	}
	for len(t.preacked) > 0 && t.preacked[0] < pos {
		t.preacked = t.preacked[1:] // gone from the log (compaction)
	}
	for len(t.preattempts) > 0 && t.preattempts[0].Pos < pos {
		t.preattempts = t.preattempts[1:]
	}
	var n uint16
	if len(t.preattempts) > 0 && t.preattempts[0].Pos == pos {
		n = t.preattempts[0].N
		t.preattempts = t.preattempts[1:]
	}
	if len(t.preacked) > 0 && t.preacked[0] == pos {
		t.preacked = t.preacked[1:]
		if len(t.entries) > 0 { // keep it above an un-acked message
			t.entries = append(t.entries, entry{pos: pos, acked: true})
		}
		return false, 0
	}
	t.entries = append(t.entries, entry{pos: pos, attempts: n})
	return true, uint32(n)
}

// Delivered counts one delivery of a fetched, un-acked message.
func (t *Tracker) Delivered(pos int64) bool {
	i, found := t.find(pos)
	if !found || t.entries[i].acked {
		return false
	}
	if t.entries[i].attempts < 1<<16-1 {
		t.entries[i].attempts++
	}
	t.counted++
	return true
}

// Rewind makes the tracker take the messages from the save point again,
// for a shard fetched anew after the node dropped what it had not
// delivered. Acks and delivery counts it holds are kept: acked messages are
// not delivered again.
func (t *Tracker) Rewind() {
	t.next, _ = t.SavePoint()
}

// Truncate forgets everything at and above pos: the log was cut back
// there (an unclean leader election), so messages from pos on are new
// ones, whatever was fetched, acked or saved there before. The tracker
// then takes the messages from its save point again.
func (t *Tracker) Truncate(pos int64) {
	i, _ := t.find(pos)
	t.entries = t.entries[:i]
	t.preacked = slices.DeleteFunc(t.preacked, func(o int64) bool { return o >= pos })
	t.preattempts = slices.DeleteFunc(t.preattempts, func(a Attempts) bool { return a.Pos >= pos })
	t.next = min(t.next, pos)
	t.savedPos = min(t.savedPos, pos)
	t.Rewind()
}

func (t *Tracker) find(pos int64) (int, bool) {
	return slices.BinarySearchFunc(t.entries, pos, func(e entry, o int64) int { return cmp.Compare(e.pos, o) })
}

// Ack marks a fetched message acked; false if it is not outstanding.
func (t *Tracker) Ack(pos int64) bool {
	i, found := t.find(pos)
	if !found || t.entries[i].acked {
		return false
	}
	t.entries[i].acked = true
	t.acks++
	if i == 0 {
		t.dropAcked()
	}
	return true
}

// dropAcked drops the acked prefix; it reuses the array unless it is
// mostly slack.
func (t *Tracker) dropAcked() {
	n := 0
	for n < len(t.entries) && t.entries[n].acked {
		n++
	}
	if n == 0 {
		return
	}
	t.entries = t.entries[n:]
	if cap(t.entries) > 64 && len(t.entries) < cap(t.entries)/4 {
		t.entries = slices.Clone(t.entries)
	}
}

// SavePoint is how far a save may go, and the acks above it.
func (t *Tracker) SavePoint() (pos int64, above []int64) {
	pos = t.next
	if len(t.entries) > 0 {
		pos = t.entries[0].pos
		for _, e := range t.entries[1:] {
			if e.acked {
				above = append(above, e.pos)
			}
		}
	}
	for _, o := range t.preacked {
		if o >= pos {
			above = append(above, o)
		}
	}
	return pos, above
}

// ToSave is what a save saves: the save point, with the acks above it
// and the delivery counts of the un-acked messages at or above it.
func (t *Tracker) ToSave() (int64, Saved) {
	at, above := t.SavePoint()
	m := Saved{Origin: t.origin, Acked: above}
	for _, e := range t.entries {
		if !e.acked && e.attempts > 0 {
			m.Attempts = append(m.Attempts, Attempts{Pos: e.pos, N: e.attempts})
		}
	}
	for _, a := range t.preattempts {
		if a.Pos >= at {
			m.Attempts = append(m.Attempts, a)
		}
	}
	return at, m
}

// Dirty says whether a save would change anything.
func (t *Tracker) Dirty() bool {
	if t.acks > 0 || t.counted > 0 {
		return true
	}
	o, _ := t.SavePoint()
	return o != t.savedPos
}

// SavedAt records a successful save at pos, which took acks acks and counted
// deliveries (snapshots from when the save began).
func (t *Tracker) SavedAt(pos int64, acks, counted int) {
	t.counted = max(t.counted-counted, 0)
	if pos > t.savedPos {
		t.savedPos = pos
	}
	t.acks -= acks
	if t.acks < 0 {
		t.acks = 0
	}
}

// Unsaved counts messages fetched and not savedPos: undelivered,
// in flight, or acked but not yet savedPos. Positions stand in for messages
// (a compacted log has gaps), so the count errs high.
func (t *Tracker) Unsaved() int64 { return t.next - t.savedPos }

// Next is the position after the last message fetched: where fetching
// goes on.
func (t *Tracker) Next() int64 { return t.next }

// Acks counts acks since the last save.
func (t *Tracker) Acks() int { return t.acks }

// Counted counts deliveries since the last save.
func (t *Tracker) Counted() int { return t.counted }

// Origin is how the subscription started, saved with every position.
func (t *Tracker) Origin() Origin { return t.origin }

// Full says whether the shard holds its limit of messages fetched and not
// saved: fetching stops until saves bring it down.
func (t *Tracker) Full(limit int) bool { return t.Unsaved() >= int64(limit) }

// Drained says whether a shard stopped at its limit may fetch again: saves
// have brought it down to half, so that it does not stop and start at
// every message.
func (t *Tracker) Drained(limit int) bool { return t.Unsaved() <= int64(limit/2) }
