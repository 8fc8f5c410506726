package client

// Ack confirmations: a subscriber opened with ConfirmAcks gets the
// server's answer to each ack (Pub/Sub's AckWithResult): saved, or why
// not. The reader goroutine hands answers to the AckResults waiting for
// them; when the stream ends first, every one still waiting reports
// UNAVAILABLE (the ack may or may not have been saved).

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// AckResult is the outcome of one ack sent with AckWithResult.
type AckResult struct {
	ID   string
	done chan struct{}
	err  error // set before done closes
}

func newAckResult(id string) *AckResult { return &AckResult{ID: id, done: make(chan struct{})} }

func failedAckResult(id string, err error) *AckResult {
	r := newAckResult(id)
	r.set(err)
	return r
}

func (r *AckResult) set(err error) {
	r.err = err
	close(r.done)
}

// Ready is closed once the outcome is known.
func (r *AckResult) Ready() <-chan struct{} { return r.done }

// Get waits for the outcome: nil when the ack is durably saved (the
// message is not delivered again), else a status error:
// FailedPrecondition when the stream did not hold the message (unknown,
// acked already, or void: it is or will be delivered again), Unavailable
// when it is not known to be saved (the save did not succeed in time, or
// the stream ended before the answer; the message may come again). When
// ctx ends first, Get returns ctx's error and the outcome stays pending.
func (r *AckResult) Get(ctx context.Context) error {
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ackWaiters are the AckResults waiting for the server, by id (at most
// one per id: see errAckPending).
type ackWaiters struct {
	mu      sync.Mutex // guards the fields below
	pending map[string][]*AckResult
	n       int
	ended   error         // set once the stream ended: no more answers
	idle    chan struct{} // closed when n drops to 0; nil when nobody waits for it
}

// errAckPending answers an id acked again while its first ack's answer is
// pending: the stream no longer holds it, so the server would refuse it,
// and answers are matched to acks by id alone, so the refusal could reach
// the first ack's result. It is answered here and not sent.
var errAckPending = status.Error(codes.FailedPrecondition, "acked again while its first ack's answer is pending: the stream no longer holds it")

// expect registers results for ids, before their ack is sent, and returns
// them with the ids to send; when the stream has ended, they fail at once
// (and nothing is sent). An id already waiting for an answer is refused
// here (errAckPending), so no id ever waits twice.
func (w *ackWaiters) expect(ids []string) ([]*AckResult, []string) {
	out := make([]*AckResult, len(ids))
	send := make([]string, 0, len(ids))
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, id := range ids {
		r := newAckResult(id)
		out[i] = r
		if w.ended != nil {
			r.set(w.ended)
			continue
		}
		if len(w.pending[id]) > 0 {
			r.set(errAckPending)
			continue
		}
		if w.pending == nil {
			w.pending = map[string][]*AckResult{}
		}
		w.pending[id] = append(w.pending[id], r)
		w.n++
		send = append(send, id)
	}
	return out, send
}

// settle hands out the answers of one AckResult response.
func (w *ackWaiters) settle(res *pb.AckResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range res.GetSavedIds() {
		w.answerLocked(id, nil)
	}
	for _, f := range res.GetFailures() {
		w.answerLocked(f.GetMessageId(), status.Error(codes.Code(f.GetStatus().GetCode()), f.GetStatus().GetMessage()))
	}
}

func (w *ackWaiters) answerLocked(id string, err error) {
	q := w.pending[id]
	if len(q) == 0 {
		return // an answer nobody waits for (sent with a plain Ack)
	}
	q[0].set(err)
	if len(q) == 1 {
		delete(w.pending, id)
	} else {
		w.pending[id] = q[1:]
	}
	w.n--
	w.idleLocked()
}

// end fails every pending result with err, and those registered later.
func (w *ackWaiters) end(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = err
	for id, q := range w.pending {
		for _, r := range q {
			r.set(err)
		}
		delete(w.pending, id)
	}
	w.n = 0
	w.idleLocked()
}

// drop fails the results of acks that could not be sent.
func (w *ackWaiters) drop(rs []*AckResult, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range rs {
		q := w.pending[r.ID]
		for i, x := range q {
			if x == r {
				q = append(q[:i:i], q[i+1:]...)
				r.set(err)
				w.n--
				break
			}
		}
		if len(q) == 0 {
			delete(w.pending, r.ID)
		} else {
			w.pending[r.ID] = q
		}
	}
	w.idleLocked()
}

func (w *ackWaiters) idleLocked() {
	if w.n == 0 && w.idle != nil {
		close(w.idle)
		w.idle = nil
	}
}

// whenIdle is closed once no result waits.
func (w *ackWaiters) whenIdle() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	if w.n == 0 {
		close(ch)
		return ch
	}
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	return w.idle
}

// errNotConfirming answers AckWithResult on a subscriber opened without
// ConfirmAcks.
var errNotConfirming = status.Error(codes.FailedPrecondition, "streamgate: the subscriber was not opened with ConfirmAcks: the ack was sent, but the server does not confirm it")

// AckWithResult acks a message and returns its outcome, which the server
// sends once the ack is durably saved (or why not). The subscriber must be
// opened with ConfirmAcks; without it, the ack is sent as Ack does and
// the result fails with FailedPrecondition.
func (s *Subscriber) AckWithResult(id string) *AckResult {
	return s.AckWithResults(id)[0]
}

// AckWithResults is AckWithResult for several messages, in one request.
func (s *Subscriber) AckWithResults(ids ...string) []*AckResult {
	if !s.confirm {
		out := make([]*AckResult, len(ids))
		err := s.Ack(ids...)
		if err == nil {
			err = errNotConfirming
		}
		for i, id := range ids {
			out[i] = failedAckResult(id, unavailable(err))
		}
		return out
	}
	rs, send := s.results.expect(ids) // before the send: the answer may come at once
	if len(send) == 0 {
		return rs
	}
	if err := s.Ack(send...); err != nil {
		s.results.drop(rs, unavailable(err))
	}
	return rs
}

// unavailable turns a send error into the status an AckResult reports.
func unavailable(err error) error {
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	return status.Errorf(codes.Unavailable, "streamgate: the ack was not sent: %v", err)
}

// AckWithResult acks the message and returns the outcome (see
// Subscriber.AckWithResult); Receive must run with ConfirmAcks. Only the
// first Ack, AckWithResult or Nack counts: a later one's result fails with
// FailedPrecondition.
func (m *Delivery) AckWithResult() *AckResult {
	if m.sess == nil || !m.settled.CompareAndSwap(false, true) {
		return failedAckResult(m.ID, status.Error(codes.FailedPrecondition, "streamgate: the message was acked or nacked already"))
	}
	return m.sess.addConfirmed(m.ID)
}

// addConfirmed queues an ack whose result the caller waits for; on a
// stream that is gone it fails at once (the message comes again).
func (s *rsession) addConfirmed(id string) *AckResult {
	if !s.sub.confirm {
		s.add(id, false)
		return failedAckResult(id, errNotConfirming)
	}
	s.mu.Lock()
	gone := s.gone
	s.mu.Unlock()
	if gone {
		return failedAckResult(id, status.Error(codes.Unavailable, "streamgate: the stream broke before the ack was sent; the message is delivered again"))
	}
	rs, send := s.sub.results.expect([]string{id})
	if len(send) > 0 {
		s.add(id, false)
	}
	return rs[0]
}
