package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	fs.StringVar(&addr, "addr", addr, "streamgate gRPC address")
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
		return errors.New("subscribe: --subscription is required")
	case len(topics) == 0:
		return errors.New("subscribe: --topic is required")
	case format != "text" && format != "json":
		return fmt.Errorf("subscribe: --format %q: want text or json", format)
	}
	c, err := client.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, client.SubscribeOptions{Subscription: subscription, Topics: topics, FromBeginning: fromBeginning})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Close()
	fmt.Fprintf(stderr, "subscribed as %s on node %s (max un-acked %d)\n", sub.ID, sub.Node, sub.MaxUnacked)
	seen := 0
	for maxMessages == 0 || seen < maxMessages {
		msgs, notice, err := sub.Recv()
		if err != nil {
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				return nil
			}
			return fmt.Errorf("subscribe: %w", err)
		}
		if notice != nil {
			fmt.Fprintln(stderr, notice)
			continue
		}
		var ids []string
		for _, m := range msgs {
			if maxMessages > 0 && seen == maxMessages {
				break // not acked: redelivered to the next subscriber
			}
			seen++
			printMessage(stdout, format, m)
			ids = append(ids, m.ID)
		}
		if err := sub.Ack(ids...); err != nil {
			return fmt.Errorf("subscribe: ack: %w", err)
		}
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
	fmt.Fprintf(w, "%s\tkey=%s\theaders=%s\t%s\n", m.Shard, m.Key, strings.Join(hs, ","), m.Payload)
}
