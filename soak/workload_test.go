package soak

import (
	"context"
	"fmt"
	"iter"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// workload drives a fleet through the public API and records what it saw.
type workload struct {
	f            *fleet
	rec          *record
	topic, sub   string
	ackTimeout   time.Duration
	stallOdds    float64 // per session: stop acking until cut off
	nackOdds     float64 // per message
	churnAfter   [2]time.Duration
	down         sync.Map // node name -> true while killed or draining
	rngMu        sync.Mutex
	rng          *rand.Rand    // the clients' choices
	faults       *rand.Rand    // the injector's, on its own: a seed replays the same faults
	publishEvery time.Duration // between batches of 20, per publisher
}

func (w *workload) randIntN(n int) int {
	w.rngMu.Lock()
	defer w.rngMu.Unlock()
	return w.rng.IntN(n)
}

func (w *workload) randFloat() float64 {
	w.rngMu.Lock()
	defer w.rngMu.Unlock()
	return w.rng.Float64()
}

func (w *workload) between(r [2]time.Duration) time.Duration {
	return r[0] + time.Duration(w.randIntN(int(r[1]-r[0])+1))
}

// pickNode returns a node that is not known to be down.
func (w *workload) pickNode() *proc {
	nodes := w.f.nodes
	for range 10 {
		p := nodes[w.randIntN(len(nodes))]
		if _, down := w.down.Load(p.name); !down {
			return p
		}
	}
	return nodes[w.randIntN(len(nodes))]
}

// publisher publishes batches until ctx ends, reconnecting to another
// node when a stream breaks or stops answering (a frozen node).
func (w *workload) publisher(ctx context.Context, idx int) {
	seq := 0
	for ctx.Err() == nil {
		p := w.pickNode()
		c, err := client.Dial(p.grpc)
		if err != nil {
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		var mu sync.Mutex
		pending := map[string]string{} // request id -> payload
		var last atomic.Int64
		last.Store(time.Now().UnixNano())
		go func() { // a stream whose node stops answering is given up
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-sctx.Done():
					return
				case <-t.C:
				}
				mu.Lock()
				waiting := len(pending) > 0
				mu.Unlock()
				if waiting && time.Since(time.Unix(0, last.Load())) > 3*time.Second {
					cancel()
					return
				}
			}
		}()
		msgs := iter.Seq[client.Message](func(yield func(client.Message) bool) {
			tick := time.NewTicker(w.publishEvery)
			defer tick.Stop()
			for {
				select {
				case <-sctx.Done():
					return
				case <-tick.C:
				}
				for range 20 {
					seq++
					payload := fmt.Sprintf("p%d-%d", idx, seq)
					rid := payload
					mu.Lock()
					pending[rid] = payload
					mu.Unlock()
					if !yield(client.Message{RequestID: rid, Topic: w.topic, Key: fmt.Appendf(nil, "k%d", seq%97), Payload: []byte(payload)}) {
						return
					}
				}
			}
		})
		_ = c.Publish(sctx, msgs, 20, func(r client.Result) {
			last.Store(time.Now().UnixNano())
			mu.Lock()
			payload := pending[r.RequestID]
			delete(pending, r.RequestID)
			mu.Unlock()
			if r.Err() == nil {
				w.rec.publishedOK(r.MessageID, payload)
			} else {
				w.rec.publishFailed(1)
			}
		})
		cancel()
		_ = c.Close()
		mu.Lock()
		w.rec.publishFailed(len(pending)) // no result: perhaps written, perhaps not
		mu.Unlock()
	}
}

// subscriber keeps one Subscribe stream open at a time until ctx ends,
// acking what it gets, now and then nacking, leaving (churn) or stalling.
func (w *workload) subscriber(ctx context.Context) {
	for ctx.Err() == nil {
		p := w.pickNode()
		c, err := client.Dial(p.grpc)
		if err != nil {
			continue
		}
		w.session(ctx, c, p)
		_ = c.Close()
	}
}

func (w *workload) session(ctx context.Context, c *client.Client, p *proc) {
	// The stream lives on the context it is opened with: bound only the
	// open (a frozen node never answers it).
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	openTimeout := time.AfterFunc(3*time.Second, cancel)
	sub, err := c.Subscribe(sctx, client.SubscribeOptions{Subscription: w.sub, Topics: []string{w.topic}, FromBeginning: true})
	if !openTimeout.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		w.rec.openFailed(p.name, err)
		sleepCtx(ctx, 100*time.Millisecond)
		return
	}
	id := w.rec.openSession(p.name)
	stall := w.randFloat() < w.stallOdds
	var left atomic.Bool
	// Leaving cancels the stream's context (the client goes away): a
	// CloseSend here would race this goroutine's Acks.
	churn := time.AfterFunc(w.between(w.churnAfter), func() {
		if !stall {
			left.Store(true)
			cancel()
		}
	})
	defer churn.Stop()
	stop := context.AfterFunc(ctx, func() { left.Store(true); cancel() })
	defer stop()
	stallAt := time.Now().Add(time.Duration(w.randIntN(3000)) * time.Millisecond)
	for {
		msgs, n, err := sub.Recv()
		if err != nil {
			why := status.Code(err).String()
			switch {
			case left.Load():
				why = "churn"
			case stall && status.Code(err) == codes.DeadlineExceeded:
				why = "stall"
			}
			w.rec.endSession(id, why)
			return
		}
		if n != nil {
			if n.Code == codes.Aborted {
				w.rec.voided(id)
			}
			continue
		}
		var ack []string
		for _, m := range msgs {
			w.rec.delivered(id, m.ID, m.Shard, string(m.Payload), m.DeliveryAttempt)
			switch {
			case stall && time.Now().After(stallAt):
				// hold it until the ack timeout cuts the stream off
			case w.randFloat() < w.nackOdds:
				w.rec.nacked(id, m.ID)
				_ = sub.Nack(m.ID)
			default:
				ack = append(ack, m.ID)
			}
		}
		if len(ack) > 0 {
			w.rec.acked(ack)
			_ = sub.Ack(ack...)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// injector hurts the fleet until ctx ends: one fault at a time, a node
// killed or drained comes back before the next.
func (w *workload) injector(ctx context.Context, every [2]time.Duration, kinds []string) {
	for {
		sleepCtx(ctx, every[0]+time.Duration(w.faults.IntN(int(every[1]-every[0])+1)))
		if ctx.Err() != nil {
			return
		}
		kind := kinds[w.faults.IntN(len(kinds))]
		p := w.f.nodes[w.faults.IntN(len(w.f.nodes))]
		pause := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(w.faults.IntN(int(hi-lo)+1)) }
		f := fault{kind: kind, start: time.Now()}
		switch kind {
		case "kill":
			f.node = p.name
			w.down.Store(p.name, true)
			w.f.kill(p)
			sleepCtx(context.Background(), pause(500*time.Millisecond, 2*time.Second))
			w.f.start(p)
			w.f.waitReady(p, 30*time.Second)
			w.down.Delete(p.name)
		case "drain":
			f.node = p.name
			w.down.Store(p.name, true)
			w.f.drain(p, 20*time.Second)
			w.f.start(p)
			w.f.waitReady(p, 30*time.Second)
			w.down.Delete(p.name)
		case "freeze":
			f.node = p.name
			w.f.freeze(p)
			sleepCtx(context.Background(), pause(3*time.Second, 8*time.Second))
			w.f.thaw(p)
		case "fetch-faults":
			h := w.f.kf.Fault(kfakeFault("fetch"))
			sleepCtx(context.Background(), 2*time.Second)
			h.Remove()
		case "save-faults":
			h := w.f.kf.Fault(kfakeFault("save"))
			sleepCtx(context.Background(), 2*time.Second)
			h.Remove()
		}
		f.end = time.Now()
		w.rec.addFault(f)
	}
}

// positionSample is one saved position read by the poller.
type positionSample struct {
	at  time.Time
	pos kafka.SavedPosition
}

// poller reads the saved positions every interval until ctx ends, and
// reports any that moved backwards.
type poller struct {
	mu        sync.Mutex
	samples   map[int32][]positionSample
	backwards []string
}

func (pl *poller) run(ctx context.Context, f *fleet, group string, every time.Duration) {
	last := map[int32]int64{}
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		got, err := f.saved(qctx, group)
		cancel()
		now := time.Now()
		if err == nil {
			pl.mu.Lock()
			for p, o := range got {
				pos, err := kafka.ParseSavedPosition(o.At, o.Metadata)
				if err != nil {
					continue
				}
				if prev, ok := last[p]; ok && o.At < prev {
					pl.backwards = append(pl.backwards, fmt.Sprintf("partition %d: %d after %d at %s", p, o.At, prev, now.Format("15:04:05.000")))
				}
				last[p] = max(last[p], o.At)
				pl.samples[p] = append(pl.samples[p], positionSample{at: now, pos: pos})
			}
			pl.mu.Unlock()
		}
		sleepCtx(ctx, every)
	}
}

// savedAt is when the ack of the record at offset of partition p was
// first saved (the position passed it, or held it as acked above); zero:
// never.
func (pl *poller) savedAt(p int32, offset int64) time.Time {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, s := range pl.samples[p] {
		if s.pos.Offset > offset {
			return s.at
		}
		for _, a := range s.pos.Acked {
			if a == offset {
				return s.at
			}
		}
	}
	return time.Time{}
}

// claimWatch asks every node now and then which shards it reads
// (DescribeSubscription, local only) and counts shards two nodes read in
// one round.
type claimWatch struct {
	mu       sync.Mutex
	overlaps []string
	rounds   int
}

func (cw *claimWatch) run(ctx context.Context, f *fleet, sub string, every time.Duration) {
	clients := map[string]*client.Client{}
	for _, p := range f.nodes {
		c, err := client.Dial(p.grpc)
		if err != nil {
			continue
		}
		defer c.Close()
		clients[p.name] = c
	}
	for ctx.Err() == nil {
		start := time.Now()
		var mu sync.Mutex
		readers := map[string][]string{}
		var wg sync.WaitGroup
		for name, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				resp, err := pb.NewAdminClient(c.Conn()).DescribeSubscription(qctx, &pb.DescribeSubscriptionRequest{Subscription: sub, LocalOnly: true})
				if err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, s := range resp.GetShards() {
					if s.GetClaimedBy() != "" {
						readers[s.GetShard()] = append(readers[s.GetShard()], name)
					}
				}
			}()
		}
		wg.Wait()
		if time.Since(start) < 100*time.Millisecond { // one moment, not a spread of them
			cw.mu.Lock()
			cw.rounds++
			for shard, nodes := range readers {
				if len(nodes) > 1 {
					cw.overlaps = append(cw.overlaps, fmt.Sprintf("%s read by %v at %s", shard, nodes, start.Format("15:04:05.000")))
				}
			}
			cw.mu.Unlock()
		}
		sleepCtx(ctx, every)
	}
}
