package node

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/streamgate/streamgate/cluster"
)

// Membership is what a node needs from the cluster: the gossiped state of
// every member, and a way to publish its own. *cluster.Cluster implements
// it; a node without a cluster is a cluster of one (nil Membership).
type Membership interface {
	View() cluster.View
	Changes() <-chan struct{}
	SetLocal(map[string]cluster.SubscriptionState)
	SetDraining(bool)
	Members() []cluster.Member
	Leave(timeout time.Duration) error
	// Joined: the node has reached its cluster (no seeds, or a seed
	// answered). Until then it claims nothing and is not ready.
	Joined() bool
	// Standing reports whether the node may act on its claims now, and
	// how often it lost its standing so far (cluster/standing.go). It is
	// cheap and safe to call from any goroutine.
	Standing() (bool, uint64)
	// Ask gives the node's state a new version that every member must
	// acknowledge (View.AckedBy), and returns it.
	Ask() uint64
}

var _ Membership = (*cluster.Cluster)(nil)

// remoteSub is a subscriber connected to another node.
type remoteSub struct {
	cluster.SubscriberInfo
	Node string
}

// remoteState is what other members say about one subscription.
type remoteState struct {
	subs    []remoteSub
	claims  map[string]string   // shard name -> claiming node
	intents map[string][]string // shard name -> nodes that want to claim it
	// objected: shards other members object to this node's intent on:
	// they know a claim of it that this node may not see.
	objected map[string]bool
	// acked is the lowest ask of this node that every other member has
	// acknowledged (MaxUint64 when there are none).
	acked uint64
	// unsynced: a live member's state has not arrived yet, so its claims
	// are unknown; claim nothing new until it has.
	unsynced bool
}

// ackedBy says whether every other member has acknowledged ask.
func (r *remoteState) ackedBy(ask uint64) bool { return !r.unsynced && r.acked >= ask }

// remoteOf extracts one subscription's remote state from a view.
func remoteOf(v cluster.View, name string) remoteState {
	r := remoteState{claims: map[string]string{}, intents: map[string][]string{}, objected: map[string]bool{}, acked: math.MaxUint64, unsynced: len(v.Unsynced) > 0}
	for node, st := range v.Nodes {
		if node == v.Self {
			continue
		}
		r.acked = min(r.acked, st.Acks[v.Self])
		for _, shard := range st.Objections[name] {
			r.objected[shard] = true
		}
		ss, ok := st.Subscriptions[name]
		if !ok {
			continue
		}
		for _, in := range ss.Intents {
			r.intents[in] = append(r.intents[in], node)
		}
		for _, sub := range ss.Subscribers {
			r.subs = append(r.subs, remoteSub{SubscriberInfo: sub, Node: node})
		}
		for _, c := range ss.Claims {
			r.claims[c] = node
		}
	}
	slices.SortFunc(r.subs, func(a, b remoteSub) int { return cmp.Compare(a.ID, b.ID) })
	return r
}

// localState gathers every subscription's local state and publishes the
// whole to the cluster (which versions and spreads it); without a cluster
// it is what the Admin service reports.
type localState struct {
	m    Membership
	mu   sync.Mutex // guards subs
	subs map[string]cluster.SubscriptionState
}

func (l *localState) set(name string, st cluster.SubscriptionState, gone bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gone {
		delete(l.subs, name)
	} else {
		l.subs[name] = st
	}
	if l.m != nil {
		l.m.SetLocal(l.subs) // it copies the map; mu keeps the order of updates
	}
}

// get returns one subscription's local state.
func (l *localState) get(name string) (cluster.SubscriptionState, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.subs[name]
	return st, ok
}
