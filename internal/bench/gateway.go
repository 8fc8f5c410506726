package bench

import (
	"context"
	"fmt"
	"iter"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/client"
)

// GatewayWriter publishes through streamgate on w.Streams raw Publish
// streams at once, in requests of w.Batch messages, and waits for every
// result.
func GatewayWriter(cl *client.Client, topic string, w Workload) Writer {
	src := newSource(w)
	return func(ctx context.Context) (int64, int64, error) {
		var ok, failed, bytes atomic.Int64
		var first atomic.Pointer[string]
		start := time.Now()
		g, ctx := errgroup.WithContext(ctx)
		for s := range w.Streams {
			p := newPacer(w, s, start)
			msgs := func(yield func(client.Message) bool) {
				for i := 0; p.more(i); i++ {
					// Pace whole requests: the first message of each waits.
					if i%w.Batch == 0 && !p.wait(i, ctx.Done()) {
						return
					}
					if !yield(client.Message{Topic: topic, Key: src.key(p.index(i)), Payload: src.payload(p.index(i))}) {
						return
					}
				}
			}
			g.Go(func() error {
				return cl.Publish(ctx, iter.Seq[client.Message](msgs), w.Batch, func(r client.Result) {
					if r.Code != codes.OK {
						failed.Add(1)
						msg := r.Code.String() + ": " + r.Error
						first.CompareAndSwap(nil, &msg)
						return
					}
					ok.Add(1)
					bytes.Add(int64(w.Size))
					w.progress(1)
				})
			})
		}
		if err := g.Wait(); err != nil {
			return ok.Load(), bytes.Load(), err
		}
		if n := failed.Load(); n > 0 {
			return ok.Load(), bytes.Load(), fmt.Errorf("%d of %d failed, first: %s", n, n+ok.Load(), *first.Load())
		}
		return ok.Load(), bytes.Load(), nil
	}
}

// GatewayReader opens w.Readers Subscribe streams on subscription (from the
// earliest position when it is new) before it returns; its Reader reads
// from all of them, acking each batch as it arrives, and closes them once
// target messages are in (Close waits for the acks to reach the node).
func GatewayReader(ctx context.Context, cl *client.Client, subscription, topic string, w Workload) (Reader, func(), error) {
	subs := make([]*client.Subscriber, 0, w.Readers)
	closeAll := func() {
		for _, s := range subs {
			_ = s.Close()
		}
	}
	for range w.Readers {
		s, err := cl.Subscribe(ctx, client.SubscribeOptions{Subscription: subscription, Topics: []string{topic}, FromBeginning: true})
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		subs = append(subs, s)
	}
	read := func(ctx context.Context, target *atomic.Int64, lat *Histogram) (int64, int64, error) {
		var got, bytes atomic.Int64
		// Reading stops when target messages are in: finish cancels the
		// readers' waits, and their context.Canceled is then the normal end.
		readCtx, finish := untilTarget(ctx, &got, target)
		defer finish()
		g := new(errgroup.Group)
		for _, s := range subs {
			g.Go(func() error {
				defer finish() // one reader failing stops the others
				ids := make([]string, 0, 1000)
				for got.Load() < target.Load() {
					msgs, notice, err := s.RecvContext(readCtx)
					if readCtx.Err() != nil && ctx.Err() == nil {
						return nil
					}
					if err != nil {
						return err
					}
					if notice != nil && notice.Terminal {
						return fmt.Errorf("notice %s: %s", notice.Code, notice.Message)
					}
					ids = ids[:0]
					var n int64
					for _, m := range msgs {
						if lat != nil {
							lat.Sent(sentAt(m.Payload))
						}
						ids = append(ids, m.ID)
						n += int64(len(m.Payload))
					}
					if len(ids) == 0 {
						continue
					}
					if err := s.Ack(ids...); err != nil {
						return fmt.Errorf("ack: %w", err)
					}
					bytes.Add(n)
					w.progress(len(ids))
					got.Add(int64(len(ids)))
				}
				return nil
			})
		}
		err := g.Wait()
		if err == nil && got.Load() < target.Load() {
			err = fmt.Errorf("after %d messages: %w", got.Load(), context.Cause(ctx))
		}
		for _, s := range subs {
			if cerr := s.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close: %w", cerr)
			}
		}
		return got.Load(), bytes.Load(), err
	}
	return read, closeAll, nil
}
