package cursor

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestConfirm_AckedAndCovers: what counts as acked in a tracker, what a
// saved position covers, and what a SaveWatch tells SaveAcks.
func TestConfirm_AckedAndCovers(t *testing.T) {
	tr := NewTracker(10, Saved{Acked: []int64{15}})
	for pos := int64(10); pos < 14; pos++ {
		tr.Fetched(pos)
	}
	tr.Ack(10)
	tr.Ack(12)
	for pos, want := range map[int64]bool{9: true, 10: true, 11: false, 12: true, 13: false, 14: false, 15: true, 16: false} {
		assert.Equal(t, want, tr.Acked(pos), "Acked(%d)", pos)
	}
	at, saved := tr.ToSave()
	assert.EqualValues(t, 11, at)
	assert.Equal(t, []int64{12, 15}, saved.Acked)
	for pos, want := range map[int64]bool{10: true, 11: false, 12: true, 13: false, 15: true} {
		assert.Equal(t, want, Covers(at, saved.Acked, pos), "Covers(%d)", pos)
	}
	tr.Truncate(12)
	assert.False(t, tr.Acked(12), "forgotten by a truncation")

	var w SaveWatch
	from := w.Begun()
	r1 := w.Begin()
	assert.False(t, w.Covers(tr, 10), "nothing saved yet")
	w.Saved(tr, at, saved.Acked)
	assert.True(t, w.Covers(tr, 10))
	assert.False(t, w.Covers(NewTracker(0, Saved{}), 10), "another tracker's save covers nothing of this one")
	assert.NoError(t, w.FailedAfter(from))
	r2 := w.Begin()
	w.Failed(r2, errors.New("boom"))
	w.Failed(r1, errors.New("older"))
	assert.EqualError(t, w.FailedAfter(from), "boom")
	assert.NoError(t, w.FailedAfter(r2), "a failure of a save begun before does not count")
}
