package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/broker/cursor"
	"github.com/streamgate/streamgate/broker/registry"
)

var (
	_ broker.Publisher = (*Broker)(nil)
	_ broker.Pinger    = (*Broker)(nil)
)

// Broker is the RabbitMQ streams backend: one environment (the client's
// connection pool), a producer per stream written to, the positions store,
// and a consumer per subscription the node reads.
type Broker struct {
	cfg   Config
	env   *stream.Environment
	tag   [16]byte      // this backend's part of every message id it makes
	seq   atomic.Uint64 // the counter part
	slots chan struct{} // MaxInFlight: one per message not yet confirmed
	// aborted: Abort was called; consumers save nothing from then on.
	aborted atomic.Bool
	store   *store

	stop      context.CancelFunc // ends the goroutines below
	wg        sync.WaitGroup     // producers' confirmation readers, the store's watchers
	storeDone chan struct{}      // closed when the store's goroutine (store.run) returns

	subMu sync.Mutex // held while a stream subscription opens or closes (topics.go)

	mu        sync.Mutex // guards the fields below
	producers map[string]*producer
	creating  map[string]chan struct{} // a producer being created: closed when done
	shardsOf  map[string]cachedShards
	rr        map[string]int // round-robin position of unkeyed messages per topic
	consumers map[*consumer]bool
	closed    bool
	subs      *subsLog // the subscription store, started on first use (subscriptions.go)

	registry.Lazy // broker.SubscriptionStore, over subscriptionStore
}

type cachedShards struct {
	n  int
	at time.Time
}

// shardCacheTTL: how long Publish trusts a topic's shard count.
const shardCacheTTL = 10 * time.Second

// New connects to the server: it fails when the server does not answer,
// because the environment needs a first connection. The positions stream
// is declared and read in the background from then on.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	env, err := stream.NewEnvironment(stream.NewEnvironmentOptions().
		SetUri(cfg.URI).
		SetMaxProducersPerClient(10).
		// One connection per stream subscription: the client reads a
		// connection's chunks on one goroutine, so a shard that is slow
		// to hand over cannot hold another.
		SetMaxConsumersPerClient(1).
		SetRPCTimeout(cfg.SaveTimeout).
		// The client's 8 KiB socket buffers keep the TCP window under one
		// segment on loopback (64 KiB MTU): the server then waits on TCP's
		// persist timer between chunks, and a consumer read 640 messages
		// a second (BENCHMARKS.md). 1 MiB each way.
		SetReadBuffer(1 << 20).
		SetWriteBuffer(1 << 20))
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: connecting to %s: %w", redact(cfg.URI), translate(err))
	}
	b := &Broker{
		cfg:       cfg,
		env:       env,
		slots:     make(chan struct{}, cfg.MaxInFlight),
		producers: map[string]*producer{},
		creating:  map[string]chan struct{}{},
		shardsOf:  map[string]cachedShards{},
		rr:        map[string]int{},
		consumers: map[*consumer]bool{},
	}
	b.Lazy.Open = b.subscriptionStore
	if _, err := rand.Read(b.tag[:]); err != nil {
		env.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	b.store = newStore(b)
	b.storeDone = make(chan struct{})
	go func() { // owned by Close, which waits for storeDone
		defer close(b.storeDone)
		b.store.run(ctx)
	}()
	return b, nil
}

// nextTagged makes a new message id tail: the backend's tag and counter.
func (b *Broker) nextTagged() string {
	buf := make([]byte, 16, 16+binary.MaxVarintLen64)
	copy(buf, b.tag[:])
	return string(binary.AppendUvarint(buf, b.seq.Add(1)))
}

// producer writes one stream. pending holds its messages in Publish
// order; results are handed out from the front only, so done is called in
// Publish order even when a timeout fails a message before a later one is
// confirmed.
type producer struct {
	b      *Broker
	stream string
	p      *stream.Producer

	sendMu  sync.Mutex // held across adding to pending and Send: their orders match
	emitMu  sync.Mutex // held while results are handed out: one at a time, in order
	mu      sync.Mutex // guards pending, byMsg, dead
	pending []*pendingMsg
	byMsg   map[*amqp.AMQP10]*pendingMsg
	dead    bool // closed: new messages go to a new producer
}

type pendingMsg struct {
	msg  *amqp.AMQP10
	id   string
	done func(broker.PublishResult)
	res  *broker.PublishResult // nil until known
}

// Publish implements broker.Publisher.
func (b *Broker) Publish(ctx context.Context, msg *broker.Message, done func(broker.PublishResult)) {
	if msg.Size() > b.cfg.MaxMessageBytes {
		done(broker.PublishResult{Err: fmt.Errorf("%w: %d bytes, the limit is %d", broker.ErrInvalidMessage, msg.Size(), b.cfg.MaxMessageBytes)})
		return
	}
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		done(broker.PublishResult{Err: fmt.Errorf("%w: %w", broker.ErrUnavailable, ctx.Err())})
		return
	}
	release := func(r broker.PublishResult) {
		<-b.slots
		done(r)
	}
	n, err := b.shardCount(ctx, msg.Topic)
	if err != nil {
		release(broker.PublishResult{Err: err})
		return
	}
	s := broker.ShardID{Topic: msg.Topic, Index: b.pick(msg, n)}
	p, err := b.producerFor(ctx, streamName(s))
	if err != nil {
		release(broker.PublishResult{Err: err})
		return
	}
	tagged := b.nextTagged()
	am := amqp.NewMessage(encodeEnvelope(msg, tagged, time.Now()))
	am.Properties = &amqp.MessageProperties{ContentType: envelopeType}
	pm := &pendingMsg{msg: am, id: encodeTaggedID(s, tagged), done: release}
	p.sendMu.Lock()
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		p.sendMu.Unlock()
		release(broker.PublishResult{Err: fmt.Errorf("%w: the connection to the stream was lost", broker.ErrUnavailable)})
		return
	}
	p.pending = append(p.pending, pm)
	p.byMsg[am] = pm
	p.mu.Unlock()
	err = p.p.Send(am)
	p.sendMu.Unlock()
	if err != nil {
		p.settle(am, broker.PublishResult{Err: translate(err)})
		p.emit()
	}
}

// pick chooses the shard: murmur2 of the key as Kafka's Java client, or
// round-robin for unkeyed messages.
func (b *Broker) pick(msg *broker.Message, n int) int32 {
	if msg.Key != nil {
		return int32(cursor.KeyShard(msg.Key, n))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := (b.rr[msg.Topic] + 1) % n
	b.rr[msg.Topic] = i
	return int32(i)
}

// settle records a message's result; false if it is not pending.
func (p *producer) settle(am *amqp.AMQP10, r broker.PublishResult) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pm := p.byMsg[am]
	if pm == nil {
		return false
	}
	delete(p.byMsg, am)
	if r.Err == nil {
		r.ID = pm.id
	}
	pm.res = &r
	return true
}

// emit hands out the results at the front of pending, in order.
func (p *producer) emit() {
	p.emitMu.Lock()
	defer p.emitMu.Unlock()
	p.mu.Lock()
	i := 0
	for i < len(p.pending) && p.pending[i].res != nil {
		i++
	}
	ready := p.pending[:i:i]
	p.pending = p.pending[i:]
	p.mu.Unlock()
	for _, pm := range ready {
		pm.done(*pm.res)
	}
}

// confirmations reads the producer's confirmations until the client closes
// the channel (the producer or its connection closed); then every message
// still pending fails, and the producer is forgotten so that the next
// Publish opens a new one.
func (p *producer) confirmations(ch stream.ChannelPublishConfirm) {
	for statuses := range ch {
		for _, st := range statuses {
			am, ok := st.GetMessage().(*amqp.AMQP10)
			if !ok {
				continue
			}
			if st.IsConfirmed() {
				p.settle(am, broker.PublishResult{})
			} else {
				p.settle(am, broker.PublishResult{Err: confirmError(st.GetErrorCode(), st.GetError())})
			}
		}
		p.emit()
	}
	p.b.mu.Lock()
	if p.b.producers[p.stream] == p {
		delete(p.b.producers, p.stream)
	}
	closed := p.b.closed
	p.b.mu.Unlock()
	err := fmt.Errorf("%w: the connection to stream %q was lost before the server confirmed", broker.ErrUnavailable, p.stream)
	if closed {
		err = fmt.Errorf("%w: closed before the server confirmed", broker.ErrClosed)
	}
	p.sendMu.Lock() // no Send is half-way
	p.mu.Lock()
	p.dead = true
	for am, pm := range p.byMsg {
		r := broker.PublishResult{Err: err}
		pm.res = &r
		delete(p.byMsg, am)
	}
	p.mu.Unlock()
	p.sendMu.Unlock()
	p.emit()
}

// producerFor returns the stream's producer, opening it if needed; one
// open per stream at a time.
func (b *Broker) producerFor(ctx context.Context, name string) (*producer, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, broker.ErrClosed
		}
		if p := b.producers[name]; p != nil {
			b.mu.Unlock()
			return p, nil
		}
		wait, busy := b.creating[name]
		if !busy {
			wait = make(chan struct{})
			b.creating[name] = wait
		}
		b.mu.Unlock()
		if busy {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", broker.ErrUnavailable, ctx.Err())
			}
		}
		p, err := b.openProducer(name)
		b.mu.Lock()
		delete(b.creating, name)
		close(wait)
		if err == nil {
			if b.closed {
				b.mu.Unlock()
				_ = p.p.Close()
				return nil, broker.ErrClosed
			}
			b.producers[name] = p
		}
		b.mu.Unlock()
		return p, err
	}
}

func (b *Broker) openProducer(name string) (*producer, error) {
	sp, err := b.env.NewProducer(name, stream.NewProducerOptions().
		SetConfirmationTimeOut(b.cfg.PublishTimeout).
		SetClientProvidedName("streamgate"))
	if err != nil {
		return nil, translate(fmt.Errorf("opening a producer of stream %q: %w", name, err))
	}
	p := &producer{b: b, stream: name, p: sp, byMsg: map[*amqp.AMQP10]*pendingMsg{}}
	ch := sp.NotifyPublishConfirmation()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		p.confirmations(ch)
	}()
	return p, nil
}

// Ping implements broker.Pinger: asks whether the positions stream exists,
// one round trip.
func (b *Broker) Ping(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { // the client's calls take no context; its RPC timeout bounds this
		_, err := b.env.StreamExists(b.cfg.PositionsStream)
		errc <- err
	}()
	select {
	case err := <-errc:
		return translate(err)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, ctx.Err())
	}
}

// Close closes the producers (messages not confirmed fail with ErrClosed)
// and the connections, and waits for every goroutine of the backend.
// Consumers should be closed first.
func (b *Broker) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	ps := make([]*producer, 0, len(b.producers))
	for _, p := range b.producers {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	for _, p := range ps {
		_ = p.p.Close()
	}
	b.stop()
	b.store.close()
	b.closeSubscriptions()
	// The client races when the environment closes while a producer or
	// consumer is being opened on it: let the store's goroutine finish
	// what it is opening (it closes it again) first.
	<-b.storeDone
	_ = b.env.Close()
	b.wg.Wait()
}

// Abort stops the backend at once and saves nothing, as a killed process
// would. For tests of failure handling.
func (b *Broker) Abort() {
	b.aborted.Store(true)
	b.Close()
}

// MaxMessageBytes is the size limit this backend was configured with.
func (b *Broker) MaxMessageBytes() int { return b.cfg.MaxMessageBytes }
