package node_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"

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
}
