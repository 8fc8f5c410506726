package cluster

import (
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// sendLoop delivers this node's state to the members that are owed it.
// Each member has at most one send in flight, so a member that does not
// answer (dead but not yet declared so: a send then takes up to
// TCPTimeout) delays nobody else; changes made meanwhile are coalesced
// into one send of the newest state when its send ends. A failed send is
// not retried: push/pull repairs it within a few PushPullIntervals.
func (c *Cluster) sendLoop() {
	defer c.wg.Done()
	busy := map[string]bool{}
	for {
		c.mu.Lock()
		targets, replies := c.t.takeOwed(busy)
		local := c.t.local
		c.mu.Unlock()

		var plain, asking []byte
		for i, node := range targets {
			b := &plain
			if replies[i] {
				b = &asking
			}
			if *b == nil {
				*b = c.encode(message{Kind: kindState, From: c.cfg.NodeName, WantReply: replies[i], Records: []record{local}})
			}
			busy[node.Name] = true
			c.wg.Add(1)
			go c.send(node, *b)
		}

		select {
		case <-c.ctx.Done():
			return // sends in flight end by themselves; Leave and Kill wait for them
		case <-c.wake:
		case name := <-c.sent:
			delete(busy, name)
		}
	}
}

// send is one direct send, owned by sendLoop and waited for by stop.
func (c *Cluster) send(node memberlist.Node, b []byte) {
	defer c.wg.Done()
	err := errDropped
	if drop := c.dropSends.Load(); drop == nil || !(*drop)(node.Name) {
		err = c.ml.SendReliable(&node, b)
	}
	if err != nil {
		c.met.sendFailures.Inc()
		c.log.Debug("sending state failed; push/pull will repair it", "member", node.Name, "err", err)
	}
	select {
	case c.sent <- node.Name:
	case <-c.ctx.Done():
	}
}

func (c *Cluster) encode(msg message) []byte {
	b, err := json.Marshal(msg)
	if err != nil { // only plain data: cannot happen
		panic("cluster: encode message: " + err.Error())
	}
	return b
}

var (
	errOnlySelf = errors.New("no seed but this node itself answered")
	errDropped  = errors.New("dropped by a test")
)

// joinLoop contacts the seeds every JoinRetryInterval while this node
// knows no other member (memberlist's Join tries each once), and every
// RejoinInterval once it does, which merges two halves of a cluster that
// declared each other dead. Joining only this node itself (it may be among
// the seeds) does not count. A node left alone also tries the members it
// knew lately: after a freeze it may have declared them dead itself, and
// its seeds may be only itself. An attempt that finds nobody is recorded
// for standing (lonelyJoin): a node regains its standing alone only after
// one.
func (c *Cluster) joinLoop() {
	defer c.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last time.Time
	failing := false
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-timer.C:
		}
		timer.Reset(c.cfg.JoinRetryInterval)
		alone := c.ml.NumMembers() <= 1
		if !alone && (c.cfg.RejoinInterval == 0 || time.Since(last) < c.cfg.RejoinInterval || len(c.cfg.Join) == 0) {
			continue
		}
		targets := c.cfg.Join
		if alone {
			c.mu.Lock()
			targets = append(slices.Clone(targets), c.t.formerAddrs()...)
			c.mu.Unlock()
		}
		if len(targets) == 0 {
			c.standing.lonelyJoin.Store(c.standing.now())
			continue
		}
		last = time.Now()
		started := c.standing.now()
		n, err := c.ml.Join(targets)
		if n > 0 && !c.contacted.Swap(true) {
			c.signal() // views taken before now said "not joined"
		}
		if err == nil && c.ml.NumMembers() > 1 {
			if alone {
				c.log.Info("joined the cluster", "answered", n, "members", c.ml.NumMembers())
			}
			failing = false
			continue
		}
		if !alone {
			c.log.Debug("rejoin failed", "err", err)
			continue
		}
		c.standing.lonelyJoin.Store(started)
		c.met.joinFailures.Inc()
		if err == nil {
			err = errOnlySelf
		}
		if !failing {
			c.log.Warn("no seed answered; retrying", "seeds", targets, "every", c.cfg.JoinRetryInterval, "err", err)
		} else {
			c.log.Debug("join failed", "err", err)
		}
		failing = true
	}
}

// announceLeaving tells every member that this node leaves, so they drop
// its state now; it waits for the sends until the deadline (those still
// running then are waited for by stop).
func (c *Cluster) announceLeaving(deadline time.Time) {
	c.mu.Lock()
	var targets []memberlist.Node
	for name, m := range c.t.members {
		if name != c.cfg.NodeName {
			targets = append(targets, m.node)
		}
	}
	c.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	b := c.encode(message{Kind: kindLeaving, From: c.cfg.NodeName})
	done := make(chan struct{}, len(targets)) // never blocks a sender
	for _, node := range targets {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := c.ml.SendReliable(&node, b); err != nil {
				c.log.Debug("announcing departure failed", "member", node.Name, "err", err)
			}
			done <- struct{}{}
		}()
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for range targets {
		select {
		case <-done:
		case <-timer.C:
			return
		}
	}
}
