package cluster

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Standing is whether this node may act on its claims: read the shards it
// claims, deliver their messages and save their positions. The other
// members take a node's shards over only after they declare it dead, which
// takes at least a probe round and the suspicion timeout; the node gives
// its standing up well before that can happen:
//
//   - when this process did not run for longer than FreezeBound (it was
//     frozen, by SIGSTOP, a VM pause or a long stall): the monotonic clock
//     jumped between two ticks of the watchdog, or since the last tick;
//   - when it has heard nothing from any other member (a probe answer, a
//     probe of it, a state) for longer than ContactBound: it may be cut
//     off;
//   - when another member suspected it or declared it dead (memberlist
//     makes it refute that).
//
// It regains its standing only once every live member has acknowledged its
// state again (View.AckedBy), so that it sees their claims, made after they
// saw its own, before it acts on its claims again. A node left alone after
// losing its standing waits AloneGrace more, the time the other side of a
// split takes to declare it dead and claim its shards, so that it sees
// their fences when it confirms its shards; and it first tries to join its
// seeds and the members it knew, since after a freeze its own failure
// detector may have declared live members dead. Standing is checked synchronously,
// from the monotonic clock, so a goroutine that runs first after a freeze
// already sees it lost.
type standing struct {
	base        time.Time
	lastTick    atomic.Int64  // ns since base, by the watchdog
	lastContact atomic.Int64  // ns since base; 0: never
	others      atomic.Int32  // live members other than this one
	ok          atomic.Bool   // regained since the last loss
	epoch       atomic.Uint64 // losses so far
	suspected   atomic.Bool   // accused since the watchdog last looked
	lonelyJoin  atomic.Int64  // ns since base when a join attempt began that found nobody

	freeze, contactBound, aloneGrace time.Duration
}

func newStanding(cfg Config) *standing {
	s := &standing{
		base:         time.Now(),
		freeze:       cfg.FreezeBound,
		contactBound: cfg.ContactBound,
		aloneGrace:   cfg.AloneGrace,
	}
	s.ok.Store(true)
	return s
}

func (s *standing) now() int64 { return int64(time.Since(s.base)) }

// contact records word from another member.
func (s *standing) contact() { s.lastContact.Store(s.now()) }

// holds is the synchronous check: no loss pending, no freeze since the
// watchdog last ran, contact recent enough.
func (s *standing) holds() bool {
	if !s.ok.Load() {
		return false
	}
	now := s.now()
	if time.Duration(now-s.lastTick.Load()) > s.freeze {
		return false
	}
	return s.others.Load() == 0 || time.Duration(now-s.lastContact.Load()) <= s.contactBound
}

// Standing reports whether this node may act on its claims now, and the
// number of times it has lost its standing so far: a caller that saw a
// smaller number must re-check its claims (confirm their fences) before it
// acts on them again.
func (c *Cluster) Standing() (bool, uint64) {
	return c.standing.holds(), c.standing.epoch.Load()
}

// Ask gives this node's state a new version that asks every member to
// acknowledge it, and returns that version; View.AckedBy tells when they
// have. Call it after publishing the intents to be acknowledged.
func (c *Cluster) Ask() uint64 {
	c.mu.Lock()
	v := c.t.ask(time.Now())
	c.mu.Unlock()
	c.signal()
	c.kick()
	return v
}

// watchdog ticks until the cluster stops, losing and regaining standing.
func (c *Cluster) watchdog() {
	defer c.wg.Done()
	s := c.standing
	every := min(s.freeze/4, 50*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var (
		ask        uint64 // asked at the last loss
		lostAt     int64
		withPeers  bool  // others were around at or since the loss
		aloneSince int64 // 0: not alone
	)
	s.lastTick.Store(s.now())
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		now := s.now()
		gap := time.Duration(now - s.lastTick.Load())
		s.lastTick.Store(now)
		others := s.others.Load()
		switch {
		case others > 0:
			aloneSince = 0
			withPeers = true
		case aloneSince == 0:
			aloneSince = now
		}
		var reason string
		cutOff := false // the reason is silence, not an event
		switch {
		case gap > s.freeze:
			reason = fmt.Sprintf("this process did not run for %s (frozen or stalled)", gap.Round(time.Millisecond))
		case s.suspected.Swap(false):
			reason = "another member suspected this node, or declared it dead"
		case others > 0 && time.Duration(now-s.lastContact.Load()) > s.contactBound:
			reason = fmt.Sprintf("no word from any other member for %s", time.Duration(now-s.lastContact.Load()).Round(time.Millisecond))
			cutOff = true
		}
		if reason != "" {
			lost := s.ok.Swap(false)
			if lost {
				s.epoch.Add(1)
				lostAt, withPeers = now, others > 0
				c.met.standingLosses.Inc()
				c.log.Warn("standing lost: this node stops delivering and saving until the cluster acknowledges it again", "why", reason)
			}
			if lost || !cutOff {
				// Ask every member to acknowledge a state made after this
				// moment. While silence lasts the last ask stands: the
				// members answer it when they hear from this node.
				c.mu.Lock()
				ask = c.t.ask(time.Now())
				c.mu.Unlock()
				c.signal()
				c.kick()
			}
			continue
		}
		if s.ok.Load() {
			continue
		}
		c.mu.Lock()
		acked := c.t.ackedBy(ask)
		c.mu.Unlock()
		if !acked {
			continue
		}
		if others == 0 && withPeers && (time.Duration(now-aloneSince) < s.aloneGrace || s.lonelyJoin.Load() < aloneSince) {
			// Alone after being in doubt: the others may only seem dead
			// (this node's own timers ran out while it was frozen). Only a
			// join attempt that found nobody, and the grace, tell.
			continue
		}
		s.ok.Store(true)
		c.log.Info("standing regained: every member acknowledged this node again", "after", time.Duration(now-lostAt).Round(time.Millisecond))
		c.signal()
	}
}
