package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/streamgate/streamgate/client"
)

func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var (
		addr     = "localhost:50051"
		topic    string
		key      string
		messages listFlag
		headers  headerFlag
		batch    = 100
	)
	fs := newFlagSet("publish", stderr)
	fs.StringVar(&addr, "addr", addr, "streamgate gRPC address")
	fs.StringVar(&topic, "topic", "", "topic to publish to (required)")
	fs.StringVar(&key, "key", "", "key of every message (equal keys land on one shard, in order)")
	fs.Var(&messages, "message", "a message payload; repeatable (default: one message per stdin line)")
	fs.Var(&headers, "header", "a header key=value; repeatable")
	fs.IntVar(&batch, "batch", batch, "messages per request")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: streamgate publish --topic T [--key K] [--header k=v]... [--message M]... (or lines on stdin)")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, osLookupEnv); err != nil {
		return err
	}
	if topic == "" {
		return fmt.Errorf("publish: --topic is required")
	}
	c, err := client.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()

	var hdrs []client.Header
	for _, h := range headers {
		hdrs = append(hdrs, client.Header{Key: h[0], Value: []byte(h[1])})
	}
	var keyBytes []byte
	if key != "" {
		keyBytes = []byte(key)
	}
	var readErr error
	msgs := func(yield func(client.Message) bool) {
		n := 0
		emit := func(payload string) bool {
			n++
			return yield(client.Message{RequestID: strconv.Itoa(n), Topic: topic, Key: keyBytes, Payload: []byte(payload), Headers: hdrs})
		}
		if len(messages) > 0 {
			for _, m := range messages {
				if !emit(m) {
					return
				}
			}
			return
		}
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			if !emit(sc.Text()) {
				return
			}
		}
		readErr = sc.Err()
	}
	failed := 0
	err = c.Publish(ctx, msgs, batch, func(r client.Result) {
		if r.Err() != nil {
			failed++
			fmt.Fprintf(stdout, "%s\terror\t%s\t%s\n", r.RequestID, r.Code, r.Error)
			return
		}
		fmt.Fprintf(stdout, "%s\tok\t%s\n", r.RequestID, r.MessageID)
	})
	if err != nil {
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

// headerFlag collects key=value headers.
type headerFlag [][2]string

func (h *headerFlag) String() string { return fmt.Sprint(*h) }

func (h *headerFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("header %q: want key=value", v)
	}
	*h = append(*h, [2]string{k, val})
	return nil
}
