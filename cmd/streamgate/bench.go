package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/internal/bench"
)

// benchFlags are bench's settings beyond the workload.
type benchFlags struct {
	addr, brokers, mode, topic string
	cpuProfile                 string
	direct                     bool
	shards                     int
	timeout                    time.Duration
	rate                       float64
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	bf := benchFlags{mode: "both", shards: 8, timeout: 30 * time.Minute, rate: -1}
	w := bench.Workload{Size: 1024, Streams: 1, Readers: 1}
	fs := newFlagSet("bench", stderr)
	fs.StringVar(&bf.addr, "addr", "", "streamgate gRPC address to measure (default: start a gateway here, on --brokers or on a devbroker it starts)")
	var tlsFlags clientTLS
	tlsFlags.register(fs)
	fs.StringVar(&bf.brokers, "brokers", "", "Kafka bootstrap address, for --direct and for making the run's topics (default: the devbroker it starts when --addr is not given)")
	var kafkaSec kafkaSecurity // for --brokers, and the gateway bench starts on them
	kafkaSec.register(fs)
	fs.BoolVar(&bf.direct, "direct", false, "also run each phase with franz-go straight to the broker, and print the ratios")
	fs.StringVar(&bf.mode, "mode", bf.mode, "both (publish, then subscribe + ack what was published), publish, subscribe (fills the topic untimed first) or e2e (publish and subscribe at once: latency)")
	fs.IntVar(&w.Count, "count", 0, "messages per phase (default 200000; e2e: --duration 10s instead)")
	fs.DurationVar(&w.Duration, "duration", 0, "publish for this long instead of --count messages")
	fs.IntVar(&w.Size, "size", w.Size, "payload bytes per message (random, incompressible; at least 8)")
	fs.IntVar(&w.Keys, "keys", 0, "distinct keys, round-robin (0: unkeyed)")
	fs.IntVar(&w.Streams, "streams", w.Streams, "parallel Publish streams (direct: producing goroutines)")
	fs.IntVar(&w.Batch, "batch", 0, "messages per Publish request (default 100; e2e: 1)")
	fs.Float64Var(&bf.rate, "rate", bf.rate, "messages per second over all streams, 0 for as fast as possible (default 0; e2e: 1000)")
	fs.IntVar(&w.Readers, "readers", w.Readers, "parallel Subscribe streams on the one subscription")
	fs.StringVar(&bf.topic, "topic", "", "with --brokers: a prefix for the topics the run makes (default bench-TIME); without: an existing topic to use")
	fs.IntVar(&bf.shards, "shards", bf.shards, "shards of the topics the run makes")
	fs.DurationVar(&bf.timeout, "timeout", bf.timeout, "give up after this long")
	fs.StringVar(&bf.cpuProfile, "cpuprofile", "", "write a CPU profile of the load driver (this process) to this file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: streamgate bench [--direct] [--mode both|publish|subscribe|e2e] [--count N | --duration D] [flags]")
		fmt.Fprintln(stderr, "Measures throughput, latency and CPU per message through streamgate (and with --direct, with franz-go")
		fmt.Fprintln(stderr, "straight to the same broker). With no --addr it runs a devbroker and a gateway as processes of their own.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, osLookupEnv); err != nil {
		return err
	}
	e2e := bf.mode == "e2e"
	switch {
	case w.Count == 0 && w.Duration == 0 && e2e:
		w.Duration = 10 * time.Second
	case w.Count == 0 && w.Duration == 0:
		w.Count = 200000
	}
	// Unset, e2e sends one message a request at 1000 msgs/s; the other
	// modes batches of 100, open loop.
	switch {
	case w.Batch == 0 && e2e:
		w.Batch = 1
	case w.Batch == 0:
		w.Batch = 100
	}
	w.Rate = bf.rate
	switch {
	case bf.rate < 0 && e2e:
		w.Rate = 1000
	case bf.rate < 0:
		w.Rate = 0
	}
	if err := checkBench(bf, w); err != nil {
		return badUsage("bench", err)
	}
	ctx, cancel := context.WithTimeout(ctx, bf.timeout)
	defer cancel()

	s := bench.Suite{Mode: bf.mode, Addr: bf.addr, Brokers: bf.brokers, Topic: bf.topic, Shards: bf.shards, Direct: bf.direct, Workload: w}
	dialOpts, err := tlsFlags.options()
	if err != nil {
		return badUsage("bench", err)
	}
	s.DialOptions = dialOpts
	if s.DialOptions != nil && bf.addr == "" {
		return badUsage("bench", errors.New("the --tls* flags are for a gateway given by --addr; the one bench starts serves plaintext"))
	}
	if kafkaSec.on(osLookupEnv) {
		if bf.brokers == "" {
			return badUsage("bench", errors.New("the --kafka-tls* and --kafka-sasl-* flags need --brokers: the devbroker bench starts is plaintext"))
		}
		var kcfg kafka.Config
		if err := kafkaSec.apply(sources{}, osLookupEnv, &kcfg); err != nil {
			return badUsage("bench", err)
		}
		s.KafkaOpts = kcfg.SecurityOpts()
	}
	if s.Topic == "" {
		s.Topic = fmt.Sprintf("bench-%d", time.Now().Unix())
	}
	local, err := startLocal(ctx, &s, kafkaSec.args(), stderr)
	if err != nil {
		return err
	}
	defer local.stop()
	if s.GatewayPID == 0 {
		s.GatewayPID = findPID(s.Addr, "gateway", stderr)
	}
	if s.BrokerPID == 0 && s.Brokers != "" {
		s.BrokerPID = findPID(s.Brokers, "broker", stderr)
	}

	if bf.cpuProfile != "" {
		f, err := os.Create(bf.cpuProfile)
		if err != nil {
			return badUsage("bench", fmt.Errorf("--cpuprofile: %w", err))
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var progress atomic.Int64
	s.Progress = &progress
	stopProgress := reportProgress(&s, &progress, stderr)
	rows, err := s.Run(ctx)
	stopProgress()
	fmt.Fprintf(stdout, "%s, %d shards, %d-byte payloads, keys %d; publish: %d stream(s), batches of %d, rate %s; subscribe: %d stream(s)\n\n",
		workloadSize(w), bf.shards, w.Size, w.Keys, w.Streams, w.Batch, rateText(w.Rate), w.Readers)
	bench.WriteTable(stdout, rows)
	if lerr := local.failed(); lerr != nil {
		err = errors.Join(err, lerr)
	}
	return err
}

// checkBench reports the first bad setting.
func checkBench(bf benchFlags, w bench.Workload) error {
	switch {
	case !slices.Contains(bench.Modes, bf.mode):
		return fmt.Errorf("--mode %q: want one of %s", bf.mode, strings.Join(bench.Modes, ", "))
	case bf.shards < 1:
		return fmt.Errorf("--shards %d: want 1 or more", bf.shards)
	case bf.timeout <= 0:
		return fmt.Errorf("--timeout %v: want more than 0", bf.timeout)
	case bf.addr != "" && bf.brokers == "" && bf.direct:
		return errors.New("--direct with --addr needs --brokers: the broker the gateway uses")
	case bf.addr != "" && bf.brokers == "" && bf.topic == "":
		return errors.New("--addr without --brokers needs --topic: an existing topic to use")
	}
	return w.Check()
}

func workloadSize(w bench.Workload) string {
	if w.Count > 0 {
		return fmt.Sprintf("%d messages per phase", w.Count)
	}
	return fmt.Sprintf("%s of publishing per phase", w.Duration)
}

func rateText(r float64) string {
	if r == 0 {
		return "open loop"
	}
	return fmt.Sprintf("%g msgs/s", r)
}

// findPID finds the local process listening on addr, for its CPU; 0 with a
// note when there is none.
func findPID(addr, what string, stderr io.Writer) int {
	first := strings.Split(addr, ",")[0]
	pid, err := bench.ListenerPID(first)
	if err != nil {
		fmt.Fprintf(stderr, "bench: the %s's CPU is not read: %v\n", what, err)
		return 0
	}
	return pid
}

// reportProgress prints a line every 2 s while a phase runs, until the
// returned function is called.
func reportProgress(s *bench.Suite, n *atomic.Int64, stderr io.Writer) func() {
	var mu sync.Mutex
	phase, since := "", time.Now()
	s.Phase = func(name string) {
		mu.Lock()
		phase, since = name, time.Now()
		n.Store(0)
		mu.Unlock()
		fmt.Fprintf(stderr, "bench: %s\n", name)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				mu.Lock()
				name, el := phase, time.Since(since)
				mu.Unlock()
				got := n.Load()
				fmt.Fprintf(stderr, "bench: %s: %d messages, %.0f msgs/s\n", name, got, float64(got)/el.Seconds())
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
