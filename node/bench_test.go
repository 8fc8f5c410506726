package node_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
)

const (
	benchMessageBytes = 1024
	benchBatch        = 100
)

// benchPayloads returns n distinct, incompressible payloads: identical values
// compress to nothing and inflate the figures (FACTS.md).
func benchPayloads(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, n)
	for i := range out {
		p := make([]byte, benchMessageBytes)
		for j := 0; j < len(p); j += 8 {
			binary.LittleEndian.PutUint64(p[j:], r.Uint64())
		}
		out[i] = p
	}
	return out
}

// BenchmarkPublish publishes 1 KiB messages to one kfake broker, directly
// with franz-go and through streamgate, in one run. Compare msgs/s.
func BenchmarkPublish(b *testing.B) {
	env := testenv.Start(b, testenv.Options{Topics: []string{"bench"}, Partitions: 8})

	b.Run("direct-franz-go", func(b *testing.B) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.RequiredAcks(kgo.AllISRAcks()))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		payloads := benchPayloads(b.N)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		b.SetBytes(benchMessageBytes)
		b.ResetTimer()
		for i := range b.N {
			wg.Add(1)
			cl.Produce(context.Background(), &kgo.Record{Topic: "bench", Value: payloads[i]}, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
				wg.Done()
			})
		}
		wg.Wait()
		b.StopTimer()
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})

	b.Run("streamgate", func(b *testing.B) {
		payloads := benchPayloads(b.N)
		msgs := func(yield func(client.Message) bool) {
			for i := range b.N {
				if !yield(client.Message{Topic: "bench", Payload: payloads[i]}) {
					return
				}
			}
		}
		failed := 0
		b.SetBytes(benchMessageBytes)
		b.ResetTimer()
		err := env.Client.Publish(context.Background(), msgs, benchBatch, func(r client.Result) {
			if r.Code != codes.OK {
				failed++
			}
		})
		b.StopTimer()
		if err != nil || failed > 0 {
			b.Fatalf("publish: %v, %d failed", err, failed)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})

	// The high-level Publisher: futures, batching by count and linger.
	b.Run("streamgate-publisher", func(b *testing.B) {
		payloads := benchPayloads(b.N)
		p := env.Client.Publisher(client.PublishSettings{BatchCount: benchBatch})
		results := make([]*client.PublishResult, b.N)
		b.SetBytes(benchMessageBytes)
		b.ResetTimer()
		for i := range b.N {
			results[i] = p.Publish(context.Background(), client.Message{Topic: "bench", Payload: payloads[i]})
		}
		if err := p.Close(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, r := range results {
			if _, err := r.Get(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkSubscribe consumes and acks 1 KiB messages from one kfake broker,
// directly with franz-go (committing every 1000 records, as streamgate does)
// and through streamgate, in one run. Compare msgs/s.
func BenchmarkSubscribe(b *testing.B) {
	shards := benchShards()
	env := testenv.Start(b, testenv.Options{Partitions: shards})
	run := 0
	fill := func(b *testing.B) string {
		run++
		topic := fmt.Sprintf("bench-%d", run)
		env.CreateTopic(b, topic, shards)
		payloads := benchPayloads(b.N)
		recs := make([]*kgo.Record, b.N)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % shards), Value: payloads[i]}
		}
		for len(recs) > 0 {
			k := min(len(recs), 10000)
			env.Produce(b, recs[:k]...)
			recs = recs[k:]
		}
		return topic
	}

	b.Run("direct-franz-go", func(b *testing.B) {
		topic := fill(b)
		parts := map[int32]kgo.Offset{}
		for p := range int32(shards) {
			parts[p] = kgo.NewOffset().AtStart()
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		b.SetBytes(benchMessageBytes)
		b.ResetTimer()
		got, sinceCommit := 0, 0
		offsets := kadm.Offsets{}
		for got < b.N {
			fs := cl.PollRecords(context.Background(), 500)
			fs.EachRecord(func(r *kgo.Record) {
				offsets.AddOffset(r.Topic, r.Partition, r.Offset+1, -1)
				got++
				sinceCommit++
			})
			if sinceCommit >= 1000 || got >= b.N {
				if _, err := adm.CommitOffsets(context.Background(), "bench-direct", offsets); err != nil {
					b.Fatal(err)
				}
				sinceCommit = 0
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})

	b.Run("streamgate", func(b *testing.B) {
		topic := fill(b)
		b.SetBytes(benchMessageBytes)
		b.ResetTimer()
		sub, err := env.Client.Subscribe(context.Background(), client.SubscribeOptions{Subscription: topic, Topics: []string{topic}, FromBeginning: true})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		got := 0
		for got < b.N {
			msgs, _, err := sub.Recv()
			if err != nil {
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

	// The high-level Receive: handlers on 10 goroutines in shard order,
	// acks batched.
	b.Run("streamgate-receive", func(b *testing.B) {
		topic := fill(b)
		b.SetBytes(benchMessageBytes)
		b.ResetTimer()
		sub := env.Client.Subscription(topic, topic)
		sub.ReceiveSettings.FromBeginning = true
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var got atomic.Int64
		err := sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
			m.Ack()
			if got.Add(1) == int64(b.N) {
				cancel()
			}
		})
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// benchShards is the shard count of BenchmarkSubscribe: 8, or
// STREAMGATE_BENCH_SHARDS.
func benchShards() int {
	if n, err := strconv.Atoi(os.Getenv("STREAMGATE_BENCH_SHARDS")); err == nil && n > 0 {
		return n
	}
	return 8
}
