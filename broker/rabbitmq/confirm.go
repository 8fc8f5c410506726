// Ack confirmations (broker.AckSaver), as in broker/kafka: AckForSave
// acks and hands out receipts (the offset, since a tagged id is
// forgotten once acked), SaveAcks asks manage for a save now and waits
// until the saves that follow cover the receipts. Saves are the regular
// ones under the shard's claim (save.go), so concurrent calls coalesce:
// manage runs one save at a time, commitNow holds one more request, and a
// shard is in one save at a time. save records on each shard what it
// saved (shardState.saves) and wakes the waiters (savedLocked).

package rabbitmq

import (
	"context"
	"fmt"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
)

var (
	_ broker.AckSaver  = (*consumer)(nil)
	_ broker.AckSaving = (*Broker)(nil)
)

// SavesAcks implements broker.AckSaving: every consumer confirms acks.
func (b *Broker) SavesAcks() bool { return true }

// savedLocked wakes the SaveAcks calls waiting for a save to end.
func (c *consumer) savedLocked() {
	if c.savedSig != nil {
		close(c.savedSig)
		c.savedSig = nil
	}
}

// AckForSave implements broker.AckSaver.
func (c *consumer) AckForSave(ids ...string) []broker.AckReceipt {
	out := make([]broker.AckReceipt, 0, len(ids))
	commit := false
	c.mu.Lock()
	for _, id := range ids {
		ps, o, ok := c.lookupLocked(id)
		if !ok || !ps.tr.Ack(o) {
			continue
		}
		r, err := decodeID(id)
		if err != nil {
			continue // lookupLocked decoded it
		}
		if !r.foreign {
			delete(ps.ids, r.tagged)
		}
		ps.seq++
		c.acks++
		commit = commit || c.acks >= c.b.cfg.SaveEvery
		out = append(out, broker.AckReceipt{ID: id, Shard: r.shard, Pos: o})
	}
	c.mu.Unlock()
	if commit {
		signal(c.commitNow)
	}
	return out
}

// ackWait is one receipt SaveAcks watches: the shard and tracker that
// took the ack, and the saves begun before the call (their failures do
// not count: they may have been snapshots from before the ack).
type ackWait struct {
	ps   *shardState
	tr   *cursor.Tracker
	from uint64
}

// SaveAcks implements broker.AckSaver.
func (c *consumer) SaveAcks(ctx context.Context, rs []broker.AckReceipt) []error {
	errs := make([]error, len(rs))
	waits := make([]ackWait, len(rs))
	c.mu.Lock()
	for i, r := range rs {
		ps := c.parts[c.key(r.Shard)]
		if ps == nil || ps.tr == nil {
			errs[i] = fmt.Errorf("%w: stream %s is not held", broker.ErrAckVoid, streamName(r.Shard))
			continue
		}
		waits[i] = ackWait{ps: ps, tr: ps.tr, from: ps.saves.Begun()}
	}
	c.mu.Unlock()
	done := make([]bool, len(rs))
	err := cursor.AwaitSaves(ctx, &c.mu, &c.savedSig,
		func() bool { return c.settleLocked(rs, waits, errs, done) },
		func() { signal(c.commitNow) }) // manage saves what changed; a save in flight is waited for
	if err != nil {
		for i := range rs {
			if errs[i] == nil && !done[i] {
				errs[i] = fmt.Errorf("%w: the save did not end in time: %w", broker.ErrUnavailable, err)
			}
		}
	}
	return errs
}

// settleLocked decides the receipts it can and says whether some wait.
func (c *consumer) settleLocked(rs []broker.AckReceipt, waits []ackWait, errs []error, done []bool) (pending bool) {
	standing := c.spec.Standing == nil || c.spec.Standing()
	for i, r := range rs {
		if errs[i] != nil || done[i] {
			continue
		}
		w := waits[i]
		switch {
		case w.ps.saves.Covers(w.tr, r.Pos):
			done[i] = true
		case c.parts[c.key(r.Shard)] != w.ps || w.ps.tr != w.tr || !w.tr.Acked(r.Pos):
			errs[i] = fmt.Errorf("%w: stream %s was lost or reset before its position was saved", broker.ErrAckVoid, streamName(r.Shard))
		case w.ps.saves.FailedAfter(w.from) != nil:
			errs[i] = fmt.Errorf("%w: saving stream %s: %w", broker.ErrUnavailable, streamName(r.Shard), translate(w.ps.saves.FailedAfter(w.from)))
		case c.closed, c.b.aborted.Load():
			errs[i] = fmt.Errorf("%w: the consumer closed before the position was saved", broker.ErrUnavailable)
		case !standing:
			errs[i] = fmt.Errorf("%w: %w", broker.ErrUnavailable, errNotStanding)
		default:
			pending = true
		}
	}
	return pending
}
