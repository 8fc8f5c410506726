package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
)

// publishFlags are publish's settings.
type publishFlags struct {
	addr, topic, key string
	messages         listFlag
	headers          headerFlag
	batch            int
	resend           bool
	count, size      int
	rate             float64
}

func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	pf := publishFlags{addr: "localhost:50051", batch: 100, size: 1024}
	fs := newFlagSet("publish", stderr)
	fs.StringVar(&pf.addr, "addr", pf.addr, "streamgate gRPC address, or a comma-separated list of nodes (publishing moves to another when one dies or drains)")
	var tlsFlags clientTLS
	tlsFlags.register(fs)
	fs.StringVar(&pf.topic, "topic", "", "topic to publish to (required)")
	fs.StringVar(&pf.key, "key", "", "key of every message (equal keys land on one shard, in order; without a key messages spread over the shards)")
	fs.Var(&pf.messages, "message", "a message payload; repeatable (default: one message per stdin line)")
	fs.Var(&pf.headers, "header", "a header key=value; repeatable")
	fs.IntVar(&pf.batch, "batch", pf.batch, "messages per request")
	fs.BoolVar(&pf.resend, "resend", false, "when a node dies before confirming messages, send them again through another (they may then be published twice)")
	fs.IntVar(&pf.count, "count", 0, "generate this many messages of --size random bytes instead (load generation; prints a summary, not a line per message)")
	fs.IntVar(&pf.size, "size", pf.size, "payload bytes of each generated message (with --count)")
	fs.Float64Var(&pf.rate, "rate", 0, "generated messages per second (with --count; 0: as fast as the server takes them)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: streamgate publish --topic T [--key K] [--header k=v]... [--message M]... (or lines on stdin)")
		fmt.Fprintln(stderr, "       streamgate publish --topic T --count N [--size B] [--rate R]   (load generation)")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, osLookupEnv); err != nil {
		return err
	}
	switch {
	case pf.topic == "":
		return badUsage("publish", errors.New("--topic is required"))
	case pf.batch < 1:
		return badUsage("publish", fmt.Errorf("--batch %d: want 1 or more", pf.batch))
	case pf.count < 0:
		return badUsage("publish", fmt.Errorf("--count %d: want 0 or more", pf.count))
	case pf.count > 0 && len(pf.messages) > 0:
		return badUsage("publish", errors.New("--count generates messages: give it or --message, not both"))
	case pf.size < 0:
		return badUsage("publish", fmt.Errorf("--size %d: want 0 or more", pf.size))
	case pf.rate < 0:
		return badUsage("publish", fmt.Errorf("--rate %v: want 0 (no limit) or more", pf.rate))
	}
	c, err := tlsFlags.dial("publish", pf.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	p := c.Publisher(client.PublishSettings{
		BatchCount: pf.batch, ResendOnReconnect: pf.resend,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	defer p.Close()
	if pf.count > 0 {
		return generate(ctx, p, pf, stderr)
	}
	return publishLines(ctx, p, pf, stdin, stdout, stderr)
}

// message builds one message of the flags' topic, key and headers.
func (pf *publishFlags) message(payload []byte) client.Message {
	m := client.Message{Topic: pf.topic, Payload: payload}
	if pf.key != "" {
		m.Key = []byte(pf.key)
	}
	for _, h := range pf.headers {
		m.Headers = append(m.Headers, client.Header{Key: h[0], Value: []byte(h[1])})
	}
	return m
}

// publishLines publishes --message values or stdin lines and prints one
// line per result, in order: "N<TAB>ok<TAB>id" or "N<TAB>error<TAB>code<TAB>why".
func publishLines(ctx context.Context, p *client.Publisher, pf publishFlags, stdin io.Reader, stdout, stderr io.Writer) error {
	results := make(chan *client.PublishResult, 1024)
	var readErr error
	go func() {
		defer close(results)
		if len(pf.messages) > 0 {
			for _, m := range pf.messages {
				results <- p.Publish(ctx, pf.message([]byte(m)))
			}
			return
		}
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() && ctx.Err() == nil {
			results <- p.Publish(ctx, pf.message([]byte(sc.Text())))
		}
		readErr = sc.Err()
	}()
	failed, n := 0, 0
	for r := range results {
		n++
		id, err := r.Get(context.WithoutCancel(ctx))
		if err != nil {
			failed++
			st := status.Convert(err)
			fmt.Fprintf(stdout, "%d\terror\t%s\t%s\n", n, st.Code(), st.Message())
			continue
		}
		fmt.Fprintf(stdout, "%d\tok\t%s\n", n, id)
	}
	if err := p.Close(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if readErr != nil {
		return fmt.Errorf("publish: reading stdin: %w", readErr)
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "publish: %d message(s) failed\n", failed)
		return exitError(1)
	}
	return nil
}

// generate publishes --count random payloads of --size bytes at up to
// --rate per second and prints a summary (and, on a terminal, a progress
// line).
func generate(ctx context.Context, p *client.Publisher, pf publishFlags, stderr io.Writer) error {
	results := make(chan *client.PublishResult, 4096)
	start := time.Now()
	go func() {
		defer close(results)
		var pace *time.Ticker
		if pf.rate > 0 {
			pace = time.NewTicker(time.Duration(float64(time.Second) / pf.rate))
			defer pace.Stop()
		}
		for range pf.count {
			if pace != nil {
				select {
				case <-pace.C:
				case <-ctx.Done():
				}
			}
			if ctx.Err() != nil {
				return
			}
			payload := make([]byte, pf.size)
			_, _ = rand.Read(payload) // incompressible, as real payloads often are
			results <- p.Publish(ctx, pf.message(payload))
		}
	}()
	tty := isTerminal(stderr)
	var ok, failed int
	var firstErr error
	lastShown := time.Now()
	show := func(final bool) {
		el := time.Since(start).Seconds()
		line := fmt.Sprintf("published %d/%d in %.1fs: %.0f msg/s, %.1f MiB/s; %d failed",
			ok, pf.count, el, float64(ok)/el, float64(ok)*float64(pf.size)/el/(1<<20), failed)
		switch {
		case final && tty:
			fmt.Fprintf(stderr, "\r%s\x1b[K\n", line)
		case final:
			fmt.Fprintln(stderr, line)
		default:
			fmt.Fprintf(stderr, "\r%s\x1b[K", line)
		}
	}
	for r := range results {
		if _, err := r.Get(context.WithoutCancel(ctx)); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
		} else {
			ok++
		}
		if tty && time.Since(lastShown) > 250*time.Millisecond {
			show(false)
			lastShown = time.Now()
		}
	}
	if err := p.Close(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	show(true)
	if failed > 0 {
		fmt.Fprintf(stderr, "publish: %d message(s) failed; the first: %v\n", failed, firstErr)
		return exitError(1)
	}
	return nil // when interrupted, the summary says how far it got
}

// isTerminal tells whether w is a terminal (a progress line is wanted).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// headerFlag collects key=value headers.
type headerFlag [][2]string

func (h *headerFlag) String() string {
	var parts []string
	for _, kv := range *h {
		parts = append(parts, kv[0]+"="+kv[1])
	}
	return strings.Join(parts, ",")
}

func (h *headerFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	*h = append(*h, [2]string{k, val})
	return nil
}
