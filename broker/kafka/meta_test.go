package kafka

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker/cursor"
)

func TestAckedMetadata_RoundTripsAndStaysUnderKafkasLimit(t *testing.T) {
	for _, acked := range [][]int64{nil, {5}, {5, 6, 7, 9, 1000, 1001}} {
		meta := encodeMeta(3, cursor.Saved{Acked: acked})
		got, err := decodeMeta(3, meta)
		require.NoError(t, err)
		require.Equal(t, acked, got.Acked)
	}
	// Every other offset acked: the worst case for runs.
	var worst []int64
	for o := int64(1); o < 20000; o += 2 {
		worst = append(worst, o)
	}
	meta := encodeMeta(0, cursor.Saved{Acked: worst})
	require.LessOrEqual(t, len(meta), 4096)
	got, err := decodeMeta(0, meta)
	require.NoError(t, err)
	require.Equal(t, worst[:len(got.Acked)], got.Acked, "what does not fit is left out from the top")
	_, err = decodeMeta(0, "other-client-metadata")
	require.ErrorIs(t, err, errBadMeta)
}

func FuzzDecodeAcked(f *testing.F) {
	f.Add(int64(0), encodeMeta(0, cursor.Saved{Acked: []int64{1, 2, 5}}))
	f.Add(int64(3), encodeMeta(3, cursor.Saved{Origin: cursor.Origin{CreatedMs: 1700000000000, Earliest: true}, Acked: []int64{4}, Attempts: []cursor.Attempts{{Pos: 3, N: 2}, {Pos: 5, N: 1}, {Pos: 6, N: 1}}}))
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
		for i, o := range m.Acked {
			if o < committed || (i > 0 && o <= m.Acked[i-1]) {
				t.Fatalf("decoded offsets not ascending above %d: %v", committed, m.Acked)
			}
		}
		for i, a := range m.Attempts {
			if a.Pos < committed || (i > 0 && a.Pos <= m.Attempts[i-1].Pos) || a.N == 0 {
				t.Fatalf("decoded delivery counts not ascending above %d: %v", committed, m.Attempts)
			}
		}
		if len(meta) > 1000 {
			return // re-encoding may leave out what is over the size budget
		}
		if again, err := decodeMeta(committed, encodeMeta(committed, m)); err != nil || len(again.Acked) != len(m.Acked) {
			t.Fatalf("re-encoding %v: %v, %v", m, again, err)
		}
	})
}
