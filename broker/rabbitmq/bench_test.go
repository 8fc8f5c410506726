package rabbitmq_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/amqp"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/logs"
	"github.com/rabbitmq/rabbitmq-stream-go-client/pkg/stream"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/broker/rabbitmq"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/rabbitmqtest"
	"github.com/streamgate/streamgate/node"
)

// The RabbitMQ counterparts of node/bench_test.go's BenchmarkPublish and
// BenchmarkSubscribe: the same payloads, shard count, batch size and
// measurement, on the test binary's rabbitmq-server (rabbitmqtest.Require)
// instead of kfake. Each benchmark starts one streamgate node on the
// rabbitmq backend; within one run, direct rabbitmq-stream-go-client and
// streamgate meet the same server. Every publish round (-count) gets a topic
// of its own, shared by its N=1 probe and its measured run; every subscribe
// invocation gets a topic of its own, filled beforehand. The topics are
// deleted when the benchmark ends.
//
//	go test -run XXX -bench BenchmarkRabbitMQ -benchtime 20000x -count 3 ./broker/rabbitmq/

const (
	rmqBenchMessageBytes = 1024
	rmqBenchBatch        = 100
	rmqBenchShards       = 8
	rmqBenchSaveEvery    = 1000 // the direct consumers' StoreOffset cadence, as the backend's SaveEvery
)

// rmqBenchPayloads returns n distinct, incompressible payloads, as
// node/bench_test.go's benchPayloads (same seed).
func rmqBenchPayloads(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, n)
	for i := range out {
		p := make([]byte, rmqBenchMessageBytes)
		for j := 0; j < len(p); j += 8 {
			binary.LittleEndian.PutUint64(p[j:], r.Uint64())
		}
		out[i] = p
	}
	return out
}

// rmqBenchReadBuffer is the direct client's socket receive buffer. The
// client's default (8 KiB, which the backend keeps at the moment) stalls
// reading on loopback: the receive window stays below one segment of lo's
// 64 KiB MTU, so the server waits for TCP's persist timer (about 200 ms
// and up) between sends; a consumer of 625 of these messages took 7.6 s
// with it and 33 ms with 1 MiB. Publishing is not affected (what comes back
// is confirmations).
const rmqBenchReadBuffer = 1 << 20

// quietLogs silences the stream client's global logger for the benchmarks:
// a closing producer logs "use of closed network connection" in the middle
// of a benchmark's result line, which benchstat cannot parse. The package
// has no getter for the default, so it stays silenced for the rest of the
// binary (benchmarks run after the tests).
type quietLogs struct{}

func (quietLogs) Info(string, ...any)  {}
func (quietLogs) Error(string, ...any) {}
func (quietLogs) Debug(string, ...any) {}
func (quietLogs) Warn(string, ...any)  {}

// rmqBenchTimeout bounds one measurement or fill of n messages.
func rmqBenchTimeout(n int) time.Duration {
	return 60*time.Second + time.Duration(n)*time.Millisecond
}

// rmqBenchEnv is one rabbitmq-server (the binary's), a direct stream
// environment on it, and a streamgate node on the rabbitmq backend with a
// client dialed to it.
type rmqBenchEnv struct {
	uri    string
	env    *stream.Environment // direct client's
	admin  *rabbitmq.Broker    // creates and deletes topics
	client *client.Client

	mu     sync.Mutex
	topics []string
	rounds map[*testing.B]*round
	seq    atomic.Int64
}

func startRMQBench(b *testing.B) *rmqBenchEnv {
	b.Helper()
	srv := rabbitmqtest.Require(b)
	logs.SetLogger(quietLogs{})
	e := &rmqBenchEnv{uri: srv.URI(), rounds: map[*testing.B]*round{}}
	var err error
	if e.env, err = stream.NewEnvironment(stream.NewEnvironmentOptions().SetUri(e.uri).SetReadBuffer(rmqBenchReadBuffer)); err != nil {
		b.Fatalf("direct environment: %v", err)
	}
	if e.admin, err = rabbitmq.New(rabbitmq.DefaultConfig(e.uri)); err != nil {
		_ = e.env.Close()
		b.Fatalf("admin backend: %v", err)
	}
	backend, err := rabbitmq.New(rabbitmq.DefaultConfig(e.uri))
	if err != nil {
		e.admin.Close()
		_ = e.env.Close()
		b.Fatalf("node backend: %v", err)
	}
	ncfg := node.DefaultConfig()
	ncfg.NodeName = "bench-node"
	srvNode, err := node.NewServer(ncfg, backend, node.Options{})
	if err != nil {
		backend.Close()
		e.admin.Close()
		_ = e.env.Close()
		b.Fatalf("node: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srvNode.Serve(lis, nil) }()
	// One cleanup, in order: client, node (its subscriptions save, its
	// producers close), node backend, then the topics, admin, environment.
	b.Cleanup(func() {
		if e.client != nil {
			_ = e.client.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		srvNode.Shutdown(ctx)
		cancel()
		select {
		case err := <-served:
			if err != nil {
				b.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			b.Errorf("the node did not stop serving")
		}
		bounded(b, "closing the node's backend", backend.Close)
		e.mu.Lock()
		topics, rounds := e.topics, e.rounds
		e.mu.Unlock()
		bounded(b, "closing the direct producers", func() {
			for _, r := range rounds {
				if r.direct != nil {
					r.direct.close()
				}
			}
		})
		bounded(b, "deleting the topics", func() {
			for _, t := range topics {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := e.admin.DeleteTopic(ctx, t); err != nil {
					b.Logf("deleting topic %s: %v", t, err)
				}
				cancel()
			}
		})
		bounded(b, "closing the admin backend", e.admin.Close)
		bounded(b, "closing the direct environment", func() { _ = e.env.Close() })
	})
	if e.client, err = client.Dial(lis.Addr().String()); err != nil {
		b.Fatal(err)
	}
	return e
}

// bounded runs f, giving up on it (it goes on in the background) after 20 s,
// so that a hanging close cannot hold the run (a test binary killed by
// -timeout or a signal leaves its rabbitmq-server running).
func bounded(b *testing.B, what string, f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		b.Errorf("%s: still not done after 20s", what)
	}
}

// topic creates a fresh topic of rmqBenchShards streams, deleted at the end.
func (e *rmqBenchEnv) topic(b *testing.B, kind string) string {
	b.Helper()
	name := fmt.Sprintf("bench-%s-%d-%d", kind, time.Now().UnixNano()%1e9, e.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.mu.Lock()
	e.topics = append(e.topics, name)
	e.mu.Unlock()
	if err := e.admin.CreateTopic(ctx, name, rmqBenchShards); err != nil {
		b.Fatalf("create topic %s: %v", name, err)
	}
	return name
}

// directPublisher publishes to a topic's streams round-robin with the
// stream client, one producer per stream (the client's defaults: dynamic
// batching of Send, a connection per producer), counting the publish
// confirmations.
type directPublisher struct {
	topic     string
	producers []*stream.Producer
	listeners sync.WaitGroup
	confirmed atomic.Int64
	failed    atomic.Int64
	settled   chan struct{} // a token after every batch of confirmations
	sent      int64
}

func (e *rmqBenchEnv) newDirectPublisher(topic string) (*directPublisher, error) {
	d := &directPublisher{topic: topic, settled: make(chan struct{}, 1)}
	for i := range rmqBenchShards {
		p, err := e.env.NewProducer(fmt.Sprintf("%s-%d", topic, i), stream.NewProducerOptions().SetClientProvidedName("bench-direct"))
		if err != nil {
			d.close()
			return nil, fmt.Errorf("producer of %s-%d: %w", topic, i, err)
		}
		d.producers = append(d.producers, p)
		ch := p.NotifyPublishConfirmation()
		d.listeners.Add(1)
		go func() {
			defer d.listeners.Done()
			for sts := range ch {
				for _, st := range sts {
					if st.IsConfirmed() {
						d.confirmed.Add(1)
					} else {
						d.failed.Add(1)
					}
				}
				select {
				case d.settled <- struct{}{}:
				default:
				}
			}
		}()
	}
	return d, nil
}

// publish sends payloads round-robin and waits until every message sent so
// far is confirmed (or failed), up to timeout.
func (d *directPublisher) publish(payloads [][]byte, timeout time.Duration) error {
	failedBefore := d.failed.Load()
	for i, pl := range payloads {
		if err := d.producers[(int(d.sent)+i)%len(d.producers)].Send(amqp.NewMessage(pl)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	d.sent += int64(len(payloads))
	deadline := time.After(timeout)
	for d.confirmed.Load()+d.failed.Load() < d.sent {
		select {
		case <-d.settled:
		case <-deadline:
			return fmt.Errorf("%d confirmed and %d failed of %d sent after %s", d.confirmed.Load(), d.failed.Load(), d.sent, timeout)
		}
	}
	if n := d.failed.Load() - failedBefore; n > 0 {
		return fmt.Errorf("%d of %d not confirmed", n, len(payloads))
	}
	return nil
}

func (d *directPublisher) close() {
	for _, p := range d.producers {
		_ = p.Close() // closes its confirmation channel
	}
	d.listeners.Wait()
}

// round is what a sub-benchmark keeps between its N=1 probe and its
// measured run, which the testing package runs on one *testing.B (a round
// of -count): the topic, and the direct producers. So both variants are
// measured with their producers open (streamgate's backend opens its own
// on a topic's first message, in the probe), as the Kafka benchmarks are
// measured on a topic the broker's clients know already.
type round struct {
	topic  string
	direct *directPublisher
}

func (e *rmqBenchEnv) round(b *testing.B, kind string, direct bool) *round {
	b.Helper()
	e.mu.Lock()
	r := e.rounds[b]
	e.mu.Unlock()
	if r != nil {
		return r
	}
	r = &round{topic: e.topic(b, kind)}
	if direct {
		var err error
		if r.direct, err = e.newDirectPublisher(r.topic); err != nil {
			b.Fatal(err)
		}
	}
	e.mu.Lock()
	e.rounds[b] = r
	e.mu.Unlock()
	return r
}

// BenchmarkRabbitMQPublish publishes 1 KiB messages to 8 streams of one
// rabbitmq-server, directly with rabbitmq-stream-go-client (publish
// confirms, waiting for all) and through streamgate (Client.Publish,
// batches of 100), in one run. Compare msgs/s.
func BenchmarkRabbitMQPublish(b *testing.B) {
	e := startRMQBench(b)

	b.Run("direct-stream-client", func(b *testing.B) {
		d := e.round(b, "pub-direct", true).direct
		payloads := rmqBenchPayloads(b.N)
		b.SetBytes(rmqBenchMessageBytes)
		b.ResetTimer()
		err := d.publish(payloads, rmqBenchTimeout(b.N))
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})

	b.Run("streamgate", func(b *testing.B) {
		topic := e.round(b, "pub-sg", false).topic
		payloads := rmqBenchPayloads(b.N)
		msgs := func(yield func(client.Message) bool) {
			for i := range b.N {
				if !yield(client.Message{Topic: topic, Payload: payloads[i]}) {
					return
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), rmqBenchTimeout(b.N))
		defer cancel()
		failed, results := 0, 0
		var firstFailure string
		b.SetBytes(rmqBenchMessageBytes)
		b.ResetTimer()
		err := e.client.Publish(ctx, msgs, rmqBenchBatch, func(r client.Result) {
			results++
			if r.Code != codes.OK {
				if failed == 0 {
					firstFailure = r.Code.String() + ": " + r.Error
				}
				failed++
			}
		})
		b.StopTimer()
		if err != nil || failed > 0 || results != b.N {
			b.Fatalf("publish: %v; %d results of %d, %d failed (first: %s)", err, results, b.N, failed, firstFailure)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkRabbitMQSubscribe consumes 1 KiB messages from 8 streams of one
// rabbitmq-server, directly with rabbitmq-stream-go-client (a consumer per
// stream from the first offset, StoreOffset every 1000 messages of a
// stream, as streamgate's backend saves every 1000 acks) and through
// streamgate (one Subscribe stream from the beginning, acking every batch),
// in one run. Compare msgs/s. The topic is filled beforehand, untimed.
func BenchmarkRabbitMQSubscribe(b *testing.B) {
	e := startRMQBench(b)
	fill := func(b *testing.B, kind string) string {
		topic := e.topic(b, kind)
		d, err := e.newDirectPublisher(topic)
		if err != nil {
			b.Fatalf("fill: %v", err)
		}
		defer d.close()
		if err := d.publish(rmqBenchPayloads(b.N), rmqBenchTimeout(b.N)); err != nil {
			b.Fatalf("fill: %v", err)
		}
		return topic
	}

	b.Run("direct-stream-client", func(b *testing.B) {
		topic := fill(b, "sub-direct")
		var got atomic.Int64
		done := make(chan struct{})
		var doneOnce sync.Once
		var storeErr atomic.Pointer[error]
		handler := func() stream.MessagesHandler {
			sinceStore := 0
			return func(cc stream.ConsumerContext, _ *amqp.Message) {
				sinceStore++
				n := got.Add(1)
				if sinceStore >= rmqBenchSaveEvery {
					if err := cc.Consumer.StoreOffset(); err != nil {
						storeErr.CompareAndSwap(nil, &err)
					}
					sinceStore = 0
				}
				if n >= int64(b.N) {
					doneOnce.Do(func() { close(done) })
				}
			}
		}
		var consumers []*stream.Consumer
		defer func() {
			for _, c := range consumers {
				_ = c.Close()
			}
		}()
		b.SetBytes(rmqBenchMessageBytes)
		b.ResetTimer()
		for i := range rmqBenchShards {
			c, err := e.env.NewConsumer(fmt.Sprintf("%s-%d", topic, i), handler(), stream.NewConsumerOptions().
				SetConsumerName("bench-direct").
				SetOffset(stream.OffsetSpecification{}.First()).
				SetManualCommit().
				SetCRCCheck(false). // as the backend's consumers
				SetClientProvidedName("bench-direct"))
			if err != nil {
				b.Fatalf("consumer of %s-%d: %v", topic, i, err)
			}
			consumers = append(consumers, c)
		}
		select {
		case <-done:
		case <-time.After(rmqBenchTimeout(b.N)):
			b.Fatalf("consumed %d of %d before the deadline", got.Load(), b.N)
		}
		for _, c := range consumers { // the final positions, as the Kafka benchmark's last commit
			if err := c.StoreOffset(); err != nil {
				storeErr.CompareAndSwap(nil, &err)
			}
		}
		b.StopTimer()
		if p := storeErr.Load(); p != nil {
			b.Fatalf("store offset: %v", *p)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})

	b.Run("streamgate", func(b *testing.B) {
		topic := fill(b, "sub-sg")
		b.SetBytes(rmqBenchMessageBytes)
		b.ResetTimer()
		sub, err := e.client.Subscribe(context.Background(), client.SubscribeOptions{Subscription: topic, Topics: []string{topic}, FromBeginning: true})
		if err != nil {
			b.Fatal(err)
		}
		var timedOut atomic.Bool
		watchdog := time.AfterFunc(rmqBenchTimeout(b.N), func() {
			timedOut.Store(true)
			_ = sub.Close() // ends Recv
		})
		defer watchdog.Stop()
		defer sub.Close()
		got := 0
		for got < b.N {
			msgs, _, err := sub.Recv()
			if err != nil {
				if timedOut.Load() {
					err = errors.Join(err, fmt.Errorf("received %d of %d before the deadline", got, b.N))
				}
				b.Fatal(err)
			}
			ids := make([]string, len(msgs))
			for i, m := range msgs {
				ids[i] = m.ID
			}
			got += len(msgs)
			if len(ids) > 0 {
				if err := sub.Ack(ids...); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
