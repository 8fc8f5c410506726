// Package cluster makes streamgate nodes a cluster: each node gossips its
// gRPC address and, per subscription, its subscribers and the shards it
// claims, and every node sees the union (View).
//
// Membership and failure detection are hashicorp/memberlist's. Its user
// broadcasts are not relayed and its metadata and packets are small (512
// and ~1400 bytes), so node state travels on two other paths instead:
//
//   - Direct sends. Each change of this node's state gets a new version and
//     is sent whole to every other member over memberlist's TCP path
//     (SendReliable) by a sender goroutine that coalesces bursts per member.
//     A member that appears is sent this node's state with a request to
//     answer with its own, so joins sync both ways at once.
//   - Anti-entropy. memberlist's periodic push/pull (PushPullInterval)
//     carries every state this node knows, with versions, so an update that
//     a send missed still arrives within a few intervals.
//
// A state is taken only if its version is newer and only for a live member
// that has not announced it is leaving. A member that memberlist reports
// gone is forgotten entirely, so the state stays bounded and a dead node's
// claims vanish when it is declared dead.
//
// Concurrency: memberlist calls the delegates from its own goroutines,
// concurrently, and the event delegate with its node lock held. They only
// update the table under Cluster.mu and signal channels without blocking;
// mu is never held while calling memberlist, so the lock order is always
// memberlist's, then mu. The node's own goroutine learns of changes from
// Changes and reads View.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// deadNodeReclaimTime lets a node that died come back under its name from
// another address (a restarted pod gets a new IP) after this long, instead
// of after memberlist's GossipToTheDeadTime (30 s); names are unique, so a
// reclaim is a restart, not an impostor.
const deadNodeReclaimTime = 5 * time.Second

// Cluster is this node's membership. Its methods are safe for concurrent
// use.
type Cluster struct {
	cfg Config
	log *slog.Logger
	ml  *memberlist.Memberlist
	met *metrics

	changes chan struct{} // capacity 1: View may have changed
	wake    chan struct{} // capacity 1: the sender has work
	sent    chan string   // a send to this member finished

	ctx    context.Context // cancelled when the cluster stops
	cancel context.CancelFunc
	wg     sync.WaitGroup // the join and send loops, and every send

	mu      sync.Mutex // guards t and stopped; never held while calling memberlist
	t       *table
	stopped bool

	standing *standing // whether this node may act on its claims

	// contacted: no seeds are configured, or a Join reached at least one
	// (this node itself counts: the first node of a cluster seeds itself).
	// Until then the node may be cut off from a running cluster, and
	// Joined says so.
	contacted atomic.Bool

	// dropSends, set only by tests, makes the direct sends to the members
	// it names fail, to show that push/pull repairs them.
	dropSends atomic.Pointer[func(member string) bool]
}

// message is the wire format of everything this package sends: direct
// sends (NotifyMsg) and push/pull state (LocalState, MergeRemoteState).
// Kinds a node does not know are ignored, for rolling upgrades.
type message struct {
	Kind      string   `json:"kind"`
	From      string   `json:"from"`
	WantReply bool     `json:"want_reply,omitempty"` // answer with your own state
	Records   []record `json:"records,omitempty"`
}

const (
	kindState   = "state"   // the sender's own record
	kindSync    = "sync"    // every record the sender knows (push/pull)
	kindLeaving = "leaving" // the sender is leaving: drop its state now
)

// Start starts memberlist on the configured address and, if seeds are
// given, a background loop that joins them: Start does not wait for the
// cluster.
func Start(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.derived()
	cfg.Join = slices.Clone(cfg.Join)
	cfg.SecretKey = slices.Clone(cfg.SecretKey)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("node", cfg.NodeName) // several nodes may share a process (tests)

	advertise, err := resolveAdvertise(cfg.AdvertiseAddr, cfg.TCPTimeout)
	if err != nil {
		return nil, err
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:      cfg,
		log:      logger.With("component", "cluster"),
		met:      met,
		changes:  make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		sent:     make(chan string),
		t:        newTable(cfg.NodeName, cfg.GRPCAddr),
		standing: newStanding(cfg),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.t.bump(time.Now())

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = advertise
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort // memberlist replaces it when BindPort is 0
	}
	mc.SecretKey = cfg.SecretKey
	mc.TCPTimeout = cfg.TCPTimeout
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.DeadNodeReclaimTime = deadNodeReclaimTime
	mc.Logger = log.New(&logWriter{log: logger.With("component", "memberlist"), onSuspect: c.suspected, onRefute: c.refuted}, "", 0)
	d := &delegate{c: c}
	mc.Delegate, mc.Events, mc.Ping = d, d, d
	if cfg.WrapTransport != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{cfg.BindAddr}, BindPort: cfg.BindPort, Logger: mc.Logger})
		if err != nil {
			met.unregister()
			return nil, fmt.Errorf("cluster: start memberlist on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
		}
		if mc.BindPort == 0 {
			mc.BindPort, mc.AdvertisePort = nt.GetAutoBindPort(), nt.GetAutoBindPort()
		}
		mc.Transport = cfg.WrapTransport(nt)
	}

	// memberlist.Create already calls the delegates (NodeMeta, NotifyJoin
	// for this node), so c must be complete but for c.ml, which they never
	// use.
	ml, err := memberlist.Create(mc)
	if err != nil {
		met.unregister()
		return nil, fmt.Errorf("cluster: start memberlist on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	c.ml = ml

	c.wg.Add(3)
	go c.sendLoop()
	go c.watchdog()
	go c.joinLoop()
	if len(cfg.Join) == 0 {
		c.contacted.Store(true)
	}
	c.log.Info("cluster started", "gossip_addr", c.LocalAddr(), "seeds", cfg.Join, "encrypted", len(cfg.SecretKey) > 0)
	return c, nil
}

// resolveAdvertise turns a host name into an IP, which is all memberlist
// accepts, preferring IPv4.
func resolveAdvertise(host string, timeout time.Duration) (string, error) {
	if host == "" || net.ParseIP(host) != nil {
		return host, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("cluster: resolve AdvertiseAddr %q: %w", host, errors.Join(err, errNoAddress))
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	return ips[0].String(), nil
}

var errNoAddress = errors.New("no address found")

// SetLocal replaces this node's subscriptions (the map is copied), gives
// the state a new version and has the sender spread it to every member.
//
// A state equal to the current one changes nothing: no new version, no
// send, no signal. (The node republishes after every view it applies; a
// new version each time would make its own view change, and so on, in a
// loop.)
func (c *Cluster) SetLocal(subs map[string]SubscriptionState) {
	c.mu.Lock()
	if c.stopped || equalSubs(c.t.local.State.Subscriptions, subs) {
		c.mu.Unlock()
		return
	}
	c.t.setLocal(subs, time.Now())
	c.mu.Unlock()
	c.signal()
	c.kick()
}

// SetDraining marks this node as draining (shutting down) in its state,
// so that other nodes stop sending it new subscribers' shards.
func (c *Cluster) SetDraining(draining bool) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.t.setDraining(draining, time.Now())
	c.mu.Unlock()
	c.signal()
	c.kick()
}

// View returns a deep copy of every live member's state.
func (c *Cluster) View() View {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t.view()
}

// Joined reports whether the node has reached its cluster: no seeds are
// configured, or some seed answered at least once (this node itself among
// them: the first node of a cluster). A node that has not must not act on
// a view of itself alone: a running cluster may be out of its sight.
func (c *Cluster) Joined() bool { return c.contacted.Load() }

// Changes returns a capacity-1 channel that receives a value when the View
// may have changed. Signals are coalesced: after a receive, read View for
// the latest state.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

// Members lists the live members, this node included, sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t.memberList()
}

// LocalAddr is the gossip host:port other nodes reach this node at (the
// advertised address; by default the bound one). Tests use it as a seed.
func (c *Cluster) LocalAddr() string {
	return c.ml.LocalNode().Address()
}

// Leave departs gracefully within timeout (non-positive: TCPTimeout): it
// tells every member it is leaving, so they drop this node's state (and
// its claims) at once rather than when memberlist's leave message reaches
// them, then leaves memberlist and shuts down. Release claims before
// calling it. It also waits for a join attempt in progress, which DNS and
// TCPTimeout bound. Calls after the first stop return nil.
func (c *Cluster) Leave(timeout time.Duration) error {
	if !c.beginStop() {
		return nil
	}
	if timeout <= 0 {
		timeout = c.cfg.TCPTimeout
	}
	deadline := time.Now().Add(timeout)
	c.cancel()
	c.announceLeaving(deadline)
	err := c.ml.Leave(max(time.Until(deadline), time.Millisecond))
	if err != nil {
		err = fmt.Errorf("cluster: leave: %w", err)
	}
	if serr := c.ml.Shutdown(); serr != nil {
		err = errors.Join(err, fmt.Errorf("cluster: shutdown: %w", serr))
	}
	c.finishStop("left")
	return err
}

// Kill stops without leaving, as if the process died: other nodes notice
// by failure detection. For tests.
func (c *Cluster) Kill() {
	if !c.beginStop() {
		return
	}
	c.cancel()
	_ = c.ml.Shutdown()
	c.finishStop("killed")
}

func (c *Cluster) beginStop() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return false
	}
	c.stopped = true
	return true
}

// finishStop waits for every goroutine this package started. memberlist's
// own goroutines end with its Shutdown (some a moment later).
func (c *Cluster) finishStop(how string) {
	c.wg.Wait()
	c.met.unregister()
	c.log.Info("cluster stopped", "how", how)
}

// signal tells the node's goroutine that View may have changed. It never
// blocks: one pending signal stands for any number of changes.
func (c *Cluster) signal() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// kick wakes the sender without blocking.
func (c *Cluster) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// receive handles a message from another node: a direct send or a
// push/pull state. json.Unmarshal copies what it keeps, so the caller's
// buffer may be reused afterwards (memberlist reuses NotifyMsg's).
func (c *Cluster) receive(b []byte) {
	var msg message
	if err := json.Unmarshal(b, &msg); err != nil {
		c.log.Warn("undecodable message", "err", err, "bytes", len(b))
		return
	}
	switch msg.Kind {
	case kindState, kindSync:
		c.standing.contact()
		c.mu.Lock()
		res := c.t.merge(msg.Records, time.Now())
		replying := msg.WantReply && c.t.owe(msg.From, false)
		c.mu.Unlock()
		if res.accepted > 0 {
			c.met.updates.Add(float64(res.accepted))
			c.signal()
		}
		if res.outranked {
			c.log.Warn("another node gossiped a newer state under this node's name; is the name used twice?")
		}
		if res.announce() || replying {
			c.kick()
		}
	case kindLeaving:
		c.mu.Lock()
		changed := c.t.markLeaving(msg.From)
		c.standing.others.Store(int32(c.t.others()))
		c.mu.Unlock()
		if changed {
			c.log.Info("member is leaving", "member", msg.From)
			c.signal()
			c.kick()
		}
	}
}

// suspected is called (from memberlist's log line) when this node's probe
// of a member failed and memberlist suspects it.
func (c *Cluster) suspected(name string) {
	c.met.suspicions.Inc()
	c.mu.Lock()
	c.t.setSuspect(name, true)
	c.mu.Unlock()
}

// refuted is called (from memberlist's log line) when this node refuted
// another's accusation. After a refuted death the others had dropped this
// node's state, claims included, until the refutation reached them; a
// death learned through push/pull is refuted as a mere suspicion, so only
// gossiped deaths are logged here.
func (c *Cluster) refuted(accusation string) {
	c.met.refutations.WithLabelValues(accusation).Inc()
	c.standing.suspected.Store(true)
	if accusation == "dead" {
		c.log.Warn("another node declared this one dead; refuted (is this node overloaded?)")
	}
}
