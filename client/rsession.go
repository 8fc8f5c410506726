package client

// The ack batcher of one Receive stream: handlers add acks and nacks from
// any goroutine; one goroutine per stream sends them in batches until the
// stream closes or breaks. The same goroutine manages leases: while
// messages are outstanding (queued or being handled), it extends their ack
// deadline before it passes, for up to MaxExtension after their delivery.

import (
	"sync"
	"sync/atomic"
	"time"
)

// rsession is one stream of a Receive with its ack batcher.
type rsession struct {
	sub       *Subscriber
	size      int
	dead      chan struct{} // closed when the stream is gone: acks are dropped
	stopAcker chan struct{} // closed to flush and stop the batcher
	ackerDone chan struct{}
	kick      chan struct{} // the batch got its first id, or filled up
	delivered atomic.Int64  // messages received
	settled   atomic.Int64  // acks and nacks the stream took
	deadOnce  sync.Once

	mu    sync.Mutex // guards acks, nacks, outstanding and gone
	acks  []string
	nacks []string
	gone  bool
	// outstanding: delivered and not yet acked or nacked, by id, with the
	// time of delivery (only when leases are managed).
	outstanding map[string]time.Time
	lease       time.Duration // the server's ack deadline; 0: not managed
	maxExt      time.Duration
}

func newRSession(sub *Subscriber, set ReceiveSettings) *rsession {
	s := &rsession{sub: sub, size: set.AckBatchSize, dead: make(chan struct{}),
		stopAcker: make(chan struct{}), ackerDone: make(chan struct{}), kick: make(chan struct{}, 1)}
	if sub.AckDeadline > 0 && set.MaxExtension > 0 {
		s.lease, s.maxExt = sub.AckDeadline, set.MaxExtension
		s.outstanding = map[string]time.Time{}
	}
	go s.batchAcks(set.AckBatchDelay)
	return s
}

// track records delivered messages as outstanding, for leases.
func (s *rsession) track(msgs []Received) {
	if s.outstanding == nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	for _, m := range msgs {
		s.outstanding[m.ID] = now
	}
	s.mu.Unlock()
}

// extend renews the deadline of every outstanding message delivered less
// than MaxExtension ago; older ones are left to expire.
func (s *rsession) extend() {
	now := time.Now()
	s.mu.Lock()
	ids := make([]string, 0, len(s.outstanding))
	for id, at := range s.outstanding {
		if now.Sub(at) < s.maxExt {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	for len(ids) > 0 {
		n := min(len(ids), 1000)
		if s.sub.ModifyAckDeadline(s.lease, ids[:n]...) != nil {
			return // the stream broke: its messages come back anyway
		}
		ids = ids[n:]
	}
}

// add queues an ack or nack for the batcher (handlers call it; it never
// blocks).
func (s *rsession) add(id string, nack bool) {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return // the stream is gone: the message comes back
	}
	if nack {
		s.nacks = append(s.nacks, id)
	} else {
		s.acks = append(s.acks, id)
	}
	delete(s.outstanding, id)
	n := len(s.acks) + len(s.nacks)
	s.mu.Unlock()
	if n == 1 || n >= s.size {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// nackDelayed sends a delayed nack at once, not batched: each may carry
// its own delay.
func (s *rsession) nackDelayed(id string, delay time.Duration, reason string) {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return // the stream is gone: the message comes back
	}
	delete(s.outstanding, id)
	s.mu.Unlock()
	if s.sub.NackWithDelay(min(max(delay, 0), MaxNackDelay), reason, id) == nil {
		s.settled.Add(1)
	}
}

// batchAcks sends acks and nacks in batches until stopped (after a last
// flush) or the stream is gone.
func (s *rsession) batchAcks(delay time.Duration) {
	defer close(s.ackerDone)
	timer := time.NewTimer(delay)
	timer.Stop()
	armed := false
	// Leases are renewed at a third of the deadline: two chances before
	// a message would expire.
	var renew <-chan time.Time
	if s.outstanding != nil {
		t := time.NewTicker(max(s.lease/3, 100*time.Millisecond))
		defer t.Stop()
		renew = t.C
	}
	flush := func() {
		timer.Stop()
		armed = false
		s.mu.Lock()
		acks, nacks := s.acks, s.nacks
		s.acks, s.nacks = nil, nil
		s.mu.Unlock()
		if len(acks) > 0 && s.sub.Ack(acks...) == nil {
			s.settled.Add(int64(len(acks)))
		}
		if len(nacks) > 0 && s.sub.Nack(nacks...) == nil {
			s.settled.Add(int64(len(nacks)))
		}
	}
	for {
		select {
		case <-s.kick:
			s.mu.Lock()
			n := len(s.acks) + len(s.nacks)
			s.mu.Unlock()
			switch {
			case n >= s.size:
				flush()
			case n > 0 && !armed:
				timer.Reset(delay)
				armed = true
			}
		case <-timer.C:
			flush()
		case <-renew:
			flush() // acks first: no need to extend what they settle
			s.extend()
		case <-s.stopAcker:
			flush()
			return
		case <-s.dead:
			return
		}
	}
}

// end stops taking acks: what is queued stays for a last flush.
func (s *rsession) end() {
	s.mu.Lock()
	s.gone = true
	s.mu.Unlock()
}

// close ends the stream gracefully: the last acks, then a half-close that
// the server answers by ending the stream once it applied them all.
func (s *rsession) close() error {
	s.end()
	close(s.stopAcker)
	<-s.ackerDone
	err := s.sub.Close()
	s.deadOnce.Do(func() { close(s.dead) })
	return err
}

// breakOff gives up a broken stream and counts the messages whose ack or
// nack never reached it.
func (s *rsession) breakOff() int {
	s.end()
	s.deadOnce.Do(func() { close(s.dead) })
	<-s.ackerDone
	_ = s.sub.Close()
	return int(s.delivered.Load() - s.settled.Load())
}
