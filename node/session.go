package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// A MessageBatch holds at most this many messages and, beyond its first
// message, about this many bytes: gRPC clients refuse responses over 4 MiB
// by default. A single message is at most MaxMessageBytes (1 MiB default).
const (
	maxMessagesPerBatch = 500
	maxBatchBytes       = 3 << 20
)

// session is one open Subscribe stream. Its in-flight messages belong to the
// subscription's dispatcher goroutine; its outbox is shared with the
// stream's writer goroutine.
type session struct {
	id       string
	max      int // un-acked messages it may hold
	openedAt time.Time

	// Owned by the dispatcher goroutine.
	inflight map[string]*message
	gone     bool // removed from the subscription
	// confirm: opened with confirm_acks (confirm.go); unconfirmed counts
	// its acks waiting for a save round.
	confirm     bool
	unconfirmed int

	out outbox
}

func newSession(max int) *session {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &session{
		id:       hex.EncodeToString(b[:]),
		max:      max,
		openedAt: time.Now(),
		inflight: map[string]*message{},
		out:      outbox{signal: make(chan struct{}, 1), ended: make(chan struct{})},
	}
}

// message is one fetched message on its way through the node.
type message struct {
	d       broker.Delivery
	seq     uint64 // fetch order within the subscription, to keep shard order on redelivery
	attempt uint32 // deliveries so far
	// deadline: the holder must ack (or extend) by then, or it is
	// ended as stalled and the message goes to the shard's next owner.
	deadline time.Time
	holder   *session
	reason   string // the last nack's reason
}

// outgoing is one message as handed to the writer: the attempt is copied,
// since the message may be redelivered elsewhere before the writer runs.
type outgoing struct {
	d       *broker.Delivery
	attempt uint32
}

// outbox queues what the dispatcher has for a stream. It never blocks the
// dispatcher: messages are bounded by the session's max un-acked, notices
// are coalesced to the latest, and a terminal notice ends it.
type outbox struct {
	mu       sync.Mutex // guards the fields below
	msgs     []outgoing
	notice   *pb.Notice
	terminal *pb.Notice
	results  ackResults // answers to acks (confirm.go)
	signal   chan struct{}
	ended    chan struct{} // closed with the terminal notice
}

func (o *outbox) push(msgs []outgoing) {
	o.mu.Lock()
	o.msgs = append(o.msgs, msgs...)
	o.mu.Unlock()
	signal(o.signal)
}

func (o *outbox) notify(n *pb.Notice) {
	o.mu.Lock()
	if n.GetTerminal() {
		if o.terminal == nil {
			o.terminal = n
			close(o.ended)
		}
	} else {
		o.notice = n
	}
	o.mu.Unlock()
	signal(o.signal)
}

func (o *outbox) take() ([]outgoing, *pb.Notice, *pb.Notice) {
	o.mu.Lock()
	defer o.mu.Unlock()
	msgs, n, t := o.msgs, o.notice, o.terminal
	o.msgs, o.notice = nil, nil
	return msgs, n, t
}

// terminalErr is the status the stream ends with after its terminal notice.
func (o *outbox) terminalErr() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.terminal == nil {
		return nil
	}
	return status.Error(codes.Code(o.terminal.GetStatus().GetCode()), o.terminal.GetStatus().GetMessage())
}

// signal wakes a capacity-1 channel's reader without blocking: one pending
// signal stands for any number.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// drop removes queued messages of a shard (made void).
func (o *outbox) drop(sh broker.ShardID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = slices.DeleteFunc(o.msgs, func(m outgoing) bool { return m.d.Shard == sh })
}

// hold puts messages back at the front of the outbox.
func (o *outbox) hold(msgs []outgoing) {
	o.mu.Lock()
	o.msgs = append(msgs, o.msgs...)
	o.mu.Unlock()
}

// writeLoop sends what the outbox holds until ctx ends or a terminal notice
// has been sent; it then returns the terminal status as an error. While
// standing says no, messages wait in the outbox: a node that was frozen
// runs this goroutine again perhaps before its dispatcher learns that it
// may no longer deliver, and what it had queued may belong to shards
// another node reads now (the dispatcher drops those).
func (o *outbox) writeLoop(ctx context.Context, stream grpc.BidiStreamingServer[pb.SubscribeRequest, pb.SubscribeResponse], standing func() bool) error {
	var retry <-chan time.Time
	var names shardNames
	for {
		select {
		case <-o.signal:
		case <-retry:
		case <-ctx.Done():
			return ctx.Err()
		}
		retry = nil
		msgs, notice, terminal := o.take()
		if terminal != nil {
			msgs = nil // already handed to the shards' next owners
		}
		if len(msgs) > 0 && standing != nil && !standing() {
			o.hold(msgs)
			msgs = nil
			retry = time.After(50 * time.Millisecond)
		}
		for len(msgs) > 0 {
			n, size := 0, 0
			for n < len(msgs) && n < maxMessagesPerBatch && (n == 0 || size+msgs[n].size() <= maxBatchBytes) {
				size += msgs[n].size()
				n++
			}
			if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Messages{Messages: &pb.MessageBatch{Messages: names.toProto(msgs[:n])}}}); err != nil {
				return err
			}
			msgs = msgs[n:]
		}
		// Answers to acks go out before a terminal notice: saved is worth
		// knowing even from a stream that ends.
		for r := o.takeResults(); r != nil; r = o.takeResults() {
			if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_AckResult{AckResult: r}}); err != nil {
				return err
			}
		}
		if notice != nil && terminal == nil {
			if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Notice{Notice: notice}}); err != nil {
				return err
			}
		}
		if terminal != nil {
			if err := stream.Send(&pb.SubscribeResponse{Response: &pb.SubscribeResponse_Notice{Notice: terminal}}); err != nil {
				return err
			}
			return o.terminalErr()
		}
	}
}

// size approximates the message's encoded size.
func (m outgoing) size() int { return m.d.Message.Size() + len(m.d.ID) + 64 }

func shardName(s broker.ShardID) string {
	return s.Topic + "/" + strconv.FormatInt(int64(s.Index), 10)
}

// shardNames remembers the last shard's name: messages come in runs of a
// shard, and the name is built for each run rather than each message.
type shardNames struct {
	last broker.ShardID
	name string
}

func (n *shardNames) of(s broker.ShardID) string {
	if n.name == "" || s != n.last {
		n.last, n.name = s, shardName(s)
	}
	return n.name
}

// toProto converts a batch of messages with one allocation for all the
// messages and one for all their publish times, not one each: this runs
// for every message delivered.
func (n *shardNames) toProto(msgs []outgoing) []*pb.Message {
	pms := make([]pb.Message, len(msgs))
	out := make([]*pb.Message, len(msgs))
	var times []timestamppb.Timestamp
	for i, m := range msgs {
		d, pm := m.d, &pms[i]
		pm.Id = d.ID
		pm.Topic = d.Message.Topic
		pm.Key = d.Message.Key
		pm.Payload = d.Message.Payload
		pm.DeliveryAttempt = m.attempt
		pm.Shard = n.of(d.Shard)
		if !d.PublishTime.IsZero() {
			if times == nil {
				times = make([]timestamppb.Timestamp, len(msgs))
			}
			ts := &times[i]
			ts.Seconds, ts.Nanos = d.PublishTime.Unix(), int32(d.PublishTime.Nanosecond())
			pm.PublishTime = ts
		}
		if len(d.Message.Headers) > 0 {
			pm.Headers = make([]*pb.Header, len(d.Message.Headers))
			for j, h := range d.Message.Headers {
				pm.Headers[j] = &pb.Header{Key: utf8Key(h.Key), Value: h.Value}
			}
		}
		out[i] = pm
	}
	return out
}

// utf8Key makes a header key a valid protobuf string. Another producer may
// have written any bytes to the broker; clients in other languages reject
// a whole batch with a string that is not UTF-8, so the bad bytes become
// U+FFFD.
func utf8Key(k string) string {
	if utf8.ValidString(k) {
		return k
	}
	return strings.ToValidUTF8(k, "\uFFFD")
}

func notice(c codes.Code, terminal bool, msg string) *pb.Notice {
	return &pb.Notice{Status: &pb.Status{Code: int32(c), Message: msg}, Terminal: terminal}
}
