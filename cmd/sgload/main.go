// Command sgload is a load driver for measuring streamgate against direct
// franz-go on the same broker: it sends or reads --count messages of --size
// incompressible bytes in one of four modes and prints one line with the
// rate and its own CPU per message.
//
//	sgload produce-direct --brokers ADDR --topic T --count N   franz-go producer, acks all
//	sgload consume-direct --brokers ADDR --topic T --count N   franz-go consumer from the start, commits every 1000
//	sgload publish        --addr ADDR --topic T --count N      raw Publish streams through streamgate
//	sgload subscribe      --addr ADDR --topic T --count N      one Subscribe stream from the earliest, acking each batch
//
// The output line is key=value pairs:
//
//	mode=publish messages=200000 seconds=3.10 msgs_per_s=64516 cpu_us_per_msg=11.2
//
// Only the timed part counts: payloads are generated and clients connected
// before the clock and the CPU counter start. scripts/cpu-per-message.sh
// runs it next to a devbroker and a gateway and adds the gateway's CPU.
//
// This is a benchmark tool, so unlike the rest of cmd/ it holds its own
// logic, and it imports franz-go directly: the direct modes are the
// baseline the gateway is compared with (STYLE.md: benchmarks compare
// against direct franz-go on the same broker).
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"

	"github.com/streamgate/streamgate/client"
)

// config is sgload's settings; each field's default is in newFlagSet.
type config struct {
	mode         string
	brokers      string
	addr         string
	topic        string
	group        string
	subscription string
	count        int
	size         int
	streams      int
	batch        int
	timeout      time.Duration
	stderr       io.Writer // for notes beside the result line
}

// modes maps each mode to the function that runs its timed part. setup runs
// before the clock starts and returns the timed part.
var modes = map[string]func(ctx context.Context, c config) (timed func(context.Context) error, cleanup func(), err error){
	"produce-direct": produceDirect,
	"consume-direct": consumeDirect,
	"publish":        publish,
	"subscribe":      subscribe,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "sgload:", err)
		os.Exit(1)
	}
}

const usage = "usage: sgload produce-direct|consume-direct|publish|subscribe [flags]"

// run parses args, runs one mode and prints its line on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	timed, cleanup, err := modes[c.mode](ctx, c)
	if err != nil {
		return fmt.Errorf("%s: %w", c.mode, err)
	}
	defer cleanup()
	cpu0 := cpuTime()
	start := time.Now()
	if err := runBounded(ctx, timed); err != nil {
		return fmt.Errorf("%s: %w", c.mode, err)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	fmt.Fprintf(stdout, "mode=%s messages=%d seconds=%.3f msgs_per_s=%.0f cpu_us_per_msg=%.2f\n",
		c.mode, c.count, elapsed.Seconds(), float64(c.count)/elapsed.Seconds(),
		float64(cpu.Microseconds())/float64(c.count))
	return nil
}

// exitGrace is how long a mode may take to return once its context is
// done (a signal or --timeout).
const exitGrace = 5 * time.Second

// runBounded runs timed and returns its error, or gives up exitGrace after
// ctx is done. franz-go keeps retrying records bound for a broker that went
// away even when their context is canceled, so a driver stopped mid-phase
// could otherwise hang; the goroutine left behind then dies with the
// process, which exits right after.
func runBounded(ctx context.Context, timed func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- timed(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	select {
	case err := <-done:
		return err
	case <-time.After(exitGrace):
		return fmt.Errorf("still running %s after: %w", exitGrace, context.Cause(ctx))
	}
}

// parse reads the mode and flags and checks them.
func parse(args []string, stderr io.Writer) (config, error) {
	c := config{size: 1024, streams: 1, batch: 100, timeout: 10 * time.Minute, stderr: stderr}
	if len(args) == 0 || args[0] == "" || args[0][0] == '-' {
		fmt.Fprintln(stderr, usage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return c, flag.ErrHelp
		}
		return c, errors.New("no mode given")
	}
	c.mode, args = args[0], args[1:]
	if _, ok := modes[c.mode]; !ok {
		fmt.Fprintln(stderr, usage)
		return c, fmt.Errorf("unknown mode %q", c.mode)
	}
	fs := flag.NewFlagSet("sgload "+c.mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "brokers", "127.0.0.1:9092", "Kafka bootstrap address (direct modes)")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:7070", "streamgate gRPC address (publish, subscribe)")
	fs.StringVar(&c.topic, "topic", "", "topic to write or read (required)")
	fs.StringVar(&c.group, "group", "", "consume-direct: group whose offsets are committed (default: sgload-TOPIC)")
	fs.StringVar(&c.subscription, "subscription", "", "subscribe: subscription name (default: sgload-TOPIC)")
	fs.IntVar(&c.count, "count", 100000, "messages to send or read")
	fs.IntVar(&c.size, "size", c.size, "payload bytes per message (produce-direct, publish)")
	fs.IntVar(&c.streams, "streams", c.streams, "publish: parallel raw Publish streams")
	fs.IntVar(&c.batch, "batch", c.batch, "publish: messages per request")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.topic == "":
		return c, errors.New("--topic is required")
	case c.count < 1:
		return c, fmt.Errorf("--count %d: want 1 or more", c.count)
	case c.size < 1:
		return c, fmt.Errorf("--size %d: want 1 or more", c.size)
	case c.streams < 1 || c.streams > c.count:
		return c, fmt.Errorf("--streams %d: want 1 to --count", c.streams)
	case c.batch < 1:
		return c, fmt.Errorf("--batch %d: want 1 or more", c.batch)
	case c.timeout <= 0:
		return c, fmt.Errorf("--timeout %v: want more than 0", c.timeout)
	}
	if c.group == "" {
		c.group = "sgload-" + c.topic
	}
	if c.subscription == "" {
		c.subscription = "sgload-" + c.topic
	}
	return c, nil
}

// payloads returns n distinct incompressible payloads of size bytes, cut
// from one buffer: identical or compressible values would make the broker
// path look cheaper than real traffic.
func payloads(n, size int) [][]byte {
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	words := (n*size + 7) / 8
	buf := make([]byte, words*8)
	for i := range words {
		binary.LittleEndian.PutUint64(buf[i*8:], r.Uint64())
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	return out
}

// cpuTime is the user plus system CPU time this process has used, all
// threads included.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// produceDirect produces with franz-go, acks from all in-sync replicas,
// asynchronously, and waits for every result.
func produceDirect(ctx context.Context, c config) (func(context.Context) error, func(), error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		return nil, nil, err
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, nil, err
	}
	ps := payloads(c.count, c.size)
	timed := func(ctx context.Context) error {
		var wg sync.WaitGroup
		var failed atomic.Int64
		var first atomic.Pointer[error]
		for _, p := range ps {
			wg.Add(1)
			// The promise runs on franz-go's goroutine: it only counts.
			cl.Produce(ctx, &kgo.Record{Topic: c.topic, Value: p}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, &err)
				}
				wg.Done()
			})
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			return fmt.Errorf("%d of %d failed, first: %w", n, c.count, *first.Load())
		}
		return nil
	}
	return timed, cl.Close, nil
}

// consumeDirect reads every partition of the topic from the start with
// franz-go, without a group member, and commits the read offsets to a group
// through kadm every 1000 records and at the end, as the gateway does. The
// client is made inside the timed part: it starts fetching as soon as it
// exists, and what it fetched before the clock would come for free.
func consumeDirect(ctx context.Context, c config) (func(context.Context) error, func(), error) {
	timed := func(ctx context.Context) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers),
			kgo.ConsumeTopics(c.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			return err
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		got, sinceCommit := 0, 0
		offsets := kadm.Offsets{}
		for got < c.count {
			fs := cl.PollRecords(ctx, 1000)
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("after %d of %d: %w", got, c.count, err)
			}
			var fetchErr error
			fs.EachError(func(t string, p int32, err error) { fetchErr = fmt.Errorf("%s/%d: %w", t, p, err) })
			if fetchErr != nil {
				return fetchErr
			}
			fs.EachRecord(func(r *kgo.Record) {
				offsets.AddOffset(r.Topic, r.Partition, r.Offset+1, -1)
				got++
				sinceCommit++
			})
			if sinceCommit >= 1000 || got >= c.count {
				resp, err := adm.CommitOffsets(ctx, c.group, offsets)
				if err == nil {
					err = resp.Error()
				}
				if err != nil {
					return fmt.Errorf("commit: %w", err)
				}
				sinceCommit = 0
			}
		}
		return nil
	}
	return timed, func() {}, nil
}

// publish sends the messages through streamgate on --streams raw Publish
// streams at once, each a contiguous share of them in batches of --batch.
func publish(ctx context.Context, c config) (func(context.Context) error, func(), error) {
	cl, err := client.Dial(c.addr)
	if err != nil {
		return nil, nil, err
	}
	ps := payloads(c.count, c.size)
	timed := func(ctx context.Context) error {
		var failed atomic.Int64
		g, ctx := errgroup.WithContext(ctx)
		for s := range c.streams {
			share := ps[s*len(ps)/c.streams : (s+1)*len(ps)/c.streams]
			g.Go(func() error {
				var msgs iter.Seq[client.Message] = func(yield func(client.Message) bool) {
					for _, p := range share {
						if !yield(client.Message{Topic: c.topic, Payload: p}) {
							return
						}
					}
				}
				return cl.Publish(ctx, msgs, c.batch, func(r client.Result) {
					if r.Code != codes.OK {
						failed.Add(1)
					}
				})
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if n := failed.Load(); n > 0 {
			return fmt.Errorf("%d of %d failed", n, c.count)
		}
		return nil
	}
	return timed, func() { _ = cl.Close() }, nil
}

// subscribe reads --count messages through streamgate on one Subscribe
// stream, from the earliest position, acking each batch as it arrives; the
// clock stops when Close has ended the stream (the acks are in).
func subscribe(ctx context.Context, c config) (func(context.Context) error, func(), error) {
	cl, err := client.Dial(c.addr)
	if err != nil {
		return nil, nil, err
	}
	timed := func(ctx context.Context) error {
		start := time.Now()
		sub, err := cl.Subscribe(ctx, client.SubscribeOptions{Subscription: c.subscription, Topics: []string{c.topic}, FromBeginning: true})
		if err != nil {
			return err
		}
		// Recv has no context: a canceled ctx ends the stream, and with it Recv.
		opened := time.Since(start)
		got := 0
		ids := make([]string, 0, 1000)
		for got < c.count {
			msgs, notice, err := sub.Recv()
			if err != nil {
				_ = sub.Close()
				return fmt.Errorf("after %d of %d: %w", got, c.count, err)
			}
			if notice != nil && len(msgs) == 0 {
				continue
			}
			ids = ids[:0]
			for _, m := range msgs {
				ids = append(ids, m.ID)
			}
			got += len(msgs)
			if len(ids) > 0 {
				if err := sub.Ack(ids...); err != nil {
					_ = sub.Close()
					return fmt.Errorf("ack: %w", err)
				}
			}
		}
		last := time.Since(start)
		if err := sub.Close(); err != nil {
			return err
		}
		// Where the time went: a new subscription settles its start
		// positions before the opened reply, and Close waits for the acks.
		fmt.Fprintf(c.stderr, "subscribe: opened after %s, last message after %s, closed after %s\n",
			opened.Round(time.Millisecond), last.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		return nil
	}
	return timed, func() { _ = cl.Close() }, nil
}
