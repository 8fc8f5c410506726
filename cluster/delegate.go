package cluster

import (
	"encoding/json"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. It is separate from Cluster so
// that they do not become part of Cluster's API.
//
// Contract (memberlist's): Delegate and PingDelegate methods are called
// concurrently from memberlist's goroutines, NotifyMsg from its packet and
// stream handlers; EventDelegate methods are called one at a time with
// memberlist's node lock held. So every method here only works on the
// table under Cluster.mu and signals without blocking, and none calls
// back into memberlist.
type delegate struct{ c *Cluster }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate  = (*delegate)(nil)
)

// nodeMeta is the memberlist metadata of a node: the gRPC address, so that
// Members has it as soon as memberlist reports the member, before its
// state arrives. JSON for the same reason as message.
type nodeMeta struct {
	GRPCAddr string `json:"grpc_addr,omitempty"`
}

func (d *delegate) NodeMeta(limit int) []byte {
	b, err := json.Marshal(nodeMeta{GRPCAddr: d.c.cfg.GRPCAddr})
	if err != nil || len(b) > limit { // Validate keeps it far below the limit
		return nil
	}
	return b
}

func grpcAddrOf(meta []byte) string {
	var m nodeMeta
	if len(meta) == 0 || json.Unmarshal(meta, &m) != nil {
		return ""
	}
	return m.GRPCAddr
}

func (d *delegate) NotifyMsg(b []byte) { d.c.receive(b) }

// GetBroadcasts returns nothing: memberlist's broadcasts are best-effort
// UDP and not relayed, so state goes by direct sends and push/pull.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState is this node's half of a push/pull: every record it knows.
func (d *delegate) LocalState(join bool) []byte {
	c := d.c
	c.mu.Lock()
	msg := message{Kind: kindSync, From: c.cfg.NodeName, Records: c.t.records()}
	c.mu.Unlock()
	b, err := json.Marshal(msg)
	if err != nil {
		c.log.Error("encoding state failed", "err", err)
		return nil
	}
	return b
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) { d.c.receive(buf) }

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	c := d.c
	c.mu.Lock()
	isNew := c.t.join(n, grpcAddrOf(n.Meta))
	c.met.members.Set(float64(len(c.t.members)))
	c.standing.others.Store(int32(c.t.others()))
	c.mu.Unlock()
	if isNew && n.Name != c.cfg.NodeName {
		c.log.Info("member joined", "member", n.Name, "addr", n.Address())
		c.signal()
		c.kick()
	}
}

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	c := d.c
	c.mu.Lock()
	known, left := c.t.gone(n.Name)
	c.met.members.Set(float64(len(c.t.members)))
	c.standing.others.Store(int32(c.t.others()))
	c.mu.Unlock()
	if !known {
		return
	}
	// memberlist reports a death and a departure alike (Node.State is
	// StateAlive in both); only our own leaving message tells them apart.
	reason := "dead"
	if left {
		reason = "left"
	}
	c.met.departures.WithLabelValues(reason).Inc()
	c.log.Info("member gone", "member", n.Name, "reason", reason)
	c.signal()
	c.kick() // objections may have changed
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	c := d.c
	c.mu.Lock()
	c.t.join(n, grpcAddrOf(n.Meta))
	c.mu.Unlock()
}

// AckPayload is called when this node answers another member's probe:
// word from the cluster, for standing.
func (d *delegate) AckPayload() []byte {
	d.c.standing.contact()
	return nil
}

// NotifyPingComplete is called when this node's probe of a member got a
// direct ack: the member answers again, so this node no longer suspects it.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	c := d.c
	c.standing.contact()
	c.mu.Lock()
	c.t.setSuspect(other.Name, false)
	c.mu.Unlock()
}
