package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/registry"
)

// The subscription store (broker.SubscriptionStore) on RabbitMQ: every
// subscription's settings are records of one stream of their own
// (Config.SubscriptionsStream), in the format and with the compare-and-set
// rules of broker/registry, which are the positions store's rules
// (store.go): every backend reads the stream from its start into a view,
// the stream's single order decides every race, and a writer learns its
// outcome by reading its own record back.
//
// Not the positions stream: that one has a retention (PositionsMaxAge)
// that would drop a subscription nobody changed for a week. This stream
// has none, and nothing compacts a stream, so it keeps every change ever
// made (records of a few hundred bytes, written by the admin API only),
// and a backend replays them all when it starts. Its first read writes a
// sync record (a stream cannot tell its end in 3.10), so the view has read
// everything before it answers.
//
// The stream is declared, and its producer and reader opened, by a
// goroutine started on the first use of the store and ended by Close.

var _ broker.SubscriptionStore = (*Broker)(nil)

// subsLog implements registry.Log on the stream.
type subsLog struct {
	b     *Broker
	view  *registry.View
	store *registry.Store
	kick  chan struct{}
	stop  context.CancelFunc
	done  chan struct{} // closed when run returns

	mu     sync.Mutex // guards the fields below
	prod   *stream.Producer
	reader *stream.Consumer
	// closeProd and closeReader close prod and reader, once however many
	// goroutines ask.
	closeProd, closeReader func()
	gen                    uint64        // reader generation: a handler of an older one is ignored
	up                     chan struct{} // closed and replaced whenever prod becomes usable
	closed                 bool
}

// subscriptionStore returns the store, starting it on first use.
func (b *Broker) subscriptionStore() (*registry.Store, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs != nil {
		return b.subs.store, nil
	}
	if b.closed {
		return nil, broker.ErrClosed
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &subsLog{
		b:    b,
		view: registry.NewView(false, b.cfg.log()),
		kick: make(chan struct{}, 1),
		stop: cancel,
		done: make(chan struct{}),
		up:   make(chan struct{}),
	}
	l.store = registry.NewStore(l, l.view, registry.Options{WriteTimeout: b.cfg.SaveTimeout, Logger: b.cfg.log()})
	b.subs = l
	go func() { // owned by closeSubscriptions, which waits for done
		defer close(l.done)
		l.run(ctx)
	}()
	return l.store, nil
}

// closeSubscriptions is called by Close, after it set b.closed and before
// the environment closes: what the store's goroutine is opening must be
// finished (and closed) first.
func (b *Broker) closeSubscriptions() {
	b.mu.Lock()
	l := b.subs
	b.mu.Unlock()
	if l == nil {
		return
	}
	l.stop()
	<-l.done
	l.mu.Lock()
	l.closed = true
	var fns []func()
	if l.prod != nil {
		fns = append(fns, l.closeProd)
	}
	if l.reader != nil {
		fns = append(fns, l.closeReader)
	}
	l.mu.Unlock()
	for _, f := range fns {
		f() // also asked by the watchers; sync.OnceFunc makes this wait for theirs
	}
	l.view.Close(broker.ErrClosed)
}

// run keeps the producer and the reader open until ctx ends, reopening
// them with backoff after a failure.
func (l *subsLog) run(ctx context.Context) {
	fails := 0
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		wait := time.Hour
		if err := l.connect(ctx); err != nil {
			fails++
			wait = backoff(fails)
			l.b.cfg.log().Warn("subscription stream unavailable; retrying", "err", err, "attempt", fails)
		} else {
			fails = 0
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-t.C:
		}
	}
}

// connect declares the stream and opens whatever of the producer and the
// reader is not open.
func (l *subsLog) connect(ctx context.Context) error {
	l.mu.Lock()
	needProd, needReader := l.prod == nil, l.reader == nil
	l.mu.Unlock()
	if !needProd && !needReader {
		return nil
	}
	name := l.b.cfg.SubscriptionsStream
	err := l.b.env.DeclareStream(name, &stream.StreamOptions{MaxSegmentSizeBytes: stream.ByteCapacity{}.MB(16)})
	if err != nil && !errors.Is(err, stream.StreamAlreadyExists) {
		return err
	}
	if needProd {
		if err := l.openProducer(ctx, name); err != nil {
			return err
		}
	}
	if needReader {
		return l.openReader(ctx, name)
	}
	return nil
}

func (l *subsLog) openProducer(ctx context.Context, name string) error {
	p, err := l.b.env.NewProducer(name, stream.NewProducerOptions().
		SetConfirmationTimeOut(l.b.cfg.SaveTimeout).SetClientProvidedName("streamgate-subscriptions"))
	if err != nil {
		return err
	}
	confirms, closed := p.NotifyPublishConfirmation(), p.NotifyClose()
	closeP := sync.OnceFunc(func() { _ = p.Close() }) // the client's Close panics when two run at once
	l.mu.Lock()
	l.prod, l.closeProd = p, closeP
	close(l.up)
	l.up = make(chan struct{})
	l.mu.Unlock()
	l.b.wg.Add(1)
	go func() { // ends with ctx, or when the producer closes
		defer l.b.wg.Done()
	watch:
		for {
			select {
			case _, ok := <-confirms: // outcomes come from reading back; the client blocks until confirms are taken
				if !ok {
					break watch
				}
			case <-closed:
				break watch
			case <-ctx.Done():
				closeP()
				break watch
			}
		}
		l.mu.Lock()
		if l.prod == p {
			l.prod = nil
		}
		l.mu.Unlock()
		signal(l.kick)
	}()
	return nil
}

func (l *subsLog) openReader(ctx context.Context, name string) error {
	spec := stream.OffsetSpecification{}.First()
	if next := l.view.Next(); next > 0 {
		spec = stream.OffsetSpecification{}.Offset(next)
	}
	l.mu.Lock()
	l.gen++
	gen := l.gen
	l.mu.Unlock()
	r, err := l.b.subscribe(name, func(cc stream.ConsumerContext, m *amqp.Message) {
		l.mu.Lock()
		stale := gen != l.gen
		l.mu.Unlock()
		if stale {
			return
		}
		var body []byte
		for _, d := range m.Data {
			body = append(body, d...)
		}
		l.view.Apply(cc.Consumer.GetOffset(), "", body)
	}, stream.NewConsumerOptions().SetOffset(spec).SetClientProvidedName("streamgate-subscriptions").SetCRCCheck(false))
	if err != nil {
		return err
	}
	closed := r.NotifyClose()
	closeR := sync.OnceFunc(func() { l.b.unsubscribe(r) })
	l.mu.Lock()
	l.reader, l.closeReader = r, closeR
	l.mu.Unlock()
	l.b.wg.Add(1)
	go func() { // ends with ctx, or when the reader closes
		defer l.b.wg.Done()
		select {
		case <-closed:
		case <-ctx.Done():
			closeR()
		}
		l.mu.Lock()
		if l.reader == r {
			l.reader = nil
			l.gen++
		}
		l.mu.Unlock()
		signal(l.kick)
	}()
	return nil
}

// Append implements registry.Log: it hands the record to the producer
// (waiting, up to ctx, for one to be open); the store learns the outcome
// by reading the record back. Keys are not needed: nothing compacts.
func (l *subsLog) Append(ctx context.Context, _ string, value []byte) (int64, error) {
	for {
		l.mu.Lock()
		p, up, closed := l.prod, l.up, l.closed
		l.mu.Unlock()
		switch {
		case closed:
			return -1, broker.ErrClosed
		case p != nil:
			if err := p.Send(amqp.NewMessage(value)); err != nil {
				return -1, translate(err)
			}
			return -1, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return -1, fmt.Errorf("%w: the subscription stream is not open: %w", broker.ErrUnavailable, ctx.Err())
		}
	}
}
