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
)

// The store's connection to the positions stream: one producer and one
// reader, opened and reopened by the store's own goroutine (run, started by
// New, ended by Close through the Broker's stop context). Every goroutine
// started here also ends with that context, whether or not the client ever
// reports the producer or reader closed: a producer or reader opened while
// Close runs is closed by its watcher, so Close never waits on the client.

// run keeps the producer and the reader of the positions stream open until
// ctx ends, reopening them with backoff after a failure.
func (s *store) run(ctx context.Context) {
	fails := 0
	for ctx.Err() == nil {
		err := s.connect(ctx)
		wait := time.Hour
		if err != nil {
			fails++
			wait = backoff(fails)
			s.b.cfg.log().Warn("positions stream unavailable; retrying", "err", err, "attempt", fails)
		} else {
			fails = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-time.After(wait):
		}
	}
}

// connect opens whatever of the producer and the reader is not open.
func (s *store) connect(ctx context.Context) error {
	s.mu.Lock()
	needProd, needReader := s.prod == nil, s.reader == nil
	from := s.applied
	s.mu.Unlock()
	if !needProd && !needReader {
		return nil
	}
	name := s.b.cfg.PositionsStream
	err := s.b.env.DeclareStream(name, &stream.StreamOptions{
		MaxAge:              s.b.cfg.PositionsMaxAge,
		MaxSegmentSizeBytes: stream.ByteCapacity{}.MB(16),
	})
	if err != nil && !errors.Is(err, stream.StreamAlreadyExists) {
		s.setDown(err)
		return err
	}
	if needProd {
		if err := s.openProducer(ctx, name); err != nil {
			s.setDown(err)
			return err
		}
	}
	if needReader {
		if err := s.openReader(ctx, name, from); err != nil {
			s.setDown(err)
			return err
		}
	}
	s.mu.Lock()
	if s.prod != nil && s.reader != nil && s.down != nil && !s.closed {
		s.down = nil
		close(s.upSignal)
		s.upSignal = make(chan struct{})
	}
	s.mu.Unlock()
	return nil
}

func (s *store) openProducer(ctx context.Context, name string) error {
	p, err := s.b.env.NewProducer(name, stream.NewProducerOptions().
		SetConfirmationTimeOut(s.b.cfg.SaveTimeout).SetClientProvidedName("streamgate-positions"))
	if err != nil {
		return err
	}
	confirms := p.NotifyPublishConfirmation()
	closed := p.NotifyClose()
	// The client's Producer.Close panics when two run at once: one only.
	closeP := sync.OnceFunc(func() { _ = p.Close() })
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		closeP()
		return broker.ErrClosed
	}
	s.prod, s.closeProd = p, closeP
	s.mu.Unlock()
	s.b.wg.Add(1)
	go func() {
		defer s.b.wg.Done()
		// Drain confirmations (outcomes come from reading back, but the
		// client blocks until they are taken) until the producer closes.
		for {
			select {
			case _, ok := <-confirms:
				if ok {
					continue
				}
			case <-ctx.Done():
				closeP()
			}
			return
		}
	}()
	s.b.wg.Add(1)
	go func() {
		defer s.b.wg.Done()
		select {
		case <-closed:
		case <-ctx.Done():
			closeP()
		}
		s.mu.Lock()
		if s.prod == p {
			s.prod = nil
		}
		s.mu.Unlock()
		s.setDown(errors.New("the connection to the positions stream was lost"))
		signal(s.kick)
	}()
	return nil
}

func (s *store) openReader(ctx context.Context, name string, from int64) error {
	spec := stream.OffsetSpecification{}.First()
	if from >= 0 {
		spec = stream.OffsetSpecification{}.Offset(from + 1)
	}
	s.mu.Lock()
	s.gen++
	gen := s.gen
	s.mu.Unlock()
	r, err := s.b.subscribe(name, func(cc stream.ConsumerContext, m *amqp.Message) {
		s.apply(gen, cc.Consumer.GetOffset(), m)
	}, stream.NewConsumerOptions().SetOffset(spec).SetClientProvidedName("streamgate-positions").SetCRCCheck(false))
	if err != nil {
		return err
	}
	closed := r.NotifyClose()
	closeR := sync.OnceFunc(func() { s.b.unsubscribe(r) })
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		closeR()
		return broker.ErrClosed
	}
	s.reader, s.closeReader = r, closeR
	s.mu.Unlock()
	s.b.wg.Add(1)
	go func() {
		defer s.b.wg.Done()
		select {
		case <-closed:
		case <-ctx.Done():
			closeR()
		}
		s.mu.Lock()
		if s.reader == r {
			s.reader = nil
		}
		s.mu.Unlock()
		s.setDown(errors.New("the reader of the positions stream stopped"))
		signal(s.kick)
	}()
	return nil
}

// setDown marks the store unavailable and fails every write waiting to be
// read back: its outcome is unknown (see the guarantee in store.go).
func (s *store) setDown(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		err = broker.ErrClosed
	}
	s.down = err
	for tok, w := range s.waiters {
		w <- outcome{err: fmt.Errorf("%w: positions stream: %w", broker.ErrUnavailable, err)}
		delete(s.waiters, tok)
	}
}

func (s *store) health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != nil {
		return fmt.Errorf("%w: positions stream: %w", broker.ErrUnavailable, s.down)
	}
	return nil
}

// close is called by Broker.Close after it canceled run's context: what is
// open now is closed here, what connect opens later is closed by connect.
func (s *store) close() {
	s.mu.Lock()
	s.closed = true
	closeP, closeR := s.closeProd, s.closeReader
	if s.prod == nil {
		closeP = nil
	}
	if s.reader == nil {
		closeR = nil
	}
	close(s.upSignal) // wakes writes waiting for the store to come up
	s.upSignal = make(chan struct{})
	s.mu.Unlock()
	if closeP != nil {
		closeP()
	}
	if closeR != nil {
		closeR()
	}
	s.setDown(broker.ErrClosed)
}
