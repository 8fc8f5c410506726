package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// SubscribeOptions open a subscriber.
type SubscribeOptions struct {
	Subscription  string
	Topics        []string
	FromBeginning bool   // start at the earliest message if the subscription has no position yet
	MaxUnacked    uint32 // 0: the server's limit
	// OpenTimeout bounds the wait for the server's opened reply (a new
	// subscription settles its start positions first). Default 30 s.
	OpenTimeout time.Duration
	// CloseTimeout bounds Close's wait for the server to end the stream
	// after the last acks. Default 10 s.
	CloseTimeout time.Duration
	// ConfirmAcks opens the stream with confirm_acks: the server answers
	// every ack, and AckWithResult reports whether it is durably saved
	// (confirm.go). It costs a position save per ack batch.
	ConfirmAcks bool
}

// ErrClosed is returned by Ack and Nack after Close.
var ErrClosed = errors.New("streamgate: subscriber closed")

// Subscriber is one open Subscribe stream: the low-level API, one stream on
// one node, no reconnect (Subscription.Receive adds that). Recv from one
// goroutine; Ack, Nack and Close may be called from any.
type Subscriber struct {
	stream       pb.Subscriber_SubscribeClient
	cancel       context.CancelFunc
	closeTimeout time.Duration
	// ID, MaxUnacked, Node and AckDeadline come from the server's opened
	// reply. AckDeadline is how long a delivered message may stay un-acked
	// unless ModifyAckDeadline extends it (0 from a server too old to say).
	ID          string
	MaxUnacked  uint32
	Node        string
	AckDeadline time.Duration

	sendMu sync.Mutex // guards Send against CloseSend, and closed
	closed bool

	items     chan received // from the reader goroutine to Recv
	ended     chan struct{} // closed when the reader has seen the stream end
	endErr    error         // how it ended (io.EOF: the server ended it with OK); set before ended closes
	closing   chan struct{} // closed by Close: the reader drops what it reads
	closeOnce sync.Once

	confirm bool       // opened with ConfirmAcks
	results ackWaiters // AckWithResult's outcomes not answered yet (confirm.go)
}

// received is one response for Recv.
type received struct {
	msgs   []Received
	notice *Notice
}

// Received is one message.
type Received struct {
	ID              string
	Topic           string
	Shard           string
	Key             []byte
	Payload         []byte
	Headers         []Header
	PublishTime     time.Time
	DeliveryAttempt uint32
}

// Notice is a condition the server reports; Terminal ones end the stream.
type Notice struct {
	Code     codes.Code
	Message  string
	Terminal bool
}

// Subscribe opens a subscriber and waits for the server's opened reply.
// Canceling ctx ends the stream at once (acks not yet sent are lost);
// Close ends it gracefully.
func (c *Client) Subscribe(ctx context.Context, o SubscribeOptions) (*Subscriber, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := pb.NewSubscriberClient(c.conn).Subscribe(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	start := pb.StartPosition_START_POSITION_UNSPECIFIED
	if o.FromBeginning {
		start = pb.StartPosition_START_POSITION_EARLIEST
	}
	err = stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: &pb.Open{
		Subscription: o.Subscription, Topics: o.Topics, StartPosition: start, MaxUnacked: o.MaxUnacked,
		ConfirmAcks: o.ConfirmAcks,
	}}})
	if err != nil {
		_, err = stream.Recv() // the stream's status says why
		cancel()
		return nil, err
	}
	openTimeout := orDefault(o.OpenTimeout, 30*time.Second)
	var timedOut atomic.Bool
	timer := time.AfterFunc(openTimeout, func() { timedOut.Store(true); cancel() })
	resp, err := stream.Recv()
	timer.Stop()
	if err != nil {
		cancel()
		if timedOut.Load() {
			return nil, status.Errorf(codes.DeadlineExceeded, "streamgate: no opened reply within %s", openTimeout)
		}
		return nil, err
	}
	opened := resp.GetOpened()
	if opened == nil {
		cancel()
		return nil, errors.New("streamgate: the server did not answer opened")
	}
	s := &Subscriber{
		stream: stream, cancel: cancel, closeTimeout: orDefault(o.CloseTimeout, 10*time.Second),
		ID: opened.GetSubscriberId(), MaxUnacked: opened.GetMaxUnacked(), Node: opened.GetNode(),
		AckDeadline: time.Duration(opened.GetAckDeadlineSeconds()) * time.Second,
		items:       make(chan received), ended: make(chan struct{}), closing: make(chan struct{}),
		confirm: o.ConfirmAcks,
	}
	go s.read()
	return s, nil
}

// read turns responses into items for Recv until the stream ends; it never
// outlives the stream's context.
func (s *Subscriber) read() {
	defer close(s.ended)
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.endErr = err
			// Acks not answered now never will be: not known to be saved.
			s.results.end(status.Errorf(codes.Unavailable, "streamgate: the stream ended before the ack was answered; it may not be saved: %v", err))
			return
		}
		if r := resp.GetAckResult(); r != nil {
			s.results.settle(r)
			continue
		}
		it := toReceived(resp)
		select {
		case s.items <- it:
		case <-s.closing: // nobody reads any more: drop it, it was not acked
		case <-s.stream.Context().Done(): // the next Recv fails
		}
	}
}

func toReceived(resp *pb.SubscribeResponse) received {
	if n := resp.GetNotice(); n != nil {
		return received{notice: &Notice{Code: codes.Code(n.GetStatus().GetCode()), Message: n.GetStatus().GetMessage(), Terminal: n.GetTerminal()}}
	}
	batch := resp.GetMessages().GetMessages()
	out := make([]Received, len(batch))
	for i, m := range batch {
		r := Received{
			ID: m.GetId(), Topic: m.GetTopic(), Shard: m.GetShard(), Key: m.GetKey(), Payload: m.GetPayload(),
			DeliveryAttempt: m.GetDeliveryAttempt(),
		}
		if m.GetPublishTime() != nil {
			r.PublishTime = m.GetPublishTime().AsTime()
		}
		for _, h := range m.GetHeaders() {
			r.Headers = append(r.Headers, Header{Key: h.GetKey(), Value: h.GetValue()})
		}
		out[i] = r
	}
	return received{msgs: out}
}

// Recv waits for the next batch of messages or a notice (one of the two is
// set). After a terminal notice, or when the stream ends, it returns an
// error with the stream's status (io.EOF when the server ended it with OK,
// as it does after Close).
func (s *Subscriber) Recv() ([]Received, *Notice, error) {
	return s.RecvContext(context.Background())
}

// RecvContext is Recv that also returns when ctx ends (with ctx's error);
// the stream stays open.
func (s *Subscriber) RecvContext(ctx context.Context) ([]Received, *Notice, error) {
	select {
	case it := <-s.items:
		return it.msgs, it.notice, nil
	case <-s.ended:
		return nil, nil, s.endErr
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// Ack acks messages by id.
func (s *Subscriber) Ack(ids ...string) error {
	return s.send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{MessageIds: ids}}})
}

// Nack hands messages back for redelivery.
func (s *Subscriber) Nack(ids ...string) error {
	return s.send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{MessageIds: ids}}})
}

// MaxNackDelay is the longest delay NackWithDelay may ask for.
const MaxNackDelay = 600 * time.Second

// NackWithDelay hands messages back to be delivered again no sooner than
// delay from now (rounded up to whole seconds, at most MaxNackDelay); the
// rest of their shards wait behind them, other shards flow. reason (may
// be empty) is kept with the messages on the server.
func (s *Subscriber) NackWithDelay(delay time.Duration, reason string, ids ...string) error {
	secs, err := wholeSeconds("nack delay", delay, MaxNackDelay)
	if err != nil {
		return err
	}
	return s.send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{MessageIds: ids, DelaySeconds: secs, Reason: reason}}})
}

// MaxAckDeadline is the longest deadline ModifyAckDeadline may give.
const MaxAckDeadline = 600 * time.Second

// ModifyAckDeadline gives messages this stream holds a new ack deadline,
// d from now (rounded up to whole seconds, at most MaxAckDeadline), so a
// slow handler is not cut off; d of 0 hands them back now, as Nack does.
func (s *Subscriber) ModifyAckDeadline(d time.Duration, ids ...string) error {
	secs, err := wholeSeconds("ack deadline", d, MaxAckDeadline)
	if err != nil {
		return err
	}
	return s.send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_ModifyAckDeadline{ModifyAckDeadline: &pb.ModifyAckDeadline{MessageIds: ids, AckDeadlineSeconds: secs}}})
}

// wholeSeconds is d rounded up to the whole seconds the API carries, or
// InvalidArgument naming what when d is outside 0..limit.
func wholeSeconds(what string, d, limit time.Duration) (uint32, error) {
	if d < 0 || d > limit {
		return 0, status.Errorf(codes.InvalidArgument, "streamgate: %s %s: want 0 to %s", what, d, limit)
	}
	return uint32((d + time.Second - 1) / time.Second), nil
}

func (s *Subscriber) send(req *pb.SubscribeRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.stream.Send(req)
}

// Close leaves gracefully: it half-closes the stream after the acks already
// sent, and waits (up to CloseTimeout) for the server to end it, which the
// server does once it has applied every one of them; un-acked messages go
// to other subscribers. Messages that arrive meanwhile are dropped (they
// were not acked, so they come back). Close returns an error only when the
// server did not end the stream in time: acks may then be lost.
func (s *Subscriber) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closing)
		// A context, not a timer: its Done stays closed for both waits.
		wait, stop := context.WithTimeout(context.Background(), s.closeTimeout)
		defer stop()
		if s.confirm {
			// Acks sent are answered before the half-close: the server
			// drops the answers of a stream that ended.
			select {
			case <-s.results.whenIdle():
			case <-s.ended:
			case <-wait.Done():
			}
		}
		half := make(chan struct{})
		go func() {
			defer close(half)
			s.sendMu.Lock()
			defer s.sendMu.Unlock()
			if !s.closed {
				s.closed = true
				_ = s.stream.CloseSend() // when it fails, the stream has ended already
			}
		}()
		select {
		case <-s.ended:
		case <-wait.Done():
			err = fmt.Errorf("streamgate: the server did not end the stream within %s of close; acks sent last may be lost", s.closeTimeout)
		}
		s.cancel() // ends a Send stuck on a server that stopped reading
		<-half
		<-s.ended
	})
	return err
}

// Err is how the stream ended, once it has: nil while it is open, io.EOF
// after a clean end.
func (s *Subscriber) Err() error {
	select {
	case <-s.ended:
		return s.endErr
	default:
		return nil
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// String describes a notice.
func (n *Notice) String() string {
	kind := "notice"
	if n.Terminal {
		kind = "terminal notice"
	}
	return fmt.Sprintf("%s %s: %s", kind, n.Code, n.Message)
}
