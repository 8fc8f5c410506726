package testenv

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// cutter is a memberlist transport that drops what this node sends to the
// gossip addresses it is told to cut off: a network split between two
// nodes that both still reach the others.
type cutter struct {
	memberlist.NodeAwareTransport
	mu  sync.Mutex // guards cut
	cut map[string]bool
}

var errCut = errors.New("testenv: link cut")

func (c *cutter) isCut(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut[addr]
}

func (c *cutter) set(addr string, cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cut {
		c.cut[addr] = true
	} else {
		delete(c.cut, addr)
	}
}

func (c *cutter) WriteTo(b []byte, addr string) (time.Time, error) {
	if c.isCut(addr) {
		return time.Now(), nil // lost on the way
	}
	return c.NodeAwareTransport.WriteTo(b, addr)
}

func (c *cutter) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if c.isCut(addr.Addr) {
		return time.Now(), nil
	}
	return c.NodeAwareTransport.WriteToAddress(b, addr)
}

func (c *cutter) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if c.isCut(addr) {
		return nil, errCut
	}
	return c.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (c *cutter) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if c.isCut(addr.Addr) {
		return nil, errCut
	}
	return c.NodeAwareTransport.DialAddressTimeout(addr, timeout)
}

// Cut drops everything gossip sends between e and other, both ways (both
// need Options.Gossip). Each still reaches every other member.
func (e *Env) Cut(other *Env) { e.link(other, true) }

// Heal undoes Cut.
func (e *Env) Heal(other *Env) { e.link(other, false) }

func (e *Env) link(other *Env, cut bool) {
	e.cutter.set(other.Gossip.LocalAddr(), cut)
	other.cutter.set(e.Gossip.LocalAddr(), cut)
}
