package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// PublishSettings tune a Publisher. The zero value is ready to use.
type PublishSettings struct {
	// A batch is sent when it holds BatchCount messages or BatchBytes
	// bytes, or its first message has waited Linger. Defaults 100, 1 MiB
	// and 1 ms (5 ms cost a third of the throughput: with the window full,
	// results free a few slots at a time and each partial batch waited).
	BatchCount int
	BatchBytes int
	Linger     time.Duration
	// MaxOutstanding is how many messages may wait for their result; at
	// it Publish blocks. Default 1000, the server's default window.
	MaxOutstanding int
	// ResendOnReconnect sends again, on a new stream, the messages whose
	// stream broke before their result came. The broker may have stored
	// them already, so this can publish a message twice, and a resent
	// message can land after later ones of its key. Off (the default),
	// such messages fail with UNAVAILABLE and the caller decides.
	ResendOnReconnect bool
	// RetryTimeout is how long the publisher tries to open a stream before
	// it fails the messages waiting for one. Default 30 s.
	RetryTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between opens. Defaults
	// 100 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// Logger gets reconnects. Default slog.Default().
	Logger *slog.Logger
}

// PublishResult is the outcome of one Publish, known once Ready is closed.
type PublishResult struct {
	ready chan struct{}
	id    string
	err   error
}

// Ready is closed when the result is known.
func (r *PublishResult) Ready() <-chan struct{} { return r.ready }

// Get waits for the result: the message's id, or why it failed (an error
// with a gRPC status: status.Code(err) is INVALID_ARGUMENT for a bad
// message, NOT_FOUND for an unknown topic, UNAVAILABLE when the broker or
// the stream failed).
func (r *PublishResult) Get(ctx context.Context) (string, error) {
	select {
	case <-r.ready:
		return r.id, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (r *PublishResult) set(id string, err error) {
	r.id, r.err = id, err
	close(r.ready)
}

// ErrPublisherClosed fails a Publish after Close.
var ErrPublisherClosed = errors.New("streamgate: publisher closed")

// Publisher publishes messages in batches over one stream at a time,
// opening another (on another node when one is down) when it breaks. It is
// safe for concurrent use. Close it to wait for every result.
type Publisher struct {
	c          *Client
	set        PublishSettings
	tokens     chan struct{}   // one per message without its result
	in         chan *pending   // from Publish to run
	resend     chan []*pending // from a broken stream to run
	flushReq   chan struct{}
	closeReq   chan struct{}
	settled    chan struct{} // a result came while closing: run looks whether Close can end
	closing    atomic.Bool   // set by Close: results signal settled
	done       chan struct{} // run ended
	unresolved atomic.Int64

	closeMu sync.RWMutex // guards closed against Publish's enqueue
	closed  bool
	once    sync.Once
}

// pending is one message on its way.
type pending struct {
	msg  *pb.OutgoingMessage
	size int
	res  *PublishResult
	seq  uint64 // order of sending on its stream
}

// Publisher starts a publisher; Close stops it.
func (c *Client) Publisher(set PublishSettings) *Publisher {
	if set.BatchCount <= 0 {
		set.BatchCount = 100
	}
	if set.BatchBytes <= 0 {
		set.BatchBytes = 1 << 20
	}
	set.BatchBytes = min(set.BatchBytes, maxRequestBytes)
	set.Linger = orDefault(set.Linger, time.Millisecond)
	if set.MaxOutstanding <= 0 {
		set.MaxOutstanding = 1000
	}
	set.RetryTimeout = orDefault(set.RetryTimeout, 30*time.Second)
	set.MinBackoff = orDefault(set.MinBackoff, 100*time.Millisecond)
	set.MaxBackoff = orDefault(set.MaxBackoff, 5*time.Second)
	if set.Logger == nil {
		set.Logger = slog.Default()
	}
	p := &Publisher{c: c, set: set, tokens: make(chan struct{}, set.MaxOutstanding),
		in: make(chan *pending, set.BatchCount), resend: make(chan []*pending), flushReq: make(chan struct{}, 1),
		closeReq: make(chan struct{}), settled: make(chan struct{}, 1), done: make(chan struct{})}
	go p.run()
	return p
}

// Publish queues m and returns its result, to wait on. It blocks while
// MaxOutstanding messages wait for theirs; ctx bounds that wait only.
// m.RequestID is not used (the result belongs to the call).
func (p *Publisher) Publish(ctx context.Context, m Message) *PublishResult {
	res := &PublishResult{ready: make(chan struct{})}
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		res.set("", ctx.Err())
		return res
	case <-p.done:
		res.set("", ErrPublisherClosed)
		return res
	}
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		<-p.tokens
		res.set("", ErrPublisherClosed)
		return res
	}
	om, size := toOutgoing(m)
	p.unresolved.Add(1)
	p.in <- &pending{msg: om, size: size, res: res}
	return res
}

// PublishBatch publishes msgs in order and returns their results.
func (p *Publisher) PublishBatch(ctx context.Context, msgs []Message) []*PublishResult {
	out := make([]*PublishResult, len(msgs))
	for i, m := range msgs {
		out[i] = p.Publish(ctx, m)
	}
	return out
}

// Flush sends what is batched now, without waiting for Linger.
func (p *Publisher) Flush() {
	select {
	case p.flushReq <- struct{}{}:
	default:
	}
}

// Close sends what is batched and waits until every message has its
// result; later Publishes fail with ErrPublisherClosed.
func (p *Publisher) Close() error {
	p.once.Do(func() {
		p.closeMu.Lock()
		p.closed = true
		p.closeMu.Unlock()
		p.closing.Store(true)
		close(p.closeReq)
	})
	<-p.done
	return nil
}

// run owns the queue and the stream: it batches, sends, and reopens.
func (p *Publisher) run() {
	defer close(p.done)
	var (
		queue   []*pending
		bytes   int
		cur     *pstream
		linger  = time.NewTimer(time.Hour)
		expired bool
		flush   bool
		closing bool
	)
	linger.Stop()
	defer func() {
		if cur != nil {
			cur.end()
		}
	}()
	for {
		if len(queue) > 0 && (expired || flush || closing || len(queue) >= p.set.BatchCount || bytes >= p.set.BatchBytes) {
			var sent int
			cur, sent = p.sendBatch(cur, queue)
			for _, q := range queue[:sent] {
				bytes -= q.size
			}
			queue = queue[sent:]
			if len(queue) == 0 {
				expired, flush = false, false
			}
			continue
		}
		if closing && len(queue) == 0 && p.unresolved.Load() == 0 {
			select {
			case pe := <-p.in: // a Publish that got in before Close
				queue, bytes = append(queue, pe), bytes+pe.size
				continue
			default:
				return
			}
		}
		var broken <-chan struct{}
		if cur != nil {
			broken = cur.done
		}
		select {
		case pe := <-p.in:
			if len(queue) == 0 {
				linger.Reset(p.set.Linger)
			}
			queue, bytes = append(queue, pe), bytes+pe.size
			for len(queue) < p.set.BatchCount { // take what else is there in one go
				select {
				case pe := <-p.in:
					queue, bytes = append(queue, pe), bytes+pe.size
					continue
				default:
				}
				break
			}
		case <-linger.C:
			expired = true
		case ps := <-p.resend:
			for _, q := range ps {
				bytes += q.size
			}
			queue = append(ps, queue...)
			flush = true
		case <-p.flushReq:
			flush = true
		case <-p.closeReq:
			closing = true
			p.closeReq = nil
		case <-p.settled:
		case <-broken:
			cur = nil
		}
	}
}

// sendBatch sends the head of queue on cur, or on a new stream when cur is
// gone, and returns the stream and how many messages left the queue (sent,
// or failed because no stream would open).
func (p *Publisher) sendBatch(cur *pstream, queue []*pending) (*pstream, int) {
	n, size := 0, 0
	for n < len(queue) && n < p.set.BatchCount && (n == 0 || size+queue[n].size <= p.set.BatchBytes) {
		size += queue[n].size
		n++
	}
	batch := queue[:n]
	if cur == nil {
		var err error
		if cur, err = p.open(); err != nil {
			for _, q := range queue {
				p.resolve(q, "", err)
			}
			return nil, len(queue)
		}
	}
	if !cur.send(batch) {
		return nil, 0 // broke before it took them: on the next stream
	}
	return cur, n
}

// open opens a stream, retrying with backoff for up to RetryTimeout.
func (p *Publisher) open() (*pstream, error) {
	bo := backoff{min: p.set.MinBackoff, max: p.set.MaxBackoff}
	deadline := time.Now().Add(p.set.RetryTimeout)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := pb.NewPublisherClient(p.c.conn).Publish(ctx)
		if err == nil {
			s := &pstream{p: p, stream: stream, cancel: cancel, pending: map[string]*pending{}, done: make(chan struct{})}
			go s.receive()
			return s, nil
		}
		cancel()
		if refused(err) || time.Now().After(deadline) {
			return nil, err
		}
		if attempt%10 == 1 {
			p.set.Logger.Warn("streamgate: cannot open a publish stream; retrying", "err", err, "attempt", attempt)
		}
		wctx, wcancel := context.WithDeadline(context.Background(), deadline)
		bo.wait(wctx)
		wcancel()
	}
}

// resolve gives a message its result and frees its slot.
func (p *Publisher) resolve(q *pending, id string, err error) {
	q.res.set(id, err)
	<-p.tokens
	p.unresolved.Add(-1)
	if !p.closing.Load() {
		return // only Close waits on the count; waking run for each result costs
	}
	select {
	case p.settled <- struct{}{}:
	default:
	}
}

// pstream is one Publish stream and the messages sent on it that wait for
// their result.
type pstream struct {
	p      *Publisher
	stream grpc.BidiStreamingClient[pb.PublishRequest, pb.PublishResponse]
	cancel context.CancelFunc
	done   chan struct{} // the stream ended and its pending were handed on

	mu      sync.Mutex // guards pending, seq and dead
	pending map[string]*pending
	seq     uint64
	dead    bool
}

// send sends a batch; false when the stream had already broken.
func (s *pstream) send(batch []*pending) bool {
	req := &pb.PublishRequest{Messages: make([]*pb.OutgoingMessage, len(batch))}
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return false
	}
	for i, q := range batch {
		s.seq++
		q.seq = s.seq
		q.msg.RequestId = strconv.FormatUint(s.seq, 10)
		s.pending[q.msg.RequestId] = q
		req.Messages[i] = q.msg
	}
	s.mu.Unlock()
	// When Send fails the stream is over, and receive, which sees that
	// too, hands the batch on with the rest.
	_ = s.stream.Send(req)
	return true
}

// receive resolves results until the stream ends, then hands what is
// still pending to be sent again or fails it.
func (s *pstream) receive() {
	defer close(s.done)
	var err error
	for {
		var resp *pb.PublishResponse
		if resp, err = s.stream.Recv(); err != nil {
			break
		}
		for _, r := range resp.GetResults() {
			s.mu.Lock()
			q := s.pending[r.GetRequestId()]
			delete(s.pending, r.GetRequestId())
			s.mu.Unlock()
			if q == nil {
				continue
			}
			if e := r.GetError(); e != nil {
				s.p.resolve(q, "", status.Error(codes.Code(e.GetCode()), e.GetMessage()))
			} else {
				s.p.resolve(q, r.GetMessageId(), nil)
			}
		}
	}
	s.cancel()
	s.mu.Lock()
	s.dead = true
	left := make([]*pending, 0, len(s.pending))
	for _, q := range s.pending {
		left = append(left, q)
	}
	s.pending = nil
	s.mu.Unlock()
	if len(left) == 0 {
		return
	}
	slices.SortFunc(left, func(a, b *pending) int { return cmp.Compare(a.seq, b.seq) })
	code := status.Code(err)
	if s.p.set.ResendOnReconnect && !refused(err) && code != codes.ResourceExhausted {
		s.p.set.Logger.Warn("streamgate: publish stream broke; sending its unconfirmed messages again", "err", err, "messages", len(left))
		s.p.resend <- left
		return
	}
	if code == codes.Unknown {
		code = codes.Unavailable
	}
	fail := status.Error(code, fmt.Sprintf("the publish stream broke before the result, so the message may or may not be published: %v", err))
	for _, q := range left {
		s.p.resolve(q, "", fail)
	}
}

// end half-closes the stream and waits for the server to end it.
func (s *pstream) end() {
	s.mu.Lock()
	if !s.dead {
		_ = s.stream.CloseSend()
	}
	s.mu.Unlock()
	<-s.done
}

// toOutgoing converts m and estimates its size on the wire.
func toOutgoing(m Message) (*pb.OutgoingMessage, int) {
	om := &pb.OutgoingMessage{Topic: m.Topic, Key: m.Key, Payload: m.Payload}
	n := len(m.Topic) + len(m.Key) + len(m.Payload) + 24
	for _, h := range m.Headers {
		om.Headers = append(om.Headers, &pb.Header{Key: h.Key, Value: h.Value})
		n += len(h.Key) + len(h.Value) + 4
	}
	return om, n
}
