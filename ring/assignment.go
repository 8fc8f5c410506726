package ring

import "slices"

// Assignment maps each shard name to the id of the subscriber that owns it.
// It is a plain map so that callers can look a shard up directly.
type Assignment map[string]string

// Of returns the shards assigned to subscriber, sorted, so that callers
// comparing two assignments or logging one get a stable order.
func (a Assignment) Of(subscriber string) []string {
	var out []string
	for shard, sub := range a {
		if sub == subscriber {
			out = append(out, shard)
		}
	}
	slices.Sort(out)
	return out
}

// Moved counts the shards present in both assignments whose subscriber
// differs: the hand-overs a membership change costs. Shards that appear in
// only one of them are new or gone, not moved, and are not counted.
func Moved(before, after Assignment) int {
	n := 0
	for shard, sub := range after {
		if was, ok := before[shard]; ok && was != sub {
			n++
		}
	}
	return n
}
