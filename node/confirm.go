// Ack confirmations (Open.confirm_acks, Pub/Sub's exactly-once delivery):
// a session opened with confirm_acks gets an AckResult for every id it
// acks. Ids it does not hold fail with FAILED_PRECONDITION at once; the
// others are acked in the consumer (broker.AckSaver.AckForSave, on the
// subscription's goroutine, where the plain Ack would run) and are
// answered when a save round says whether the saved position covers
// them (SaveAcks). One round runs at a time per subscription, on a
// goroutine counted in releases and given up with the consumer
// (closeConsumer), like a Release; acks taken meanwhile wait in the
// queue for the next round, which takes them all. The queue is bounded by
// the consumer: every receipt in it is an ack that is not saved, and a
// consumer holds at most its per-shard limit of unsaved messages per
// shard. The round's outcome comes back to run (afterAckSave), which
// hands each live session its results through its outbox and drops those
// of sessions that ended. Everything here but the round's goroutine and
// the outbox's methods runs on run.

package node

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// ackSaveTimeout bounds one save round: an ack its saves did not cover by
// then is answered UNAVAILABLE (it may still be saved later).
const ackSaveTimeout = 10 * time.Second

// maxResultIDs bounds the ids of one AckResult response, far under the
// 4 MiB a client takes by default.
const maxResultIDs = 10_000

// pendingAck is one ack a session waits to have confirmed.
type pendingAck struct {
	sess *session
	r    broker.AckReceipt
}

// ackSaving is the subscription's confirmation state, owned by run.
type ackSaving struct {
	queue   []pendingAck       // taken by the consumer, waiting for the next round
	busy    broker.Consumer    // the consumer whose round is in flight; nil: none
	results chan ackSaveResult // the round's outcome, to run; made with the first round
}

// ackSaveResult is one round's outcome, one error per ack.
type ackSaveResult struct {
	c    broker.Consumer
	acks []pendingAck
	errs []error
}

// checkConfirm refuses confirm_acks on a backend that cannot say when an
// ack is saved: confirming at the next regular save would make "saved" a
// guess.
func (s *subscribeService) checkConfirm(open *pb.Open) error {
	if !open.GetConfirmAcks() {
		return nil
	}
	if sv, ok := s.backend.(broker.AckSaving); ok && sv.SavesAcks() {
		return nil
	}
	return &codedError{code: codes.Unimplemented, msg: "open: confirm_acks: this node's backend cannot confirm that acks are saved"}
}

// ackConsumer hands acks of messages sess held to the consumer; for a
// session with confirm_acks they are queued for confirmation, and ids the
// consumer did not take (their shard was lost or reset there) are answered
// FAILED_PRECONDITION.
func (s *subscription) ackConsumer(sess *session, ids []string) {
	if !sess.confirm {
		s.consumer.Ack(ids...)
		return
	}
	saver, ok := s.consumer.(broker.AckSaver)
	if !ok { // a backend that says it saves acks, with a consumer that does not
		s.consumer.Ack(ids...)
		s.answerAcks(sess, nil, failuresOf(ids, codes.Unavailable, "the backend's consumer cannot confirm saved acks"))
		return
	}
	rs := saver.AckForSave(ids...)
	if len(rs) < len(ids) {
		took := make(map[string]bool, len(rs))
		for _, r := range rs {
			took[r.ID] = true
		}
		var void []string
		for _, id := range ids {
			if !took[id] {
				void = append(void, id)
			}
		}
		s.answerAcks(sess, nil, failuresOf(void, codes.FailedPrecondition, "the message is void: its shard moved or was reset; it is delivered again"))
	}
	for _, r := range rs {
		s.acksSaving.queue = append(s.acksSaving.queue, pendingAck{sess: sess, r: r})
	}
	sess.unconfirmed += len(rs)
	s.startAckSave()
}

// rejectAcks answers ids sess does not hold.
func (s *subscription) rejectAcks(sess *session, ids []string) {
	if len(ids) > 0 {
		s.answerAcks(sess, nil, failuresOf(ids, codes.FailedPrecondition, "not held by this stream: unknown, acked already, or void (delivered again)"))
	}
}

// startAckSave starts a save round for the queued acks unless one is in
// flight for this consumer.
func (s *subscription) startAckSave() {
	a := &s.acksSaving
	if len(a.queue) == 0 || s.consumer == nil || a.busy == s.consumer {
		return
	}
	saver, ok := s.consumer.(broker.AckSaver)
	if !ok {
		return
	}
	// Acks of sessions that ended (with a consumer closed since, too)
	// need no answer.
	batch := a.queue[:0:0]
	for _, p := range a.queue {
		if !p.sess.gone {
			batch = append(batch, p)
		}
	}
	a.queue = nil
	if len(batch) == 0 {
		return
	}
	if a.results == nil {
		a.results = make(chan ackSaveResult)
	}
	a.busy = s.consumer
	c, ctx, quit, results := s.consumer, s.releaseCtx, s.quit, a.results
	rs := make([]broker.AckReceipt, len(batch))
	for i, p := range batch {
		rs[i] = p.r
	}
	s.releases.Add(1)
	go func() {
		defer s.releases.Done()
		ctx, cancel := context.WithTimeout(ctx, ackSaveTimeout)
		errs := saver.SaveAcks(ctx, rs)
		cancel()
		select {
		case results <- ackSaveResult{c: c, acks: batch, errs: errs}:
		case <-quit: // the consumer closed: its sessions are gone
		}
	}()
}

// afterAckSave answers the sessions of a round and starts the next one.
func (s *subscription) afterAckSave(r ackSaveResult) {
	if s.acksSaving.busy == r.c {
		s.acksSaving.busy = nil
	}
	type answer struct {
		saved    []string
		failures []*pb.AckFailure
	}
	answers := map[*session]*answer{}
	for i, p := range r.acks {
		p.sess.unconfirmed--
		if p.sess.gone {
			continue // the stream ended: nobody to tell
		}
		an := answers[p.sess]
		if an == nil {
			an = &answer{}
			answers[p.sess] = an
		}
		switch err := r.errs[i]; {
		case err == nil:
			an.saved = append(an.saved, p.r.ID)
		case errors.Is(err, broker.ErrAckVoid):
			an.failures = append(an.failures, &pb.AckFailure{MessageId: p.r.ID, Status: &pb.Status{Code: int32(codes.FailedPrecondition), Message: err.Error()}})
		default:
			an.failures = append(an.failures, &pb.AckFailure{MessageId: p.r.ID, Status: &pb.Status{Code: int32(codes.Unavailable), Message: err.Error()}})
		}
	}
	for sess, an := range answers {
		s.answerAcks(sess, an.saved, an.failures)
		if s.draining.Load() && len(sess.inflight) == 0 && sess.unconfirmed == 0 {
			s.end(sess, codes.Unavailable, "node draining, reconnect")
		}
	}
	s.startAckSave()
}

// answerAcks queues an AckResult for sess; a session that lets answers
// pile up unread is ended.
func (s *subscription) answerAcks(sess *session, saved []string, failures []*pb.AckFailure) {
	if sess.gone || len(saved)+len(failures) == 0 {
		return
	}
	if !sess.out.addResults(saved, failures, 2*sess.max+maxResultIDs) {
		s.end(sess, codes.ResourceExhausted, "too many ack results not read by the client: read the stream while acking")
	}
}

func failuresOf(ids []string, c codes.Code, msg string) []*pb.AckFailure {
	st := &pb.Status{Code: int32(c), Message: msg}
	out := make([]*pb.AckFailure, len(ids))
	for i, id := range ids {
		out[i] = &pb.AckFailure{MessageId: id, Status: st}
	}
	return out
}

// ackResults are the answers an outbox holds for its writer; guarded by
// outbox.mu.
type ackResults struct {
	saved    []string
	failures []*pb.AckFailure
}

// addResults queues answers; false (and nothing queued) when the outbox
// would hold more than limit.
func (o *outbox) addResults(saved []string, failures []*pb.AckFailure, limit int) bool {
	o.mu.Lock()
	r := &o.results
	if len(r.saved)+len(r.failures)+len(saved)+len(failures) > limit {
		o.mu.Unlock()
		return false
	}
	r.saved = append(r.saved, saved...)
	r.failures = append(r.failures, failures...)
	o.mu.Unlock()
	signal(o.signal)
	return true
}

// takeResults takes up to maxResultIDs answers as one AckResult; nil when
// there are none. It signals again when more are left.
func (o *outbox) takeResults() *pb.AckResult {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := &o.results
	if len(r.saved)+len(r.failures) == 0 {
		return nil
	}
	out := &pb.AckResult{}
	n := min(len(r.saved), maxResultIDs)
	out.SavedIds, r.saved = r.saved[:n:n], r.saved[n:]
	m := min(len(r.failures), maxResultIDs-n)
	out.Failures, r.failures = r.failures[:m:m], r.failures[m:]
	if len(r.saved) == 0 {
		r.saved = nil
	}
	if len(r.failures) == 0 {
		r.failures = nil
	}
	if r.saved != nil || r.failures != nil {
		signal(o.signal)
	}
	return out
}
