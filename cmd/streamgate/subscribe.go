package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/streamgate/streamgate/client"
)

func runSubscribe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		addr          = "localhost:50051"
		subscription  string
		topics        listFlag
		fromBeginning bool
		maxMessages   int
		format        = "text"
	)
	fs := newFlagSet("subscribe", stderr)
	fs.StringVar(&addr, "addr", addr, "streamgate gRPC address, or a comma-separated list of nodes (the stream moves to another when its node dies or drains)")
	var tlsFlags clientTLS
	tlsFlags.register(fs)
	fs.StringVar(&subscription, "subscription", "", "subscription name (required); subscribers of one name share its messages")
	fs.Var(&topics, "topic", "topic to read; repeatable or comma-separated (required)")
	fs.BoolVar(&fromBeginning, "from-beginning", false, "a new subscription starts at the earliest message (default: only new messages)")
	fs.IntVar(&maxMessages, "max", 0, "exit after this many messages (0: run until interrupted)")
	fs.StringVar(&format, "format", format, "text or json (one object per line)")
	if err := parseFlags(fs, args, osLookupEnv); err != nil {
		return err
	}
	switch {
	case subscription == "":
		return badUsage("subscribe", errors.New("--subscription is required"))
	case len(topics) == 0:
		return badUsage("subscribe", errors.New("--topic is required"))
	case format != "text" && format != "json":
		return badUsage("subscribe", fmt.Errorf("--format %q: want text or json", format))
	case maxMessages < 0:
		return badUsage("subscribe", fmt.Errorf("--max %d: want 0 (no limit) or more", maxMessages))
	}
	c, err := tlsFlags.dial("subscribe", addr)
	if err != nil {
		return err
	}
	defer c.Close()

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	sub := c.Subscription(subscription, topics...)
	set := &sub.ReceiveSettings
	set.FromBeginning = fromBeginning
	set.NumGoroutines = 1 // print in the order of arrival
	set.OnOpen = func(o client.Opened) {
		fmt.Fprintf(stderr, "subscribed as %s on node %s (max un-acked %d)\n", o.SubscriberID, o.Node, o.MaxUnacked)
	}
	set.OnReconnect = func(r client.Reconnect) {
		fmt.Fprintf(stderr, "reconnected to %s (the stream on %s ended: %v); %d message(s) not acked there come again\n",
			r.To, orDash(r.From), r.Err, r.Dropped)
	}
	set.OnNotice = func(n client.Notice) { fmt.Fprintln(stderr, &n) }
	set.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	seen := 0
	err = sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
		if maxMessages > 0 && seen == maxMessages {
			return // not acked: it goes to the next subscriber
		}
		seen++
		printMessage(stdout, format, m.Received)
		m.Ack()
		if seen == maxMessages {
			stop() // Receive sends the acks and closes the stream gracefully
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}

func printMessage(w io.Writer, format string, m client.Received) {
	if format == "json" {
		hs := make([]map[string]string, len(m.Headers))
		for i, h := range m.Headers {
			hs[i] = map[string]string{"key": h.Key, "value": string(h.Value)}
		}
		b, _ := json.Marshal(map[string]any{
			"id": m.ID, "topic": m.Topic, "shard": m.Shard, "key": string(m.Key), "payload": string(m.Payload),
			"headers": hs, "publish_time": m.PublishTime, "delivery_attempt": m.DeliveryAttempt,
		})
		fmt.Fprintln(w, string(b))
		return
	}
	var hs []string
	for _, h := range m.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	fmt.Fprintf(w, "%s\tattempt=%d\tkey=%s\theaders=%s\t%s\n", m.Shard, m.DeliveryAttempt, m.Key, strings.Join(hs, ","), m.Payload)
}
