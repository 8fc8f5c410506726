// Package bench is the load driver behind `streamgate bench`: the same
// workloads through streamgate's gRPC API and directly with franz-go against
// the same broker, so that the two can be compared in one run. A phase
// prepares its clients and payloads before the clock starts and reports
// what its timed part moved, how long it took, the driver's own CPU and,
// where it is measured, the latency from publish to delivery.
//
// This is a benchmark, so unlike the rest of the module it imports franz-go
// outside broker/kafka: direct franz-go is the baseline (STYLE.md:
// benchmarks compare against direct franz-go on the same broker).
package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
)

// Workload is what a phase sends or reads.
type Workload struct {
	Count    int           // messages to send; 0 with Duration
	Duration time.Duration // send for this long instead of Count messages
	Size     int           // payload bytes (at least 8: a send timestamp leads each payload)
	Keys     int           // distinct keys, round-robin; 0 sends unkeyed messages
	Streams  int           // parallel publish streams or producers
	Batch    int           // messages per publish request
	Rate     float64       // messages per second over all streams; 0 sends as fast as the path takes
	Readers  int           // parallel Subscribe streams

	// Progress counts the messages the running phase has moved, for a
	// progress line; nil for none.
	Progress *atomic.Int64
}

// Check reports the first bad setting, naming its flag.
func (w Workload) Check() error {
	switch {
	case w.Count < 0:
		return fmt.Errorf("--count %d: want 0 or more", w.Count)
	case w.Count == 0 && w.Duration <= 0:
		return errors.New("--count or --duration: want one of them more than 0")
	case w.Count > 0 && w.Duration > 0:
		return errors.New("--count and --duration: give one of them, not both")
	case w.Size < 8:
		return fmt.Errorf("--size %d: want 8 or more (each payload starts with its send time)", w.Size)
	case w.Keys < 0:
		return fmt.Errorf("--keys %d: want 0 (unkeyed) or more", w.Keys)
	case w.Streams < 1:
		return fmt.Errorf("--streams %d: want 1 or more", w.Streams)
	case w.Batch < 1:
		return fmt.Errorf("--batch %d: want 1 or more", w.Batch)
	case w.Rate < 0:
		return fmt.Errorf("--rate %v: want 0 (open loop) or more", w.Rate)
	case w.Readers < 1:
		return fmt.Errorf("--readers %d: want 1 or more", w.Readers)
	}
	return nil
}

// Result is what a phase's timed part did.
type Result struct {
	Messages int64
	Bytes    int64
	Elapsed  time.Duration
	CPU      time.Duration // the driver process's own CPU over Elapsed
	Latency  *Histogram    // publish to delivery; nil when not measured
}

// meter times a phase's timed part and reads this process's CPU around it.
type meter struct {
	start time.Time
	cpu0  time.Duration
}

func startMeter() meter { return meter{start: time.Now(), cpu0: SelfCPU()} }

func (m meter) result(msgs, bytes int64, lat *Histogram) Result {
	return Result{Messages: msgs, Bytes: bytes, Elapsed: time.Since(m.start), CPU: SelfCPU() - m.cpu0, Latency: lat}
}

// source hands out payloads and keys. With a count they are made before
// the clock starts, all distinct and incompressible (identical or
// compressible values would make the broker path look cheaper than real
// traffic); with a duration each is copied from a random pool at its own
// offset when asked for.
type source struct {
	w    Workload
	pre  [][]byte
	pool []byte
	keys [][]byte
}

func newSource(w Workload) *source {
	s := &source{w: w}
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	fill := func(n int) []byte {
		b := make([]byte, (n+7)/8*8)
		for i := 0; i < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], r.Uint64())
		}
		return b[:n]
	}
	if w.Count > 0 {
		buf := fill(w.Count * w.Size)
		s.pre = make([][]byte, w.Count)
		for i := range s.pre {
			s.pre[i] = buf[i*w.Size : (i+1)*w.Size : (i+1)*w.Size]
		}
	} else {
		s.pool = fill(max(16<<20, 4*w.Size))
	}
	for i := range w.Keys {
		s.keys = append(s.keys, []byte("key-"+strconv.Itoa(i)))
	}
	return s
}

// payload returns message i's payload, its first 8 bytes the time now.
func (s *source) payload(i int) []byte {
	var p []byte
	if s.pre != nil {
		p = s.pre[i]
	} else {
		off := (i * 7919 * 64) % (len(s.pool) - s.w.Size)
		p = append(make([]byte, 0, s.w.Size), s.pool[off:off+s.w.Size]...)
	}
	binary.LittleEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	return p
}

// key returns message i's key, nil when unkeyed.
func (s *source) key(i int) []byte {
	if len(s.keys) == 0 {
		return nil
	}
	return s.keys[i%len(s.keys)]
}

// sentAt reads a payload's send time: the latency of a delivery is the
// time since.
func sentAt(p []byte) time.Time {
	if len(p) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(p)))
}

// pacer spaces sends of one stream: wait blocks until message i of the
// stream may go, at rate messages a second from start; a rate of 0 never
// waits. more reports whether message i is still to be sent.
type pacer struct {
	w        Workload
	start    time.Time
	interval time.Duration // between messages of this stream
	stream   int
}

func newPacer(w Workload, stream int, start time.Time) pacer {
	p := pacer{w: w, start: start, stream: stream}
	if w.Rate > 0 {
		p.interval = time.Duration(float64(time.Second) * float64(w.Streams) / w.Rate)
	}
	return p
}

// share is how many of Count messages stream sends.
func (p pacer) share() int {
	return (p.stream+1)*p.w.Count/p.w.Streams - p.stream*p.w.Count/p.w.Streams
}

func (p pacer) more(i int) bool {
	if p.w.Count > 0 {
		return i < p.share()
	}
	return time.Since(p.start) < p.w.Duration
}

// wait blocks until message i may go or done closes; false when done closed.
func (p pacer) wait(i int, done <-chan struct{}) bool {
	if p.interval == 0 {
		return true
	}
	d := time.Until(p.start.Add(time.Duration(i) * p.interval))
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// index maps message i of stream to its index in the source.
func (p pacer) index(i int) int {
	if p.w.Count > 0 {
		return p.stream*p.w.Count/p.w.Streams + i
	}
	return i*p.w.Streams + p.stream
}

// untilTarget returns a context that ends once got reaches target (which
// a writer running alongside lowers to what it sent, when it ends) or ctx
// ends: a read that waits for messages that will not come ends with it.
// stop ends it and waits for its watcher; it may be called more than once.
func untilTarget(ctx context.Context, got, target *atomic.Int64) (context.Context, func()) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for got.Load() < target.Load() {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
		}
		cancel()
	}()
	return rctx, func() { cancel(); <-done }
}

func (w Workload) progress(n int) {
	if w.Progress != nil {
		w.Progress.Add(int64(n))
	}
}
