package kafka

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTracker_CommitStopsAtTheFirstUnackedAndKeepsLaterAcks(t *testing.T) {
	tr := newTracker(100, savedMeta{})
	for o := int64(100); o < 110; o++ {
		require.True(t, fetched(tr, o))
	}
	at, above := tr.commitPoint()
	require.EqualValues(t, 100, at)
	require.Empty(t, above)

	for _, o := range []int64{100, 101, 103, 105, 106} {
		require.True(t, tr.ack(o))
	}
	require.False(t, tr.ack(103), "acks are idempotent")
	require.False(t, tr.ack(99), "below the window")
	require.False(t, tr.ack(200), "never fetched")
	at, above = tr.commitPoint()
	require.EqualValues(t, 102, at, "the commit never passes an un-acked record")
	require.Equal(t, []int64{103, 105, 106}, above)
	require.True(t, tr.dirty())
	tr.committedAt(at, tr.acks, tr.counted)
	require.False(t, tr.dirty())
	require.EqualValues(t, 8, tr.uncommitted())

	for _, o := range []int64{102, 104, 107, 108, 109} {
		tr.ack(o)
	}
	at, above = tr.commitPoint()
	require.EqualValues(t, 110, at)
	require.Empty(t, above)
}

func TestTracker_SkipsWhatItsMetadataSaysWasAcked(t *testing.T) {
	tr := newTracker(10, savedMeta{acked: []int64{12, 13, 15, 5 /* below: ignored */}})
	var delivered []int64
	for o := int64(10); o < 17; o++ {
		if fetched(tr, o) {
			delivered = append(delivered, o)
		}
	}
	require.Equal(t, []int64{10, 11, 14, 16}, delivered)
	at, above := tr.commitPoint()
	require.EqualValues(t, 10, at)
	require.Equal(t, []int64{12, 13, 15}, above, "pre-acked offsets travel on in the metadata")
	tr.ack(10)
	tr.ack(11)
	at, _ = tr.commitPoint()
	require.EqualValues(t, 14, at)
}

func TestTracker_PreackedNotYetFetchedStayInTheMetadata(t *testing.T) {
	tr := newTracker(0, savedMeta{acked: []int64{5, 6}})
	fetched(tr, 0)
	at, above := tr.commitPoint()
	require.EqualValues(t, 0, at)
	require.Equal(t, []int64{5, 6}, above)
}

// fetched is tracker.fetched for tests that only look at whether a record
// is delivered.
func fetched(tr *tracker, offset int64) bool {
	deliver, _ := tr.fetched(offset)
	return deliver
}

func TestAckedMetadata_RoundTripsAndStaysUnderKafkasLimit(t *testing.T) {
	for _, acked := range [][]int64{nil, {5}, {5, 6, 7, 9, 1000, 1001}} {
		meta := encodeMeta(3, savedMeta{acked: acked})
		got, err := decodeMeta(3, meta)
		require.NoError(t, err)
		require.Equal(t, acked, got.acked)
	}
	// Every other offset acked: the worst case for runs.
	var worst []int64
	for o := int64(1); o < 20000; o += 2 {
		worst = append(worst, o)
	}
	meta := encodeMeta(0, savedMeta{acked: worst})
	require.LessOrEqual(t, len(meta), 4096)
	got, err := decodeMeta(0, meta)
	require.NoError(t, err)
	require.Equal(t, worst[:len(got.acked)], got.acked, "what does not fit is left out from the top")
	_, err = decodeMeta(0, "other-client-metadata")
	require.ErrorIs(t, err, errBadMeta)
}

// TestTracker_RandomAcksNeverCommitPastAnUnackedRecord is a property test
// of the invariant, with gaps in the offsets as a compacted log has them.
func TestTracker_RandomAcksNeverCommitPastAnUnackedRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 200; trial++ {
		tr := newTracker(0, savedMeta{})
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
			tr.ack(offsets[i])
			acked[offsets[i]] = true
		}
		at, above := tr.commitPoint()
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

func FuzzDecodeAcked(f *testing.F) {
	f.Add(int64(0), encodeMeta(0, savedMeta{acked: []int64{1, 2, 5}}))
	f.Add(int64(3), encodeMeta(3, savedMeta{origin: origin{createdMs: 1700000000000, earliest: true}, acked: []int64{4}, attempts: []attempts{{3, 2}, {5, 1}, {6, 1}}}))
	f.Add(int64(7), "sg1:")
	f.Add(int64(7), "sg2:")
	f.Add(int64(0), "garbage")
	f.Fuzz(func(t *testing.T, committed int64, meta string) {
		if committed < 0 || committed > 1<<50 {
			return
		}
		m, err := decodeMeta(committed, meta)
		if err != nil {
			return
		}
		for i, o := range m.acked {
			if o < committed || (i > 0 && o <= m.acked[i-1]) {
				t.Fatalf("decoded offsets not ascending above %d: %v", committed, m.acked)
			}
		}
		for i, a := range m.attempts {
			if a.offset < committed || (i > 0 && a.offset <= m.attempts[i-1].offset) || a.n == 0 {
				t.Fatalf("decoded delivery counts not ascending above %d: %v", committed, m.attempts)
			}
		}
		if len(meta) > 1000 {
			return // re-encoding may leave out what is over the size budget
		}
		if again, err := decodeMeta(committed, encodeMeta(committed, m)); err != nil || len(again.acked) != len(m.acked) {
			t.Fatalf("re-encoding %v: %v, %v", m, again, err)
		}
	})
}

func TestTracker_RewindRedeliversOnlyWhatIsNotAcked(t *testing.T) {
	tr := newTracker(0, savedMeta{})
	for o := int64(0); o < 10; o++ {
		fetched(tr, o)
	}
	tr.ack(0)
	tr.ack(1)
	tr.ack(4) // in flight elsewhere when the shard comes back: acked later
	tr.rewind()
	var again []int64
	for o := int64(0); o < 12; o++ {
		if fetched(tr, o) {
			again = append(again, o)
		}
	}
	require.Equal(t, []int64{2, 3, 5, 6, 7, 8, 9, 10, 11}, again)
	require.True(t, tr.ack(3), "acks of records fetched before the rewind still count")
	at, above := tr.commitPoint()
	require.EqualValues(t, 2, at)
	require.Equal(t, []int64{3, 4}, above)
}

func TestTracker_RecordsCompactedAwayBeforeARefetchDoNotHoldTheCommit(t *testing.T) {
	tr := newTracker(0, savedMeta{})
	for o := int64(0); o < 6; o++ {
		fetched(tr, o)
	}
	tr.ack(0)
	tr.rewind() // next = 1
	// The log no longer has 1 and 2: the refetch starts at 3.
	require.True(t, fetched(tr, 3))
	at, _ := tr.commitPoint()
	require.EqualValues(t, 3, at, "1 and 2 are gone; 3 holds the commit")
	require.True(t, fetched(tr, 4))
	require.True(t, fetched(tr, 5))
	require.True(t, fetched(tr, 6), "new records after the refetch")
	for _, o := range []int64{3, 4, 5, 6} {
		require.True(t, tr.ack(o))
	}
	at, _ = tr.commitPoint()
	require.EqualValues(t, 7, at)
}
