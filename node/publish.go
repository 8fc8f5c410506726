package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"unicode/utf8"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker"
	"github.com/streamgate/streamgate/internal/auth"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// maxResultsPerResponse bounds one PublishResponse; results that are ready
// together go out together, up to this many.
const maxResultsPerResponse = 500

// publishService implements the Publisher gRPC service.
type publishService struct {
	pb.UnimplementedPublisherServer
	cfg     Config
	backend broker.Publisher
	bytes   *semaphore.Weighted // the node-wide cap on buffered message bytes
	metrics *metrics
	log     *slog.Logger
	auth    *auth.Auth // nil: auth off (node/auth.go)
}

func newPublishService(cfg Config, backend broker.Publisher, m *metrics, log *slog.Logger) *publishService {
	return &publishService{
		cfg:     cfg,
		backend: backend,
		bytes:   semaphore.NewWeighted(cfg.MaxBufferedBytes),
		metrics: m,
		log:     log,
	}
}

// Publish serves one publish stream. The handler's goroutine reads the
// stream; a sender goroutine writes results. A message takes a window slot
// before it is read further, and gives it back when its result is sent, so
// at most PublishWindow messages per stream are unconfirmed; at the limit
// the handler stops reading and gRPC flow control pushes back on the client.
func (s *publishService) Publish(stream grpc.BidiStreamingServer[pb.PublishRequest, pb.PublishResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()

	ps := &publishStream{
		svc: s,
		// Not the stream's context: a message taken is published (or
		// fails by the publish timeout) even when its stream ends first.
		// franz-go fails a partition's whole queue when its head record's
		// context is canceled, so a client that went away would fail
		// other clients' messages with CANCELED.
		detached: context.WithoutCancel(ctx),
		window:   make(chan struct{}, s.cfg.PublishWindow),
		results:  make(chan *pb.PublishResult, s.cfg.PublishWindow),
		eof:      make(chan struct{}),
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- ps.sendLoop(ctx, stream) }()

	if err := ps.readLoop(ctx, stream); err != nil {
		cancel()
		<-sendErr
		return grpcError(err)
	}
	// The client closed its side: the sender ends once every result is out.
	close(ps.eof)
	return grpcError(<-sendErr)
}

// publishStream is the state of one Publish call.
type publishStream struct {
	svc      *publishService
	detached context.Context // the stream's values without its cancellation
	topics   topicNames
	// window holds one token per unconfirmed message.
	window chan struct{}
	// results never fills: each entry holds a window token.
	results chan *pb.PublishResult
	// eof is closed when the client has sent its last request.
	eof chan struct{}
}

func (ps *publishStream) readLoop(ctx context.Context, stream grpc.BidiStreamingServer[pb.PublishRequest, pb.PublishResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, m := range req.GetMessages() {
			if err := ps.publish(ctx, m); err != nil {
				return err
			}
		}
	}
}

// publish takes a window slot and hands m to the backend, or answers it at
// once if it is invalid. It returns an error only when the stream is done.
func (ps *publishStream) publish(ctx context.Context, m *pb.OutgoingMessage) error {
	select {
	case ps.window <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}

	msg, err := ps.svc.validate(m)
	if err == nil {
		msg.Topic = ps.topics.of(msg.Topic)
		// A denied message fails alone; the stream goes on.
		err = ps.svc.authorize(ctx, msg.Topic)
	}
	if err != nil {
		ps.results <- &pb.PublishResult{RequestId: m.GetRequestId(), Error: toStatus(err)}
		return nil
	}
	size := int64(msg.Size())
	if err := ps.svc.bytes.Acquire(ctx, size); err != nil {
		ps.results <- &pb.PublishResult{RequestId: m.GetRequestId(), Error: toStatus(err)}
		return err
	}
	ps.svc.metrics.publishBufferedBytes.Add(float64(size))
	reqID := m.GetRequestId()
	ps.svc.backend.Publish(ps.detached, msg, func(r broker.PublishResult) {
		ps.svc.bytes.Release(size)
		ps.svc.metrics.publishBufferedBytes.Sub(float64(size))
		ps.results <- &pb.PublishResult{RequestId: reqID, MessageId: r.ID, Error: toStatus(r.Err)}
	})
	return nil
}

// sendLoop batches ready results into responses.
func (ps *publishStream) sendLoop(ctx context.Context, stream grpc.BidiStreamingServer[pb.PublishRequest, pb.PublishResponse]) error {
	eof := ps.eof
	for {
		// After EOF nothing takes a window slot, so an empty window means
		// every result has been sent.
		if eof == nil && len(ps.window) == 0 {
			return nil
		}
		var first *pb.PublishResult
		select {
		case first = <-ps.results:
		case <-eof:
			eof = nil
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		batch := []*pb.PublishResult{first}
	drain:
		for len(batch) < maxResultsPerResponse {
			select {
			case r := <-ps.results:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		err := stream.Send(&pb.PublishResponse{Results: batch})
		// Counted per code once a batch: the label lookup hashes its value.
		ok := 0
		for _, r := range batch {
			if c := codes.Code(r.GetError().GetCode()); c == codes.OK {
				ok++
			} else {
				ps.svc.metrics.publishResults.WithLabelValues(c.String()).Inc()
			}
			<-ps.window
		}
		if ok > 0 {
			ps.svc.metrics.publishResults.WithLabelValues(codes.OK.String()).Add(float64(ok))
		}
		if err != nil {
			return err
		}
	}
}

// validate checks what the node can check without the backend.
func (s *publishService) validate(m *pb.OutgoingMessage) (*broker.Message, error) {
	if m == nil {
		return nil, invalidf("message is empty")
	}
	if m.GetTopic() == "" {
		return nil, invalidf("request %q: topic is empty", m.GetRequestId())
	}
	// The codec decodes strings without checking UTF-8 (protobuf's own
	// code rejected the whole request); a string that is not UTF-8 would
	// break other languages' clients that receive it.
	if !utf8.ValidString(m.GetRequestId()) {
		return nil, invalidf("request id %q is not UTF-8", m.GetRequestId())
	}
	if !utf8.ValidString(m.GetTopic()) {
		return nil, invalidf("request %q: topic %q is not UTF-8", m.GetRequestId(), m.GetTopic())
	}
	// The header count and key length are checked before anything is
	// copied: a message of a million empty headers is small in bytes but
	// costly to carry through every backend.
	if n, max := len(m.GetHeaders()), s.cfg.MaxHeaders; max > 0 && n > max {
		return nil, invalidf("request %q: %d headers, over the limit of %d (--max-headers)", m.GetRequestId(), n, max)
	}
	if n, max := len(m.GetKey()), s.cfg.MaxKeyBytes; max > 0 && n > max {
		return nil, invalidf("request %q: key is %d bytes, over the limit of %d (--max-key-bytes)", m.GetRequestId(), n, max)
	}
	for _, h := range m.GetHeaders() {
		if !utf8.ValidString(h.GetKey()) {
			return nil, invalidf("request %q: header key %q is not UTF-8", m.GetRequestId(), h.GetKey())
		}
	}
	msg := &broker.Message{Topic: m.GetTopic(), Key: m.GetKey(), Payload: m.GetPayload()}
	if hs := m.GetHeaders(); len(hs) > 0 {
		msg.Headers = make([]broker.Header, len(hs))
		for i, h := range hs {
			msg.Headers[i] = broker.Header{Key: h.GetKey(), Value: h.GetValue()}
		}
	}
	if n := msg.Size(); n > s.cfg.MaxMessageBytes {
		return nil, invalidf("request %q: message is %d bytes, over the limit of %d", m.GetRequestId(), n, s.cfg.MaxMessageBytes)
	}
	return msg, nil
}

// topicNames gives a stream's messages topic strings of their own. A
// decoded request's strings point into its frame (the codec aliases it),
// and the producer keeps a topic's string for as long as it knows the
// topic: a frame of up to 16 MiB would stay in memory for good. Messages
// of one topic come in runs, so the last name is kept and reused.
type topicNames struct {
	last string
}

func (t *topicNames) of(topic string) string {
	if topic != t.last {
		t.last = strings.Clone(topic)
	}
	return t.last
}
