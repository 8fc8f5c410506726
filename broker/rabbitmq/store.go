package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

// The positions store: every saved position, start and fence of every
// subscription is a record in one stream (Config.PositionsStream), and
// every backend reads that stream from its start into a view, applying the
// records in log order. The stream's single order decides every race: all
// readers apply the same records in the same order and so agree, and a
// writer learns the outcome of its write by waiting until its own view has
// applied it. Records:
//
//   - start(key, position): valid only when the key has no position yet.
//     Prepare writes these; of two Prepares at once the first start in the
//     log wins and both read it back, so they agree on one position.
//   - claim(key): always valid; makes its writer the key's holder (the
//     reader fence), and the position as of that point in the log is what
//     the new reader resumes from.
//   - save(key, holder, n, position): valid only when holder is still the
//     key's holder and n is above the holder's last valid save. A reader
//     that was frozen or cut off while another claimed the shard writes
//     saves that every view ignores, so it can never move a position
//     backwards; it learns it lost the shard from its own save's outcome.
//   - sync: no effect; a write-and-wait that makes a read see everything
//     written before it began (Prepare, Inspect-like reads).
//
// Guarantee: linearizable per key, as far as the stream is (one leader;
// a write is acknowledged once the server has it, and counted once read
// back). A save's outcome is known only after its round trip; a save whose
// outcome is unknown (timeout, lost connection) may still apply later, but
// never over a newer save of the same holder (n) nor over a newer holder.
//
// Cost: a backend replays the whole stream when it starts; retention
// (PositionsMaxAge) bounds it, and consumers re-save idle positions hourly
// so that retention never drops the only record of a live position.

// posKey names one subscription's position on one shard.
type posKey struct {
	sub   string
	topic string
	index int32
}

// position is a saved position: next is the first offset not known acked,
// or -1 while unresolved (nothing read yet: start from the origin).
type position struct {
	next int64
	meta cursor.Saved
}

const (
	recStart byte = iota + 1
	recClaim
	recSave
	recSync
)

type record struct {
	kind   byte
	token  string // unique per write: waits are keyed by it; a claim's token names its holder
	key    posKey
	holder string // save: the claim token it saves under
	n      uint64 // save: the holder's save counter
	pos    position
}

// keyState is the view of one key.
type keyState struct {
	have   bool
	pos    position
	holder string // the current claim's token
	epoch  uint64 // claims so far
	n      uint64 // the holder's last valid save
}

// outcome is what applying a write gave: whether it took effect, and the
// key's state just after it.
type outcome struct {
	valid bool
	state keyState
	err   error
}

type store struct {
	b     *Broker
	nonce [16]byte

	mu      sync.Mutex // guards the fields below
	view    map[posKey]*keyState
	applied int64 // the last offset applied; -1: none
	counter uint64
	waiters map[string]chan outcome // by token: writes not read back yet
	prod    *stream.Producer        // nil while down
	reader  *stream.Consumer
	// closeProd and closeReader close prod and reader, once however
	// many goroutines ask (store_conn.go).
	closeProd   func()
	closeReader func()
	gen         uint64 // reader generation: a handler of an older one is ignored
	down        error  // why the store cannot write or read now; nil when it can
	closed      bool
	kick        chan struct{}
	upSignal    chan struct{} // closed and replaced whenever the store comes up
}

func newStore(b *Broker) *store {
	s := &store{
		b:        b,
		view:     map[posKey]*keyState{},
		applied:  -1,
		waiters:  map[string]chan outcome{},
		down:     errors.New("the positions stream is not read yet"),
		kick:     make(chan struct{}, 1),
		upSignal: make(chan struct{}),
	}
	_, _ = rand.Read(s.nonce[:])
	return s
}

// apply runs on the reader's goroutine: it must not block.
func (s *store) apply(gen uint64, offset int64, m *amqp.Message) {
	var body []byte
	for _, d := range m.Data {
		body = append(body, d...)
	}
	rec, err := decodeRecord(body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || offset <= s.applied {
		return // an older reader, or a record applied before a resubscribe
	}
	s.applied = offset
	if err != nil {
		s.b.cfg.log().Warn("ignoring an unreadable record of the positions stream", "offset", offset, "err", err)
		return
	}
	var out outcome
	if rec.kind == recSync {
		out.valid = true
	} else {
		st := s.view[rec.key]
		if st == nil {
			st = &keyState{}
			s.view[rec.key] = st
		}
		switch rec.kind {
		case recStart:
			if !st.have {
				st.have, st.pos, out.valid = true, rec.pos, true
			}
		case recClaim:
			st.holder, st.n, out.valid = rec.token, 0, true
			st.epoch++
		case recSave:
			if rec.holder == st.holder && rec.n > st.n {
				st.have, st.pos, st.n, out.valid = true, rec.pos, rec.n, true
			}
		}
		out.state = *st
	}
	if w := s.waiters[rec.token]; w != nil {
		w <- out // capacity 1, one send
		delete(s.waiters, rec.token)
	}
}

// write appends records and waits until this backend's view has applied
// each of them, returning their outcomes (in order). A record whose outcome
// is not known by SaveTimeout or ctx's end has err set.
func (s *store) write(ctx context.Context, recs []record) []outcome {
	out := make([]outcome, len(recs))
	ctx, cancel := context.WithTimeout(ctx, s.b.cfg.SaveTimeout)
	defer cancel()
	s.mu.Lock()
	if s.down != nil && !s.closed {
		// Starting, or reconnecting: wait for it within the timeout.
		up := s.upSignal
		s.mu.Unlock()
		select {
		case <-up:
		case <-ctx.Done():
		}
		s.mu.Lock()
	}
	prod, down := s.prod, s.down
	if prod == nil || down != nil {
		s.mu.Unlock()
		err := fmt.Errorf("%w: positions stream: %w", broker.ErrUnavailable, down)
		for i := range out {
			out[i].err = err
		}
		return out
	}
	waits := make([]chan outcome, len(recs))
	msgs := make([]*amqp.AMQP10, len(recs))
	for i := range recs {
		s.counter++
		buf := make([]byte, 16, 16+binary.MaxVarintLen64)
		copy(buf, s.nonce[:])
		recs[i].token = string(binary.AppendUvarint(buf, s.counter))
		waits[i] = make(chan outcome, 1)
		s.waiters[recs[i].token] = waits[i]
		msgs[i] = amqp.NewMessage(encodeRecord(&recs[i]))
	}
	s.mu.Unlock()
	for i, m := range msgs {
		if err := prod.Send(m); err != nil {
			s.mu.Lock()
			delete(s.waiters, recs[i].token)
			s.mu.Unlock()
			out[i].err = translate(err)
			waits[i] = nil
		}
	}
	for i, w := range waits {
		if w == nil {
			continue
		}
		select {
		case o := <-w:
			out[i] = o
		case <-ctx.Done():
			s.mu.Lock()
			delete(s.waiters, recs[i].token)
			s.mu.Unlock()
			out[i].err = fmt.Errorf("%w: the positions stream did not answer: %w", broker.ErrUnavailable, ctx.Err())
		}
	}
	return out
}

// read returns the state of keys after everything written to the store
// before the call (a sync record read back).
func (s *store) read(ctx context.Context, keys []posKey) (map[posKey]keyState, error) {
	if o := s.write(ctx, []record{{kind: recSync}})[0]; o.err != nil {
		return nil, o.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[posKey]keyState, len(keys))
	for _, k := range keys {
		if st := s.view[k]; st != nil {
			out[k] = *st
		}
	}
	return out, nil
}

// snapshot returns every key of a subscription as the view has it now,
// without a round trip.
func (s *store) snapshot(sub string) map[posKey]keyState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[posKey]keyState{}
	for k, st := range s.view {
		if k.sub == sub && st.have {
			out[k] = *st
		}
	}
	return out
}
