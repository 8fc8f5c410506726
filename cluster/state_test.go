package cluster

import (
	"log/slog"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mlNode(name string) *memberlist.Node {
	return &memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 7946}
}

func rec(name string, version uint64, claims ...string) record {
	return record{Version: version, State: NodeState{Name: name, Subscriptions: map[string]SubscriptionState{"s": {Claims: claims}}}}
}

func TestMergeTakesOnlyNewerStatesOfLiveMembers(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newTable("self", "")
	tb.join(mlNode("self"), "")
	tb.join(mlNode("a"), "")

	n := tb.merge([]record{rec("a", 10, "0")}, now).accepted
	require.Equal(t, 1, n)
	n = tb.merge([]record{rec("a", 9, "old")}, now).accepted
	assert.Equal(t, 0, n, "older version ignored")
	n = tb.merge([]record{rec("a", 10, "same")}, now).accepted
	assert.Equal(t, 0, n, "same version ignored")
	assert.Equal(t, []string{"0"}, tb.states["a"].State.Subscriptions["s"].Claims)

	n = tb.merge([]record{rec("a", 11, "1")}, now).accepted
	assert.Equal(t, 1, n)
	assert.Equal(t, []string{"1"}, tb.states["a"].State.Subscriptions["s"].Claims)

	n = tb.merge([]record{rec("stranger", 5), {Version: 7}}, now).accepted
	assert.Equal(t, 0, n, "states of non-members and nameless states ignored")
	assert.NotContains(t, tb.states, "stranger")
}

func TestGoneAndLeavingMembersLeaveNothingBehind(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newTable("self", "")
	tb.join(mlNode("a"), "")
	tb.join(mlNode("b"), "")
	tb.merge([]record{rec("a", 1), rec("b", 1)}, now)

	require.True(t, tb.markLeaving("a"))
	assert.NotContains(t, tb.states, "a", "a leaving member's state goes at once")
	n := tb.merge([]record{rec("a", 2)}, now).accepted
	assert.Equal(t, 0, n, "anti-entropy must not bring a leaving member back")
	known, left := tb.gone("a")
	assert.True(t, known)
	assert.True(t, left)

	tb.owe("b", true)
	known, left = tb.gone("b")
	assert.True(t, known)
	assert.False(t, left, "a death")
	n = tb.merge([]record{rec("b", 3)}, now).accepted
	assert.Equal(t, 0, n, "a dead member's state relayed by others is ignored")

	assert.Empty(t, tb.members)
	assert.Empty(t, tb.states)
	assert.Empty(t, tb.owed)
	known, _ = tb.gone("never-seen")
	assert.False(t, known)
}

func TestLocalVersionOutranksItsPreviousRun(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newTable("self", "")
	tb.join(mlNode("a"), "")
	tb.bump(now)
	v := tb.local.Version
	require.Equal(t, uint64(now.UnixNano()), v, "versions start at the clock, so a restart outranks its previous run")
	tb.bump(now)
	require.Equal(t, v+1, tb.local.Version, "and grow even if the clock does not")
	v++

	outranked := tb.merge([]record{rec("self", v-5), rec("self", v)}, now).outranked
	assert.False(t, outranked, "older records and this node's own current one, echoed back, change nothing")
	assert.Equal(t, v, tb.local.Version)
	clear(tb.owed)
	outranked = tb.merge([]record{rec("self", v+100)}, now).outranked
	assert.True(t, outranked)
	assert.Greater(t, tb.local.Version, v+100, "the local version jumps past a newer one seen for this name")
	assert.Contains(t, tb.owed, "a", "and is announced again")
}

func TestJoinOwesStateWithReplyRequest(t *testing.T) {
	tb := newTable("self", "")
	tb.join(mlNode("self"), "")
	assert.Empty(t, tb.owed, "nothing is owed to this node itself")
	tb.join(mlNode("a"), "a:50051")
	assert.Equal(t, map[string]bool{"a": true}, tb.owed)
	tb.bump(time.Now())
	assert.Equal(t, map[string]bool{"a": true}, tb.owed, "a later change keeps the reply request")

	targets, replies := tb.takeOwed(map[string]bool{"a": true})
	assert.Empty(t, targets, "a member with a send in flight waits")
	assert.Empty(t, replies)
	targets, replies = tb.takeOwed(nil)
	require.Len(t, targets, 1)
	assert.Equal(t, "a", targets[0].Name)
	assert.Equal(t, []bool{true}, replies)
	assert.Empty(t, tb.owed)

	m := tb.memberList()
	require.Len(t, m, 2)
	assert.Equal(t, Member{Name: "a", Addr: "127.0.0.1:7946", GRPCAddr: "a:50051", State: StateAlive}, m[0])
}

func TestViewIsADeepCopy(t *testing.T) {
	tb := newTable("self", "g")
	in := map[string]SubscriptionState{"s": {
		Subscribers: []SubscriberInfo{{ID: "x", Topics: []string{"t"}}},
		Claims:      []string{"0"},
	}}
	tb.setLocal(in, time.Now())
	in["s"].Claims[0] = "changed by caller"

	v := tb.view()
	v.Nodes["self"].Subscriptions["s"].Subscribers[0].Topics[0] = "changed"
	v.Nodes["self"].Subscriptions["s"].Claims[0] = "changed"
	delete(v.Nodes["self"].Subscriptions, "s")

	again := tb.view()
	s := again.Nodes["self"].Subscriptions["s"]
	assert.Equal(t, []string{"0"}, s.Claims)
	assert.Equal(t, []string{"t"}, s.Subscribers[0].Topics)
	assert.Equal(t, "g", again.Nodes["self"].GRPCAddr)
}

func TestViewListsMembersWithoutStateAsUnsynced(t *testing.T) {
	tb := newTable("self", "")
	tb.join(mlNode("self"), "")
	tb.join(mlNode("b"), "")
	tb.join(mlNode("a"), "")
	tb.merge([]record{rec("b", 1)}, time.Now())
	v := tb.view()
	assert.Equal(t, []string{"a"}, v.Unsynced)
	assert.Equal(t, []string{"b", "self"}, keys(v.Nodes))
}

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4:5\n", slog.LevelDebug, "Stream connection from=1.2.3.4:5"},
		{"[WARN] memberlist: Refuting a suspect message (from: b)\n", slog.LevelWarn, "Refuting a suspect message (from: b)"},
		{"[ERR] memberlist: Failed to send gossip\n", slog.LevelError, "Failed to send gossip"},
		{"[ERROR] memberlist: x\n", slog.LevelError, "x"},
		{"Err: Could not set the deadline\n", slog.LevelInfo, "Err: Could not set the deadline"},
	}
	for _, tt := range tests {
		level, msg := parseLogLine(tt.line)
		assert.Equal(t, tt.level, level, tt.line)
		assert.Equal(t, tt.msg, msg, tt.line)
	}
	name, ok := suspectOf("Suspect node-b has failed, no acks received")
	assert.True(t, ok)
	assert.Equal(t, "node-b", name)
	_, ok = suspectOf("Marking node-b as failed, suspect timeout reached (0 peer confirmations)")
	assert.False(t, ok)
	accusation, ok := refutationOf("Refuting a dead message (from: node-b)")
	assert.True(t, ok)
	assert.Equal(t, "dead", accusation)
}

func keys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
