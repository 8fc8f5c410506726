package cluster

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMergeAcknowledgesAnAskOnceWithANewVersion(t *testing.T) {
	now := time.Now()
	tb := newTable("self", "")
	tb.join(mlNode("self"), "")
	tb.join(mlNode("a"), "")
	r := rec("a", 10)
	r.State.Ask = 10
	v := tb.local.Version
	res := tb.merge([]record{r}, now)
	require.True(t, res.acked)
	assert.EqualValues(t, 10, tb.local.State.Acks["a"])
	assert.Greater(t, tb.local.Version, v, "the acknowledgement is a new local state")

	// The same ask again (a newer state of a with it): nothing to answer.
	v = tb.local.Version
	r2 := rec("a", 11)
	r2.State.Ask = 10
	res = tb.merge([]record{r2}, now)
	assert.False(t, res.acked)
	assert.Equal(t, v, tb.local.Version)

	// Acks of a gone member are forgotten.
	tb.gone("a")
	assert.NotContains(t, tb.local.State.Acks, "a")
}

func TestViewAckedBySaysWhetherEveryOtherMemberAcknowledged(t *testing.T) {
	v := View{Self: "s", Nodes: map[string]NodeState{
		"s": {},
		"a": {Acks: map[string]uint64{"s": 7}},
		"b": {Acks: map[string]uint64{"s": 5}},
	}}
	assert.True(t, v.AckedBy(5))
	assert.False(t, v.AckedBy(6), "b has not seen the ask at 6")
	v.Unsynced = []string{"c"}
	assert.False(t, v.AckedBy(5), "an unsynced member acknowledged nothing")
}

// A process that did not run for longer than FreezeBound (here the
// watchdog's clock is moved back, as a SIGSTOP would) loses its standing at
// once, synchronously, and regains it only after every member has
// acknowledged it again.
func TestStandingIsLostWhenTheProcessStallsAndRegainedOnceTheOthersAcknowledge(t *testing.T) {
	nodes := cluster3(t, "stand")
	a := nodes[0]
	ok, epoch := a.Standing()
	require.True(t, ok)
	require.Zero(t, epoch)

	a.standing.lastTick.Add(-int64(2 * a.cfg.derived().FreezeBound)) // as if frozen
	ok, _ = a.Standing()
	assert.False(t, ok, "lost at once, before the watchdog runs")
	took := waitFor(t, 10*time.Second, "standing regained", func() bool {
		ok, e := a.Standing()
		return ok && e == 1
	})
	t.Logf("regained %s after the stall was seen", took)
	for _, n := range nodes[1:] {
		assert.GreaterOrEqual(t, n.View().Nodes[n.cfg.NodeName].Acks[a.cfg.NodeName], a.View().Nodes[a.cfg.NodeName].Ask,
			"%s acknowledged a's latest ask", n.cfg.NodeName)
	}
	assert.Equal(t, float64(1), a.counter(t, "streamgate_cluster_standing_losses_total"))
}

// A node that hears nothing from the others (its links cut) loses its
// standing after ContactBound, before they can declare it dead; left
// alone, it regains it only after AloneGrace.
func TestStandingIsLostWhenCutOffAndRegainedAloneOnlyAfterTheGrace(t *testing.T) {
	var isolated atomic.Pointer[string] // the gossip address cut off from everyone
	wrap := func(self *string) func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		return func(tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
			return &cutTransport{NodeAwareTransport: tr, cut: func(to string) bool {
				iso := isolated.Load()
				return iso != nil && (*iso == to || *iso == *self)
			}}
		}
	}
	var addrs [3]string
	a := startNode(t, func() Config { c := testConfig("cut-a"); c.WrapTransport = wrap(&addrs[0]); return c }())
	addrs[0] = a.LocalAddr()
	nodes := []node{a}
	for i, s := range []string{"b", "c"} {
		cfg := testConfig("cut-" + s)
		cfg.Join = []string{a.LocalAddr()}
		cfg.WrapTransport = wrap(&addrs[i+1])
		n := startNode(t, cfg)
		addrs[i+1] = n.LocalAddr()
		nodes = append(nodes, n)
	}
	waitFor(t, 10*time.Second, "three nodes converge", func() bool { return allSee(nodes, names(nodes)...) })
	cfg := a.cfg.derived()
	isolated.Store(&addrs[0]) // nothing in, nothing out
	lost := waitFor(t, 10*time.Second, "standing lost", func() bool { ok, _ := a.Standing(); return !ok })
	assert.Less(t, lost, cfg.ContactBound+time.Second, "lost within the contact bound (plus probe timing)")
	alone := waitFor(t, 20*time.Second, "the others declared dead", func() bool { return a.standing.others.Load() == 0 })
	regained := waitFor(t, 20*time.Second, "standing regained alone", func() bool { ok, _ := a.Standing(); return ok })
	t.Logf("lost after %s, alone %s later, regained %s after that", lost, alone, regained)
	assert.GreaterOrEqual(t, regained+50*time.Millisecond, cfg.AloneGrace-100*time.Millisecond, "not before the grace")
}

// cutTransport drops what this node sends where cut says, and dials there
// fail: both ends of a link use one, so the link is cut both ways.
type cutTransport struct {
	memberlist.NodeAwareTransport
	cut func(to string) bool
}

func (c *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if c.cut(addr) {
		return time.Now(), nil
	}
	return c.NodeAwareTransport.WriteTo(b, addr)
}

func (c *cutTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if c.cut(addr.Addr) {
		return time.Now(), nil
	}
	return c.NodeAwareTransport.WriteToAddress(b, addr)
}

func (c *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if c.cut(addr) {
		return nil, net.ErrClosed
	}
	return c.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (c *cutTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if c.cut(addr.Addr) {
		return nil, net.ErrClosed
	}
	return c.NodeAwareTransport.DialAddressTimeout(addr, timeout)
}

// A member that knows a claim objects to another member's intent on the
// same shard, in the state that acknowledges the intent; the objection
// goes when the claim does.
func TestObjectionsNameIntentsOnShardsAnotherMemberClaims(t *testing.T) {
	now := time.Now()
	tb := newTable("self", "")
	for _, n := range []string{"self", "a", "b"} {
		tb.join(mlNode(n), "")
	}
	claimant := rec("a", 1, "t/0")
	intent := record{Version: 1, State: NodeState{Name: "b", Ask: 1, Subscriptions: map[string]SubscriptionState{"s": {Intents: []string{"t/0", "t/1"}}}}}
	res := tb.merge([]record{claimant, intent}, now)
	require.True(t, res.announce(), "the acknowledgement and objection go out")
	assert.Equal(t, map[string][]string{"s": {"t/0"}}, tb.local.State.Objections)
	assert.EqualValues(t, 1, tb.local.State.Acks["b"])

	tb.merge([]record{rec("a", 2)}, now) // a let go
	assert.Empty(t, tb.local.State.Objections)
	tb.merge([]record{rec("a", 3, "t/1")}, now)
	assert.Equal(t, map[string][]string{"s": {"t/1"}}, tb.local.State.Objections)
	tb.gone("a")
	assert.Empty(t, tb.local.State.Objections, "a dead member's claims raise no objection")
}
