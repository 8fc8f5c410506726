package testenv

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// Subscriber is a raw Subscribe stream for tests: it records everything the
// server sends.
type Subscriber struct {
	t      testing.TB
	stream pb.Subscriber_SubscribeClient
	cancel context.CancelFunc
	Opened *pb.Opened

	mu      sync.Mutex // guards the fields below
	msgs    []*pb.Message
	notices []*pb.Notice
	end     error // how the stream ended; nil while open
	ended   bool
	wake    chan struct{}
}

// Subscribe opens a stream with open and waits for opened; it fails the
// test if the server refuses.
func Subscribe(t testing.TB, c *client.Client, open *pb.Open) *Subscriber {
	t.Helper()
	s, err := TrySubscribe(t, c, open)
	if err != nil {
		t.Fatalf("subscribe %q: %v", open.GetSubscription(), err)
	}
	return s
}

// TrySubscribe is Subscribe returning the refusal.
func TrySubscribe(t testing.TB, c *client.Client, open *pb.Open) (*Subscriber, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := pb.NewSubscriberClient(c.Conn()).Subscribe(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: open}}); err != nil {
		cancel()
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.GetOpened() == nil {
		cancel()
		return nil, errors.New("first response is not opened")
	}
	s := &Subscriber{t: t, stream: stream, cancel: cancel, Opened: resp.GetOpened(), wake: make(chan struct{}, 1)}
	done := make(chan struct{})
	go s.recvLoop(done)
	t.Cleanup(func() { s.Close(); <-done })
	return s, nil
}

func (s *Subscriber) recvLoop(done chan struct{}) {
	defer close(done)
	for {
		resp, err := s.stream.Recv()
		s.mu.Lock()
		if err != nil {
			s.ended = true
			if !errors.Is(err, io.EOF) {
				s.end = err
			}
			s.mu.Unlock()
			s.signal()
			return
		}
		if b := resp.GetMessages(); b != nil {
			s.msgs = append(s.msgs, b.GetMessages()...)
		}
		if n := resp.GetNotice(); n != nil {
			s.notices = append(s.notices, n)
		}
		s.mu.Unlock()
		s.signal()
	}
}

func (s *Subscriber) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close cancels the stream (a client that goes away).
func (s *Subscriber) Close() { s.cancel() }

// CloseSend half-closes the stream (a client that leaves politely).
func (s *Subscriber) CloseSend() error { return s.stream.CloseSend() }

// Send sends a raw request.
func (s *Subscriber) Send(req *pb.SubscribeRequest) error { return s.stream.Send(req) }

// Ack acks ids.
func (s *Subscriber) Ack(ids ...string) {
	s.t.Helper()
	if err := s.stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Ack{MessageIds: ids}}}); err != nil {
		s.t.Fatalf("ack: %v", err)
	}
}

// Nack nacks ids.
func (s *Subscriber) Nack(ids ...string) {
	s.t.Helper()
	if err := s.stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Nack{Nack: &pb.Nack{MessageIds: ids}}}); err != nil {
		s.t.Fatalf("nack: %v", err)
	}
}

// Messages returns a copy of every message received so far.
func (s *Subscriber) Messages() []*pb.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.Message(nil), s.msgs...)
}

// Count is the number of messages received so far.
func (s *Subscriber) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// Notices returns a copy of every notice received so far.
func (s *Subscriber) Notices() []*pb.Notice {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.Notice(nil), s.notices...)
}

// Ended says whether the stream has ended, and with which status.
func (s *Subscriber) Ended() (bool, *status.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended, status.Convert(s.end)
}

// WaitFor waits until cond holds, or fails the test after timeout.
func (s *Subscriber) WaitFor(timeout time.Duration, what string, cond func() bool) {
	s.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-s.wake:
		case <-deadline.C:
			s.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(50 * time.Millisecond): // conditions on other state
		}
	}
}

// WaitCount waits until at least n messages have arrived.
func (s *Subscriber) WaitCount(n int, timeout time.Duration) []*pb.Message {
	s.t.Helper()
	s.WaitFor(timeout, "messages", func() bool { return s.Count() >= n })
	return s.Messages()
}

// WaitEnd waits until the stream ends and returns its status.
func (s *Subscriber) WaitEnd(timeout time.Duration) *status.Status {
	s.t.Helper()
	s.WaitFor(timeout, "the stream to end", func() bool { e, _ := s.Ended(); return e })
	_, st := s.Ended()
	return st
}
