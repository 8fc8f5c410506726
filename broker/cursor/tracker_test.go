package cursor

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTracker_CommitStopsAtTheFirstUnackedAndKeepsLaterAcks(t *testing.T) {
	tr := NewTracker(100, Saved{})
	for o := int64(100); o < 110; o++ {
		require.True(t, fetched(tr, o))
	}
	at, above := tr.SavePoint()
	require.EqualValues(t, 100, at)
	require.Empty(t, above)

	for _, o := range []int64{100, 101, 103, 105, 106} {
		require.True(t, tr.Ack(o))
	}
	require.False(t, tr.Ack(103), "acks are idempotent")
	require.False(t, tr.Ack(99), "below the window")
	require.False(t, tr.Ack(200), "never fetched")
	at, above = tr.SavePoint()
	require.EqualValues(t, 102, at, "the commit never passes an un-acked record")
	require.Equal(t, []int64{103, 105, 106}, above)
	require.True(t, tr.Dirty())
	tr.SavedAt(at, tr.Acks(), tr.Counted())
	require.False(t, tr.Dirty())
	require.EqualValues(t, 8, tr.Unsaved())

	for _, o := range []int64{102, 104, 107, 108, 109} {
		tr.Ack(o)
	}
	at, above = tr.SavePoint()
	require.EqualValues(t, 110, at)
	require.Empty(t, above)
}

func TestTracker_SkipsWhatItsMetadataSaysWasAcked(t *testing.T) {
	tr := NewTracker(10, Saved{Acked: []int64{12, 13, 15, 5 /* below: ignored */}})
	var delivered []int64
	for o := int64(10); o < 17; o++ {
		if fetched(tr, o) {
			delivered = append(delivered, o)
		}
	}
	require.Equal(t, []int64{10, 11, 14, 16}, delivered)
	at, above := tr.SavePoint()
	require.EqualValues(t, 10, at)
	require.Equal(t, []int64{12, 13, 15}, above, "pre-acked offsets travel on in the metadata")
	tr.Ack(10)
	tr.Ack(11)
	at, _ = tr.SavePoint()
	require.EqualValues(t, 14, at)
}

func TestTracker_PreackedNotYetFetchedStayInTheMetadata(t *testing.T) {
	tr := NewTracker(0, Saved{Acked: []int64{5, 6}})
	fetched(tr, 0)
	at, above := tr.SavePoint()
	require.EqualValues(t, 0, at)
	require.Equal(t, []int64{5, 6}, above)
}

// fetched is Tracker.Fetched for tests that only look at whether a record
// is delivered.
func fetched(tr *Tracker, offset int64) bool {
	deliver, _ := tr.Fetched(offset)
	return deliver
}

// TestTracker_RandomAcksNeverCommitPastAnUnackedRecord is a property test
// of the invariant, with gaps in the offsets as a compacted log has them.
func TestTracker_RandomAcksNeverCommitPastAnUnackedRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 200; trial++ {
		tr := NewTracker(0, Saved{})
		var offsets []int64
		o := int64(0)
		for range 1 + r.IntN(200) {
			o += 1 + int64(r.IntN(3))
			if fetched(tr, o) {
				offsets = append(offsets, o)
			}
		}
		acked := map[int64]bool{}
		for _, i := range r.Perm(len(offsets))[:r.IntN(len(offsets)+1)] {
			tr.Ack(offsets[i])
			acked[offsets[i]] = true
		}
		at, above := tr.SavePoint()
		for _, off := range offsets {
			if off < at {
				require.True(t, acked[off], "commit %d passes un-acked %d", at, off)
			}
			if off >= at && acked[off] {
				require.True(t, slices.Contains(above, off), "ack of %d lost from the metadata", off)
			}
		}
	}
}

func TestTracker_RewindRedeliversOnlyWhatIsNotAcked(t *testing.T) {
	tr := NewTracker(0, Saved{})
	for o := int64(0); o < 10; o++ {
		fetched(tr, o)
	}
	tr.Ack(0)
	tr.Ack(1)
	tr.Ack(4) // in flight elsewhere when the shard comes back: acked later
	tr.Rewind()
	var again []int64
	for o := int64(0); o < 12; o++ {
		if fetched(tr, o) {
			again = append(again, o)
		}
	}
	require.Equal(t, []int64{2, 3, 5, 6, 7, 8, 9, 10, 11}, again)
	require.True(t, tr.Ack(3), "acks of records fetched before the rewind still count")
	at, above := tr.SavePoint()
	require.EqualValues(t, 2, at)
	require.Equal(t, []int64{3, 4}, above)
}

func TestTracker_RecordsCompactedAwayBeforeARefetchDoNotHoldTheCommit(t *testing.T) {
	tr := NewTracker(0, Saved{})
	for o := int64(0); o < 6; o++ {
		fetched(tr, o)
	}
	tr.Ack(0)
	tr.Rewind() // next = 1
	// The log no longer has 1 and 2: the refetch starts at 3.
	require.True(t, fetched(tr, 3))
	at, _ := tr.SavePoint()
	require.EqualValues(t, 3, at, "1 and 2 are gone; 3 holds the commit")
	require.True(t, fetched(tr, 4))
	require.True(t, fetched(tr, 5))
	require.True(t, fetched(tr, 6), "new records after the refetch")
	for _, o := range []int64{3, 4, 5, 6} {
		require.True(t, tr.Ack(o))
	}
	at, _ = tr.SavePoint()
	require.EqualValues(t, 7, at)
}
