package cluster

import (
	"maps"
	"slices"
	"time"
)

// Acknowledgements and objections: how a node learns that every member
// has seen its state (its intents to claim shards, or its return after its
// standing was in doubt), and what they know that it may not.

// ask gives the local state a new version that asks every member to
// acknowledge it, and returns that version.
func (t *table) ask(now time.Time) uint64 {
	t.bump(now)
	t.local.State.Ask = t.local.Version
	return t.local.Version
}

// ackedBy reports whether every live member that is not leaving has
// acknowledged this node's state at ask.
func (t *table) ackedBy(ask uint64) bool {
	for name, m := range t.members {
		if name == t.self || m.leaving {
			continue
		}
		st, ok := t.states[name]
		if !ok || st.State.Acks[t.self] < ask {
			return false
		}
	}
	return true
}

// formerAddrs lists the addresses of members gone recently.
func (t *table) formerAddrs() []string {
	var out []string
	for _, f := range t.former {
		if time.Since(f.gone) <= formerTTL {
			out = append(out, f.addr)
		}
	}
	slices.Sort(out)
	return out
}

// others counts the live members other than this node that are not
// leaving.
func (t *table) others() int {
	n := 0
	for name, m := range t.members {
		if name != t.self && !m.leaving {
			n++
		}
	}
	return n
}

// refreshObjections recomputes the local objections (NodeState.Objections)
// from every state the table holds, and reports whether they changed.
func (t *table) refreshObjections() bool {
	claimed := map[string]map[string]string{} // subscription -> shard -> claimant
	add := func(node string, st NodeState) {
		for sub, ss := range st.Subscriptions {
			for _, c := range ss.Claims {
				if claimed[sub] == nil {
					claimed[sub] = map[string]string{}
				}
				claimed[sub][c] = node
			}
		}
	}
	add(t.self, t.local.State)
	for name, r := range t.states {
		add(name, r.State)
	}
	var out map[string][]string
	for name, r := range t.states {
		for sub, ss := range r.State.Subscriptions {
			for _, in := range ss.Intents {
				if by, ok := claimed[sub][in]; ok && by != name {
					if out == nil {
						out = map[string][]string{}
					}
					out[sub] = append(out[sub], in)
				}
			}
		}
	}
	for _, shards := range out {
		slices.Sort(shards)
	}
	if maps.EqualFunc(out, t.local.State.Objections, slices.Equal) {
		return false
	}
	t.local.State.Objections = out // a new map: records are never modified once stored
	return true
}
