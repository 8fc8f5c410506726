package cluster

import (
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"
)

// The json tags are the wire format: nodes of different versions gossip
// with each other during a rolling upgrade, and encoding/json ignores
// fields it does not know, so fields may be added but never renamed.

// SubscriberInfo describes one subscriber (an open Subscribe stream).
type SubscriberInfo struct {
	ID       string    `json:"id"`
	Topics   []string  `json:"topics,omitempty"`
	OpenedAt time.Time `json:"opened_at"`
}

// SubscriptionState is one node's part of a subscription.
type SubscriptionState struct {
	// Subscribers are this node's subscribers of the subscription.
	Subscribers []SubscriberInfo `json:"subscribers,omitempty"`
	// Claims are the shard names this node currently claims: it reads them,
	// or still holds messages of them in flight.
	Claims []string `json:"claims,omitempty"`
	// Intents are shard names this node wants to claim. It claims one only
	// once every live member has acknowledged the intent (NodeState.Acks)
	// in a state that shows neither a claim of the shard nor an intent
	// that takes precedence (a lower node name), so that two nodes never
	// claim one shard at once.
	Intents []string `json:"intents,omitempty"`
}

// NodeState is what one node gossips about itself.
type NodeState struct {
	Name     string `json:"name"`
	GRPCAddr string `json:"grpc_addr,omitempty"`
	Draining bool   `json:"draining,omitempty"`
	// Subscriptions is keyed by subscription name; never nil in a View.
	Subscriptions map[string]SubscriptionState `json:"subscriptions,omitempty"`
	// Ask is the version of this node's state at which it last asked every
	// member to acknowledge its state (its intents, or its return after
	// its standing was in doubt); 0: never.
	Ask uint64 `json:"ask,omitempty"`
	// Acks holds, per other member, the highest Ask of that member whose
	// state this node has applied. A member's state with Acks[X] >= X's
	// ask was made after it saw X's state at that ask.
	Acks map[string]uint64 `json:"acks,omitempty"`
	// Objections, per subscription, name shards that other members intend
	// to claim while this node knows a claim of them (its own, or another
	// live member's): a member that does not see that claimant (it
	// believes it dead) learns of it here, in the very state that
	// acknowledges its intent.
	Objections map[string][]string `json:"objections,omitempty"`
}

// View is an immutable snapshot of every live member's state, this node's
// included. It is a deep copy: the caller may keep and modify it.
type View struct {
	Self  string
	Nodes map[string]NodeState
	// Unsynced lists live members whose state has not reached this node
	// yet (they joined a moment ago). Their claims are unknown, so a shard
	// that looks unclaimed may still be read by one of them.
	Unsynced []string
}

// AckedBy reports whether every other live member has acknowledged this
// node's state at ask: their latest states, in this view, were made after
// they saw it.
func (v View) AckedBy(ask uint64) bool {
	if len(v.Unsynced) > 0 {
		return false
	}
	for name, st := range v.Nodes {
		if name != v.Self && st.Acks[v.Self] < ask {
			return false
		}
	}
	return true
}

// Member states reported by Members.
const (
	// StateAlive: memberlist lists the member and nothing is known against it.
	StateAlive = "alive"
	// StateSuspect: this node's last probe of the member failed and the
	// member has not answered a probe of this node since. memberlist does
	// not expose suspicions raised by other nodes.
	StateSuspect = "suspect"
	// StateLeft: the member announced it is leaving; memberlist has not
	// reported it gone yet.
	StateLeft = "left"
	// StateDead is never listed: a member that memberlist declares dead (or
	// gone after leaving) is forgotten at once, so that no state of it
	// lingers. It exists for callers that keep their own history.
	StateDead = "dead"
)

// Member is one memberlist member as this node sees it.
type Member struct {
	Name     string
	Addr     string // gossip host:port
	GRPCAddr string
	State    string // StateAlive, StateSuspect or StateLeft
}

// record is one node's state with its version. Versions of one node only
// grow: a record replaces another only if its version is higher. A version
// is max(previous+1, wall clock in ns), so a restarted process (which lost
// its counter) still outranks what its previous run gossiped.
type record struct {
	Version uint64    `json:"version"`
	State   NodeState `json:"state"`
}

// member is what the table keeps about one memberlist member.
type member struct {
	node     memberlist.Node // a copy, without Meta; what SendReliable needs
	grpcAddr string          // from the node's metadata
	leaving  bool            // it announced its departure: ignore its state
	suspect  bool            // see StateSuspect
}

// table is the cluster's knowledge: the live members as memberlist reports
// them, the newest state of each, and which members are owed this node's
// state. It holds no lock: Cluster.mu guards it. Its invariant keeps state
// bounded: states and owed only have keys that are in members, so a member
// that memberlist reports gone leaves nothing behind.
type table struct {
	self    string
	local   record
	members map[string]*member
	states  map[string]record // other members' states
	owed    map[string]bool   // member -> ask it to answer with its own state
	// former members' gossip addresses, and when they went: a node left
	// alone tries them as well as its seeds, for a while.
	former map[string]former
}

type former struct {
	addr string
	gone time.Time
}

// formerTTL is how long a departed member's address is remembered.
const formerTTL = 10 * time.Minute

func newTable(self, grpcAddr string) *table {
	return &table{
		self:    self,
		local:   record{State: NodeState{Name: self, GRPCAddr: grpcAddr, Subscriptions: map[string]SubscriptionState{}}},
		members: map[string]*member{},
		states:  map[string]record{},
		owed:    map[string]bool{},
		former:  map[string]former{},
	}
}

// bump gives the local state a new version and owes it to every member.
func (t *table) bump(now time.Time) {
	t.local.Version = max(t.local.Version+1, uint64(now.UnixNano()))
	for name := range t.members {
		t.owe(name, false)
	}
}

// owe records that a live member is owed this node's state; wantReply asks
// it to answer with its own. It reports whether the member can be sent to.
func (t *table) owe(name string, wantReply bool) bool {
	m, ok := t.members[name]
	if !ok || name == t.self || m.leaving {
		return false
	}
	t.owed[name] = t.owed[name] || wantReply
	return true
}

func (t *table) setLocal(subs map[string]SubscriptionState, now time.Time) {
	st := t.local.State
	st.Subscriptions = cloneSubs(subs)
	t.local.State = st
	t.refreshObjections()
	t.bump(now)
}

func (t *table) setDraining(draining bool, now time.Time) {
	t.local.State.Draining = draining
	t.bump(now)
}

// join records a member memberlist reported alive. A new member is owed
// this node's state with a request to answer with its own: whichever of two
// nodes learns of the other last thus still gets its state at once, even
// if the other's first send arrived before memberlist reported it.
func (t *table) join(n *memberlist.Node, grpcAddr string) (isNew bool) {
	node := *n
	node.Addr = slices.Clone(n.Addr)
	node.Meta = nil
	if m, ok := t.members[n.Name]; ok {
		m.node, m.grpcAddr = node, grpcAddr // a metadata or address update
		return false
	}
	t.members[n.Name] = &member{node: node, grpcAddr: grpcAddr}
	delete(t.former, n.Name)
	if n.Name != t.self {
		t.owed[n.Name] = true
	}
	return true
}

// gone forgets a member and everything about it. wasLeaving tells a
// graceful departure from a death (memberlist reports both alike).
func (t *table) gone(name string) (known, wasLeaving bool) {
	if name == t.self {
		return false, false
	}
	m, known := t.members[name]
	if known {
		wasLeaving = m.leaving
		now := time.Now()
		for n, f := range t.former {
			if now.Sub(f.gone) > formerTTL {
				delete(t.former, n)
			}
		}
		t.former[name] = former{addr: m.node.Address(), gone: now}
	}
	delete(t.members, name)
	delete(t.states, name)
	delete(t.owed, name)
	if t.refreshObjections() {
		t.bump(time.Now())
	}
	if _, ok := t.local.State.Acks[name]; ok {
		acks := maps.Clone(t.local.State.Acks) // records are never modified once stored
		delete(acks, name)
		t.local.State.Acks = acks
	}
	return known, wasLeaving
}

// markLeaving drops a member's state when it announces its departure, and
// ignores any copy of it that anti-entropy brings back until memberlist
// reports the member gone.
func (t *table) markLeaving(name string) bool {
	m, ok := t.members[name]
	if !ok || name == t.self || m.leaving {
		return false
	}
	m.leaving = true
	delete(t.states, name)
	delete(t.owed, name)
	if t.refreshObjections() {
		t.bump(time.Now())
	}
	return true
}

// setSuspect records this node's own suspicion of a member.
func (t *table) setSuspect(name string, suspect bool) {
	if m, ok := t.members[name]; ok {
		m.suspect = suspect
	}
}

// mergeResult is what merge did.
type mergeResult struct {
	accepted int // records taken
	// outranked: a record claimed to be a newer version of this node
	// (another process with the same name, or a previous run of this one);
	// the local version jumped past it.
	outranked bool
	// acked: a member asked for an acknowledgement (NodeState.Ask) that
	// the local state now gives.
	acked bool
}

// announce says whether the local state changed and should be sent again.
func (r mergeResult) announce() bool { return r.outranked || r.acked }

// merge keeps the records that are newer than what the table holds, and
// only for live members that are not leaving: a record relayed by another
// node about a member this node already saw die must not bring it back.
func (t *table) merge(recs []record, now time.Time) mergeResult {
	var res mergeResult
	for _, r := range recs {
		name := r.State.Name
		if name == "" {
			continue
		}
		if name == t.self {
			if r.Version > t.local.Version { // equal: our own record echoed back
				t.local.Version = r.Version
				t.bump(now)
				res.outranked = true
			}
			continue
		}
		m, ok := t.members[name]
		if !ok || m.leaving {
			continue
		}
		if cur, ok := t.states[name]; ok && r.Version <= cur.Version {
			continue
		}
		if r.State.Subscriptions == nil {
			r.State.Subscriptions = map[string]SubscriptionState{}
		}
		t.states[name] = r
		res.accepted++
		if r.State.Ask > t.local.State.Acks[name] {
			acks := maps.Clone(t.local.State.Acks) // records are never modified once stored
			if acks == nil {
				acks = map[string]uint64{}
			}
			acks[name] = r.State.Ask
			t.local.State.Acks = acks
			res.acked = true
		}
	}
	if res.accepted > 0 && t.refreshObjections() {
		res.acked = true // an objection, like an acknowledgement, must go out
	}
	if res.acked {
		t.bump(now) // the acknowledgement is the new local state
	}
	return res
}

// records returns every known record, this node's first: the anti-entropy
// payload. Records are never modified once stored, so sharing them is safe.
func (t *table) records() []record {
	out := make([]record, 0, 1+len(t.states))
	out = append(out, t.local)
	for _, r := range t.states {
		out = append(out, r)
	}
	return out
}

// takeOwed returns the members owed this node's state that the sender may
// contact now (not busy), and clears their debt.
func (t *table) takeOwed(busy map[string]bool) (targets []memberlist.Node, wantReply []bool) {
	for name, reply := range t.owed {
		if busy[name] {
			continue
		}
		m, ok := t.members[name]
		delete(t.owed, name)
		if !ok {
			continue
		}
		targets = append(targets, m.node)
		wantReply = append(wantReply, reply)
	}
	return targets, wantReply
}

func (t *table) view() View {
	v := View{Self: t.self, Nodes: make(map[string]NodeState, 1+len(t.states))}
	v.Nodes[t.self] = cloneNode(t.local.State)
	for name, r := range t.states {
		v.Nodes[name] = cloneNode(r.State)
	}
	for name, m := range t.members {
		if _, ok := v.Nodes[name]; !ok && !m.leaving {
			v.Unsynced = append(v.Unsynced, name)
		}
	}
	sort.Strings(v.Unsynced)
	return v
}

func (t *table) memberList() []Member {
	out := make([]Member, 0, len(t.members))
	for name, m := range t.members {
		st := StateAlive
		switch {
		case m.leaving:
			st = StateLeft
		case m.suspect:
			st = StateSuspect
		}
		grpc := m.grpcAddr
		if grpc == "" {
			grpc = t.states[name].State.GRPCAddr
		}
		out = append(out, Member{Name: name, Addr: m.node.Address(), GRPCAddr: grpc, State: st})
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// equalSubs says whether two subscription maps hold the same states.
func equalSubs(a, b map[string]SubscriptionState) bool {
	return maps.EqualFunc(a, b, func(x, y SubscriptionState) bool {
		return slices.Equal(x.Claims, y.Claims) && slices.Equal(x.Intents, y.Intents) &&
			slices.EqualFunc(x.Subscribers, y.Subscribers, func(p, q SubscriberInfo) bool {
				return p.ID == q.ID && p.OpenedAt.Equal(q.OpenedAt) && slices.Equal(p.Topics, q.Topics)
			})
	})
}

func cloneNode(n NodeState) NodeState {
	n.Subscriptions = cloneSubs(n.Subscriptions)
	n.Acks = maps.Clone(n.Acks)
	if n.Objections != nil {
		objections := make(map[string][]string, len(n.Objections))
		for sub, shards := range n.Objections {
			objections[sub] = slices.Clone(shards)
		}
		n.Objections = objections
	}
	return n
}

func cloneSubs(subs map[string]SubscriptionState) map[string]SubscriptionState {
	out := make(map[string]SubscriptionState, len(subs))
	for name, s := range subs {
		c := SubscriptionState{Claims: slices.Clone(s.Claims), Intents: slices.Clone(s.Intents)}
		if s.Subscribers != nil {
			c.Subscribers = make([]SubscriberInfo, len(s.Subscribers))
			for i, sub := range s.Subscribers {
				sub.Topics = slices.Clone(sub.Topics)
				c.Subscribers[i] = sub
			}
		}
		out[name] = c
	}
	return out
}
