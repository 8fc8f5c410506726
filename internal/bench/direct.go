package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Writer is a phase's timed sending part: it returns the messages and
// payload bytes that were confirmed.
type Writer func(ctx context.Context) (msgs, bytes int64, err error)

// Reader is a phase's timed reading part: it reads until it has at least
// target messages (which may be raised while it runs), recording each
// delivery's latency in lat when lat is not nil.
type Reader func(ctx context.Context, target *atomic.Int64, lat *Histogram) (msgs, bytes int64, err error)

// DirectWriter produces with one franz-go client (acks from all in-sync
// replicas, no linger, as the gateway's producer) on w.Streams goroutines,
// asynchronously, and waits for every result.
func DirectWriter(ctx context.Context, brokers, topic string, w Workload, opts ...kgo.Opt) (Writer, func(), error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0)}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, nil, err
	}
	src := newSource(w)
	write := func(ctx context.Context) (int64, int64, error) {
		var (
			wg           sync.WaitGroup
			sent, failed atomic.Int64
			first        atomic.Pointer[error]
			bytes        atomic.Int64
			start        = startMeter().start
			producers    sync.WaitGroup
		)
		for s := range w.Streams {
			producers.Add(1)
			go func() {
				defer producers.Done()
				p := newPacer(w, s, start)
				for i := 0; p.more(i) && p.wait(i, ctx.Done()); i++ {
					wg.Add(1)
					sent.Add(1)
					r := &kgo.Record{Topic: topic, Key: src.key(p.index(i)), Value: src.payload(p.index(i))}
					// The promise runs on franz-go's goroutine: it only counts.
					cl.Produce(ctx, r, func(r *kgo.Record, err error) {
						if err != nil {
							failed.Add(1)
							first.CompareAndSwap(nil, &err)
						} else {
							bytes.Add(int64(len(r.Value)))
							w.progress(1)
						}
						wg.Done()
					})
				}
			}()
		}
		producers.Wait()
		wg.Wait()
		if n := failed.Load(); n > 0 {
			return sent.Load() - n, bytes.Load(), fmt.Errorf("%d of %d failed, first: %w", n, sent.Load(), *first.Load())
		}
		return sent.Load(), bytes.Load(), ctx.Err()
	}
	return write, cl.Close, nil
}

// DirectReader reads every partition of topic from the start with
// franz-go, without a group member, and commits the read offsets to group
// through kadm every 1000 records and at the end, as the gateway does. The
// client is made inside the timed part: it fetches as soon as it exists,
// and what it fetched before the clock would come for free.
func DirectReader(brokers, topic, group string, w Workload, opts ...kgo.Opt) Reader {
	return func(ctx context.Context, target *atomic.Int64, lat *Histogram) (int64, int64, error) {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers),
			kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
		if err != nil {
			return 0, 0, err
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		var got, bytes, sinceCommit int64
		offsets := kadm.Offsets{}
		commit := func() error {
			resp, err := adm.CommitOffsets(ctx, group, offsets)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			sinceCommit = 0
			return nil
		}
		// A target lowered to what was already read (the writer ended)
		// must end a poll that waits for records that will not come.
		var read atomic.Int64
		pollCtx, stopPoll := untilTarget(ctx, &read, target)
		defer stopPoll()
		for got < target.Load() {
			fs := cl.PollRecords(pollCtx, 1000)
			if err := ctx.Err(); err != nil {
				return got, bytes, fmt.Errorf("after %d messages: %w", got, err)
			}
			if pollCtx.Err() != nil {
				break
			}
			var fetchErr error
			fs.EachError(func(t string, p int32, err error) { fetchErr = fmt.Errorf("%s/%d: %w", t, p, err) })
			if fetchErr != nil {
				return got, bytes, fetchErr
			}
			fs.EachRecord(func(r *kgo.Record) {
				if lat != nil {
					lat.Sent(sentAt(r.Value))
				}
				offsets.AddOffset(r.Topic, r.Partition, r.Offset+1, -1)
				got++
				bytes += int64(len(r.Value))
				sinceCommit++
			})
			w.progress(fs.NumRecords())
			read.Store(got)
			if sinceCommit >= 1000 {
				if err := commit(); err != nil {
					return got, bytes, err
				}
			}
		}
		return got, bytes, commit()
	}
}
