package rabbitmq

import (
	"cmp"
	"slices"
)

// tracker is the Kafka backend's (broker/kafka/tracker.go), copied: the
// same bookkeeping over a stream's offsets. Kept in step by hand; a shared
// internal package would be the next step if a third backend needs it.
//
// tracker follows one partition of one subscription: the records fetched,
// which of them are acked, how often each was delivered, and how far a
// commit may go.
//
// Invariant: a commit never passes an un-acked record. The commit point is
// the offset of the first fetched record not yet acked, or the offset after
// the last fetched record when all are acked. Acks above the commit point
// are kept and travel in the saved position (store.go), so that whoever reads the
// partition next (this node after a restart, or another node) skips them;
// so do the delivery counts of the un-acked records, so that a message's
// delivery_attempt counts deliveries cluster-wide.
//
// A tracker is not safe for concurrent use; its owner locks.
type tracker struct {
	committed int64   // the last committed offset
	next      int64   // the offset after the last fetched record
	entries   []entry // fetched records from the first un-acked one, by offset
	// preacked are offsets acked before this tracker started (from the
	// commit metadata) that have not been fetched yet, ascending.
	preacked []int64
	// preattempts are delivery counts saved before this tracker started,
	// for records not fetched yet, by offset.
	preattempts []attempts
	acks        int    // acks since the last commit
	origin      origin // how the subscription started, saved with every commit
}

type entry struct {
	offset   int64
	acked    bool
	attempts uint16 // deliveries so far; saturates
}

// attempts is a delivery count of one record.
type attempts struct {
	offset int64
	n      uint16
}

// newTracker starts at the committed offset with the acks and delivery
// counts its metadata carried.
func newTracker(committed int64, saved savedMeta) *tracker {
	t := &tracker{committed: committed, next: committed, origin: saved.origin}
	for _, o := range saved.acked {
		if o >= committed {
			t.preacked = append(t.preacked, o)
		}
	}
	slices.Sort(t.preacked)
	t.preacked = slices.Compact(t.preacked)
	for _, a := range saved.attempts {
		if a.offset >= committed && a.n > 0 {
			t.preattempts = append(t.preattempts, a)
		}
	}
	slices.SortFunc(t.preattempts, func(a, b attempts) int { return cmp.Compare(a.offset, b.offset) })
	t.preattempts = slices.CompactFunc(t.preattempts, func(a, b attempts) bool { return a.offset == b.offset })
	return t
}

// fetched records a fetched record and says whether to deliver it, and how
// often it was delivered before: records acked before (preacked) are not
// delivered again, and a record at or below one already fetched is a
// duplicate.
func (t *tracker) fetched(offset int64) (deliver bool, prior uint32) {
	if offset < t.next {
		return false, 0
	}
	prev := t.next
	t.next = offset + 1
	if n := len(t.entries); n > 0 && t.entries[n-1].offset >= prev {
		// Fetched again after a rewind (records come back in order). An
		// un-acked entry the log skipped is gone (compacted away): nothing
		// will ever ack it, so it must not hold the commit back.
		i, found := t.find(offset)
		if found && !t.entries[i].acked {
			deliver, prior = true, uint32(t.entries[i].attempts)
		}
		for j := range i {
			if e := &t.entries[j]; e.offset >= prev && !e.acked {
				e.acked = true
			}
		}
		t.dropAcked()
		if found || i < n {
			return deliver, prior // a new record cannot fall between two fetched ones
		}
	}
	for len(t.preacked) > 0 && t.preacked[0] < offset {
		t.preacked = t.preacked[1:] // gone from the log (compaction)
	}
	for len(t.preattempts) > 0 && t.preattempts[0].offset < offset {
		t.preattempts = t.preattempts[1:]
	}
	var n uint16
	if len(t.preattempts) > 0 && t.preattempts[0].offset == offset {
		n = t.preattempts[0].n
		t.preattempts = t.preattempts[1:]
	}
	if len(t.preacked) > 0 && t.preacked[0] == offset {
		t.preacked = t.preacked[1:]
		if len(t.entries) > 0 { // keep it above an un-acked record
			t.entries = append(t.entries, entry{offset: offset, acked: true})
		}
		return false, 0
	}
	t.entries = append(t.entries, entry{offset: offset, attempts: n})
	return true, uint32(n)
}

// delivered counts one delivery of a fetched, un-acked record.
func (t *tracker) delivered(offset int64) bool {
	i, found := t.find(offset)
	if !found || t.entries[i].acked {
		return false
	}
	if t.entries[i].attempts < 1<<16-1 {
		t.entries[i].attempts++
	}
	return true
}

// rewind makes the tracker take the records from the commit point again,
// for a partition fetched anew after the node dropped what it had not
// delivered. Acks and delivery counts it holds are kept: acked records are
// not delivered again.
func (t *tracker) rewind() {
	t.next, _ = t.commitPoint()
}

func (t *tracker) find(offset int64) (int, bool) {
	return slices.BinarySearchFunc(t.entries, offset, func(e entry, o int64) int { return cmp.Compare(e.offset, o) })
}

// ack marks a fetched record acked; false if it is not outstanding.
func (t *tracker) ack(offset int64) bool {
	i, found := t.find(offset)
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
func (t *tracker) dropAcked() {
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

// commitPoint is how far a commit may go, and the acks above it.
func (t *tracker) commitPoint() (offset int64, above []int64) {
	offset = t.next
	if len(t.entries) > 0 {
		offset = t.entries[0].offset
		for _, e := range t.entries[1:] {
			if e.acked {
				above = append(above, e.offset)
			}
		}
	}
	for _, o := range t.preacked {
		if o >= offset {
			above = append(above, o)
		}
	}
	return offset, above
}

// saved is what a commit saves: the commit point, with the acks above it
// and the delivery counts of the un-acked records at or above it.
func (t *tracker) saved() (int64, savedMeta) {
	at, above := t.commitPoint()
	m := savedMeta{origin: t.origin, acked: above}
	for _, e := range t.entries {
		if !e.acked && e.attempts > 0 {
			m.attempts = append(m.attempts, attempts{offset: e.offset, n: e.attempts})
		}
	}
	for _, a := range t.preattempts {
		if a.offset >= at {
			m.attempts = append(m.attempts, a)
		}
	}
	return at, m
}

// dirty says whether a commit would change anything.
func (t *tracker) dirty() bool {
	if t.acks > 0 {
		return true
	}
	o, _ := t.commitPoint()
	return o != t.committed
}

// committedAt records a successful commit at offset.
func (t *tracker) committedAt(offset int64, acks int) {
	if offset > t.committed {
		t.committed = offset
	}
	t.acks -= acks
	if t.acks < 0 {
		t.acks = 0
	}
}

// uncommitted counts records fetched and not committed: undelivered,
// in flight, or acked but not yet committed. Offsets stand in for records
// (a compacted log has gaps), so the count errs high.
func (t *tracker) uncommitted() int64 { return t.next - t.committed }
