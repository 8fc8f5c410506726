package node_test

import (
	"maps"
	"sync"
	"time"

	"github.com/streamgate/streamgate/cluster"
	"github.com/streamgate/streamgate/node"
)

// fakeMembership is a cluster of one node whose standing the test sets, so
// that the node's claim, standing and Confirm paths run against the fake
// backend without memberlist. Every Ask is acknowledged at once (there is
// nobody else to ask) and announced as a change of the view, as the real
// cluster announces the members' acknowledgements.
type fakeMembership struct {
	self    string
	changes chan struct{} // capacity 1: the view or the standing changed

	mu       sync.Mutex // guards the fields below
	local    map[string]cluster.SubscriptionState
	draining bool
	ok       bool
	epoch    uint64 // standing losses so far
	asks     uint64
}

var _ node.Membership = (*fakeMembership)(nil)

func newFakeMembership(self string) *fakeMembership {
	return &fakeMembership{self: self, changes: make(chan struct{}, 1), ok: true}
}

// SetStanding sets the node's standing; regaining it counts a new epoch,
// which the node confirms its claims for.
func (m *fakeMembership) SetStanding(ok bool) {
	m.mu.Lock()
	if ok && !m.ok {
		m.epoch++
	}
	m.ok = ok
	m.mu.Unlock()
	signalFake(m.changes)
}

// Claims returns the shards the node claims in sub, as it gossips them.
func (m *fakeMembership) Claims(sub string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.local[sub].Claims
}

func (m *fakeMembership) View() cluster.View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cluster.View{Self: m.self, Nodes: map[string]cluster.NodeState{
		m.self: {Name: m.self, Draining: m.draining, Subscriptions: maps.Clone(m.local), Ask: m.asks},
	}}
}

func (m *fakeMembership) Changes() <-chan struct{} { return m.changes }

func (m *fakeMembership) SetLocal(subs map[string]cluster.SubscriptionState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.local = maps.Clone(subs)
}

func (m *fakeMembership) SetDraining(d bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.draining = d
}

func (m *fakeMembership) Members() []cluster.Member {
	return []cluster.Member{{Name: m.self, State: cluster.StateAlive}}
}

func (m *fakeMembership) Leave(time.Duration) error { return nil }

func (m *fakeMembership) Joined() bool { return true }

func (m *fakeMembership) Standing() (bool, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ok, m.epoch
}

func (m *fakeMembership) Ask() uint64 {
	m.mu.Lock()
	m.asks++
	ask := m.asks
	m.mu.Unlock()
	signalFake(m.changes)
	return ask
}
