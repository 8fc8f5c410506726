package kafka

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
)

// tracker follows one partition of one subscription: the records fetched,
// which of them are acked, and how far a commit may go.
//
// Invariant: a commit never passes an un-acked record. The commit point is
// the offset of the first fetched record not yet acked, or the offset after
// the last fetched record when all are acked. Acks above the commit point
// are kept and travel in the commit's metadata, so that whoever reads the
// partition next (this node after a restart, or another node) skips them.
//
// A tracker is not safe for concurrent use; its owner locks.
type tracker struct {
	committed int64   // the last committed offset
	next      int64   // the offset after the last fetched record
	entries   []entry // fetched records from the first un-acked one, by offset
	// preacked are offsets acked before this tracker started (from the
	// commit metadata) that have not been fetched yet, ascending.
	preacked []int64
	acks     int // acks since the last commit
}

type entry struct {
	offset int64
	acked  bool
}

// newTracker starts at the committed offset with the acks its metadata
// carried.
func newTracker(committed int64, preacked []int64) *tracker {
	t := &tracker{committed: committed, next: committed}
	for _, o := range preacked {
		if o >= committed {
			t.preacked = append(t.preacked, o)
		}
	}
	slices.Sort(t.preacked)
	t.preacked = slices.Compact(t.preacked)
	return t
}

// fetched records a fetched record and says whether to deliver it: records
// acked before (preacked) are not delivered again, and a record at or below
// one already fetched is a duplicate.
func (t *tracker) fetched(offset int64) bool {
	if offset < t.next {
		return false
	}
	prev := t.next
	t.next = offset + 1
	if n := len(t.entries); n > 0 && t.entries[n-1].offset >= prev {
		// Fetched again after a rewind (records come back in order). An
		// un-acked entry the log skipped is gone (compacted away): nothing
		// will ever ack it, so it must not hold the commit back.
		i, found := t.find(offset)
		deliver := found && !t.entries[i].acked
		for j := range i {
			if e := &t.entries[j]; e.offset >= prev && !e.acked {
				e.acked = true
			}
		}
		t.dropAcked()
		if found || i < n {
			return deliver // a new record cannot fall between two fetched ones
		}
	}
	for len(t.preacked) > 0 && t.preacked[0] < offset {
		t.preacked = t.preacked[1:] // gone from the log (compaction)
	}
	if len(t.preacked) > 0 && t.preacked[0] == offset {
		t.preacked = t.preacked[1:]
		if len(t.entries) > 0 { // keep it above an un-acked record
			t.entries = append(t.entries, entry{offset: offset, acked: true})
		}
		return false
	}
	t.entries = append(t.entries, entry{offset: offset})
	return true
}

// rewind makes the tracker take the records from the commit point again,
// for a partition fetched anew after the node dropped what it had not
// delivered. Acks it holds are kept: acked records are not delivered again.
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

// Commit metadata: "sg1:" and base64 of (gap, run) uvarint pairs, the runs
// of acked offsets above the committed one. Kafka caps metadata at 4096
// bytes by default (offset.metadata.max.bytes); runs that do not fit are
// left out, which costs redelivery, never loss.
const (
	metaPrefix   = "sg1:"
	maxMetaBytes = 4000
)

var errBadMeta = errors.New("malformed commit metadata")

func encodeAcked(committed int64, acked []int64) string {
	if len(acked) == 0 {
		return ""
	}
	budget := base64.RawStdEncoding.DecodedLen(maxMetaBytes - len(metaPrefix))
	var buf []byte
	prev := committed
	for i := 0; i < len(acked); {
		j := i + 1
		for j < len(acked) && acked[j] == acked[j-1]+1 {
			j++
		}
		var pair []byte
		pair = binary.AppendUvarint(pair, uint64(acked[i]-prev))
		pair = binary.AppendUvarint(pair, uint64(j-i))
		if len(buf)+len(pair) > budget {
			break
		}
		buf = append(buf, pair...)
		prev = acked[j-1] + 1
		i = j
	}
	return metaPrefix + base64.RawStdEncoding.EncodeToString(buf)
}

func decodeAcked(committed int64, meta string) ([]int64, error) {
	if meta == "" {
		return nil, nil
	}
	rest, ok := strings.CutPrefix(meta, metaPrefix)
	if !ok {
		return nil, errBadMeta
	}
	buf, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errBadMeta
	}
	var out []int64
	prev := committed
	for len(buf) > 0 {
		gap, n := binary.Uvarint(buf)
		if n <= 0 {
			return nil, errBadMeta
		}
		buf = buf[n:]
		run, n := binary.Uvarint(buf)
		if n <= 0 || run == 0 || run > 1<<20 || gap > 1<<40 {
			return nil, errBadMeta
		}
		buf = buf[n:]
		start := prev + int64(gap)
		for k := range int64(run) {
			out = append(out, start+k)
		}
		prev = start + int64(run)
	}
	return out, nil
}
