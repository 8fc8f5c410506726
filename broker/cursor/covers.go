package cursor

import "slices"

// Acked says whether the message at pos counts as acked for the tracker:
// it is below the save point (acked, or gone from the log), or acked
// above it. A position the tracker forgot (Truncate) or has not fetched
// is not acked.
func (t *Tracker) Acked(pos int64) bool {
	at, _ := t.SavePoint()
	if pos < at {
		return true
	}
	if i, found := t.find(pos); found {
		return t.entries[i].acked
	}
	_, found := slices.BinarySearch(t.preacked, pos)
	return found
}

// Covers says whether a position saved at at, with the acks above it
// (ascending, as ToSave gives them), covers the message at pos: a reader
// starting from it does not deliver that message.
func Covers(at int64, above []int64, pos int64) bool {
	if pos < at {
		return true
	}
	_, found := slices.BinarySearch(above, pos)
	return found
}

// SaveWatch is what the saves of one shard did, kept by backends that
// confirm acks (broker.AckSaver): the last successful save's position and
// acks, and the saves begun and the last one that failed. Its owner locks.
type SaveWatch struct {
	savedTr    *Tracker // the tracker the last successful save was of
	savedAt    int64    // that save's position
	savedAbove []int64  // and the acks saved above it, ascending
	rounds     uint64   // saves begun
	failRound  uint64   // the last save that failed
	failErr    error
}

// Begin counts a save beginning and returns its number.
func (w *SaveWatch) Begin() uint64 {
	w.rounds++
	return w.rounds
}

// Begun is the number of saves begun so far.
func (w *SaveWatch) Begun() uint64 { return w.rounds }

// Saved records that save of tr succeeded at at with the acks above it.
func (w *SaveWatch) Saved(tr *Tracker, at int64, above []int64) {
	w.savedTr, w.savedAt, w.savedAbove = tr, at, above
}

// Failed records that save number round failed with err.
func (w *SaveWatch) Failed(round uint64, err error) {
	if round > w.failRound {
		w.failRound, w.failErr = round, err
	}
}

// Covers says whether the last successful save of tr covers pos.
func (w *SaveWatch) Covers(tr *Tracker, pos int64) bool {
	return w.savedTr == tr && Covers(w.savedAt, w.savedAbove, pos)
}

// FailedAfter returns the error of the last failed save when it began
// after the first from saves, else nil.
func (w *SaveWatch) FailedAfter(from uint64) error {
	if w.failRound > from {
		return w.failErr
	}
	return nil
}
