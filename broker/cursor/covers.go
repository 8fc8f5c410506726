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
