package bench

import (
	"context"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/streamgate/streamgate/internal/leaktest"
	"github.com/streamgate/streamgate/internal/testenv"
)

// Every goroutine a phase starts must be stopped before it returns.
func TestMain(m *testing.M) {
	leaktest.VerifyTestMain(m)
}

func TestHistogram_QuantilesWithinABucketsWidth(t *testing.T) {
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	require.EqualValues(t, 10000, h.Count())
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}, {0.001, 10 * time.Microsecond}} {
		got := h.Quantile(c.q)
		require.InDelta(t, float64(c.want), float64(got), float64(c.want)*0.035, "q=%v got %v", c.q, got)
		require.LessOrEqual(t, got, c.want, "a bucket's lower bound")
	}
	var empty Histogram
	require.Zero(t, empty.Quantile(0.5))
	h.Record(-time.Second) // a clock step counts as 0
	h.Record(1000 * time.Hour)
	require.EqualValues(t, 10002, h.Count())
	for us := uint64(0); us < 1<<20; us += 37 {
		require.LessOrEqual(t, lower(bucket(us)), us)
		require.Less(t, us, lower(bucket(us)+1), "us=%d", us)
	}
}

func TestHistogram_SentSkipsTheWarmUp(t *testing.T) {
	h := Histogram{from: time.Now()}
	h.Sent(h.from.Add(-time.Millisecond))
	require.Zero(t, h.Count())
	h.Sent(h.from)
	require.EqualValues(t, 1, h.Count())
}

func TestListenerPID_FindsThisProcess(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	pid, err := ListenerPID(l.Addr().String())
	require.NoError(t, err)
	require.Equal(t, os.Getpid(), pid)
	cpu, err := ProcessCPU(pid)
	require.NoError(t, err)
	require.Positive(t, cpu)

	addr := l.Addr().String()
	require.NoError(t, l.Close())
	_, err = ListenerPID(addr)
	require.ErrorContains(t, err, "nothing listens")
	_, err = ListenerPID("192.0.2.1:80") // TEST-NET-1: never this machine
	require.ErrorContains(t, err, "not on this machine")
}

func TestWorkloadCheck_NamesTheFlag(t *testing.T) {
	ok := Workload{Count: 1, Size: 8, Streams: 1, Batch: 1, Readers: 1}
	require.NoError(t, ok.Check())
	for _, c := range []struct {
		change func(*Workload)
		want   string
	}{
		{func(w *Workload) { w.Count = 0 }, "--count or --duration"},
		{func(w *Workload) { w.Duration = time.Second }, "not both"},
		{func(w *Workload) { w.Size = 7 }, "--size 7"},
		{func(w *Workload) { w.Keys = -1 }, "--keys -1"},
		{func(w *Workload) { w.Streams = 0 }, "--streams 0"},
		{func(w *Workload) { w.Batch = 0 }, "--batch 0"},
		{func(w *Workload) { w.Rate = -1 }, "--rate -1"},
		{func(w *Workload) { w.Readers = 0 }, "--readers 0"},
	} {
		w := ok
		c.change(&w)
		require.ErrorContains(t, w.Check(), c.want)
	}
}

func TestSource_PayloadsAreDistinctSizedAndStamped(t *testing.T) {
	src := newSource(Workload{Count: 1000, Size: 100, Keys: 3})
	seen := map[string]bool{}
	for i := range 1000 {
		p := src.payload(i)
		require.Len(t, p, 100)
		require.Equal(t, 100, cap(p), "appending to one payload must not overwrite the next")
		require.WithinDuration(t, time.Now(), sentAt(p), time.Minute)
		seen[string(p[8:])] = true
	}
	require.Len(t, seen, 1000)
	require.Equal(t, "key-1", string(src.key(4)))
	require.Nil(t, newSource(Workload{Duration: time.Second, Size: 100}).key(1))
	p := newSource(Workload{Duration: time.Second, Size: 100}).payload(12345)
	require.Len(t, p, 100)
}

// TestSuite_EveryModeMovesEveryMessage runs each mode both ways against a
// kfake broker and a gateway in this process: every phase moves what it
// should, the readers' positions end up saved, and e2e measures latency.
func TestSuite_EveryModeMovesEveryMessage(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Partitions: 4})
	for _, mode := range Modes {
		t.Run(mode, func(t *testing.T) {
			var progress atomic.Int64
			w := Workload{Count: 2000, Size: 64, Keys: 5, Streams: 3, Batch: 50, Readers: 2, Progress: &progress}
			if mode == "e2e" {
				w.Count, w.Duration, w.Rate = 0, 500*time.Millisecond, 2000
			}
			var phases []string
			s := Suite{Mode: mode, Addr: env.Addr, Brokers: env.Brokers[0], Topic: "t-" + mode, Shards: 4, Direct: true,
				Workload: w, GatewayPID: os.Getpid(), Phase: func(n string) {
					if !strings.HasPrefix(n, "filling") {
						phases = append(phases, n)
					}
				}}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			rows, err := s.Run(ctx)
			require.NoError(t, err)
			require.Equal(t, len(rows), len(phases), "a row per reported phase")
			want := map[string]int{"both": 4, "publish": 2, "subscribe": 2, "e2e": 2}[mode]
			require.Len(t, rows, want)
			for _, r := range rows {
				require.Positive(t, r.Result.Messages, r.Name)
				if mode != "e2e" {
					require.EqualValues(t, 2000, r.Result.Messages, r.Name)
					require.EqualValues(t, 2000*64, r.Result.Bytes, r.Name)
				} else {
					require.NotNil(t, r.Result.Latency, r.Name)
					require.Positive(t, r.Result.Latency.Count(), r.Name)
				}
				require.GreaterOrEqual(t, r.Gateway, time.Duration(0), "the gateway's CPU was read")
				require.Equal(t, time.Duration(-1), r.Broker, "no broker pid given")
			}
			require.Positive(t, progress.Load())
			if mode == "both" || mode == "subscribe" || mode == "e2e" {
				gw := "t-" + mode + "-gateway"
				require.Eventually(t, func() bool { return sum(env.Committed(t, "bench-"+gw)[gw]) == rows[len(rows)-1].Result.Messages },
					15*time.Second, 50*time.Millisecond, "the subscription's acks were all saved")
				cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...))
				require.NoError(t, err)
				defer cl.Close()
				direct, err := kadm.NewClient(cl).FetchOffsets(ctx, "bench-t-"+mode+"-direct")
				require.NoError(t, err)
				var at int64
				direct.Each(func(o kadm.OffsetResponse) { at += o.At })
				require.Equal(t, rows[0].Result.Messages, at, "the direct reader committed everything")
			}
			var out strings.Builder
			WriteTable(&out, rows)
			require.Contains(t, out.String(), "| phase | messages | msgs/s |")
			require.Contains(t, out.String(), "gateway CPU per message")
		})
	}
}

func sum(m map[int32]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}
