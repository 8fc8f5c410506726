package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
)

// subscriptionCommands are the subcommands of `streamgate subscriptions`.
var subscriptionCommands = []struct{ name, summary string }{
	{"create", "store a new subscription: --name, --topics and its settings"},
	{"get", "print a subscription's settings"},
	{"update", "change the settings given as flags (the others are kept)"},
	{"list", "list every subscription"},
	{"delete", "delete a subscription; its streams end, its saved positions stay"},
	{"seek", "move a subscription's positions: --to earliest|latest or --time"},
}

// runSubscriptions runs `streamgate subscriptions <command> [flags]`: the
// Admin API's subscription methods.
func runSubscriptions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelpFlag(args[0]) || args[0] == "help" {
		printSubscriptionsUsage(stderr)
		if len(args) == 0 {
			return badUsage("subscriptions", errors.New("a command is required"))
		}
		return flag.ErrHelp
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "create", "get", "update", "list", "delete", "seek":
		return runSubscriptionsCommand(ctx, cmd, args, stdout, stderr)
	}
	return badUsage("subscriptions", fmt.Errorf("unknown command %q: want create, get, update, list, delete or seek", cmd))
}

func printSubscriptionsUsage(w io.Writer) {
	fmt.Fprint(w, "usage: streamgate subscriptions <command> [flags]\n\ncommands:\n")
	for _, c := range subscriptionCommands {
		fmt.Fprintf(w, "  %-7s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\n'streamgate subscriptions <command> -h' lists a command's flags.\n")
}

// subscriptionFlags are every command's flags; each command defines those
// it takes.
type subscriptionFlags struct {
	addr, name, start, deadLetter, to, at string
	topics                                listFlag
	ackDeadline, minBackoff, maxBackoff   time.Duration
	maxUnacked, maxAttempts               int
	version                               int64
}

// settingFlags map the flags of settings to the fields an update changes.
var settingFlags = []struct{ flag, field string }{
	{"ack-deadline", client.FieldAckDeadline},
	{"max-unacked", client.FieldMaxUnacked},
	{"max-delivery-attempts", client.FieldMaxDeliveryAttempts},
	{"dead-letter-topic", client.FieldDeadLetterTopic},
	{"min-backoff", client.FieldRetryPolicy},
	{"max-backoff", client.FieldRetryPolicy},
}

func runSubscriptionsCommand(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	name := "subscriptions " + cmd
	f := subscriptionFlags{addr: "localhost:50051"}
	fs := newFlagSet(name, stderr)
	fs.StringVar(&f.addr, "addr", f.addr, "streamgate gRPC address (any node)")
	var tlsFlags clientTLS
	tlsFlags.register(fs)
	if cmd != "list" {
		fs.StringVar(&f.name, "name", "", "subscription name (required)")
	}
	switch cmd {
	case "create":
		fs.Var(&f.topics, "topics", "topics to read; repeatable or comma-separated (required; fixed after creation)")
		fs.StringVar(&f.start, "start", "latest", "where shards without a saved position start: earliest or latest (fixed after creation)")
	case "update", "delete":
		fs.Int64Var(&f.version, "version", 0, "apply only to this version (else the command fails with ABORTED); 0: the latest")
	case "seek":
		fs.StringVar(&f.to, "to", "", "earliest (the first message each shard holds) or latest (only new messages)")
		fs.StringVar(&f.at, "time", "", "each shard's first message published at or after this RFC 3339 time")
	}
	if cmd == "create" || cmd == "update" {
		fs.DurationVar(&f.ackDeadline, "ack-deadline", 0, "a delivered message's ack deadline, 1s..10m (0: the server's --ack-timeout)")
		fs.IntVar(&f.maxUnacked, "max-unacked", 0, "un-acked messages per stream, up to the server's --max-unacked (0: that)")
		fs.IntVar(&f.maxAttempts, "max-delivery-attempts", 0, "5..100: a message nacked or timed out on that delivery goes to --dead-letter-topic (0: off)")
		fs.StringVar(&f.deadLetter, "dead-letter-topic", "", "existing topic for dead letters; required with --max-delivery-attempts")
		fs.DurationVar(&f.minBackoff, "min-backoff", 0, "redelivery backoff of a nacked or timed-out message, doubling from this, 0..10m (0 and 0: at once)")
		fs.DurationVar(&f.maxBackoff, "max-backoff", 0, "the backoff's maximum, 0..10m, at least --min-backoff")
	}
	if err := parseFlags(fs, args, osLookupEnv); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	if cmd != "list" && f.name == "" {
		return badUsage(name, errors.New("--name is required"))
	}
	c, err := tlsFlags.dial(name, f.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch cmd {
	case "create":
		return subscriptionsCreate(ctx, c, f, stdout)
	case "get":
		sub, err := c.GetSubscription(ctx, f.name)
		if err != nil {
			return apiError(name, err)
		}
		printSubscriptionConfig(stdout, sub)
	case "update":
		return subscriptionsUpdate(ctx, c, f, given, stdout)
	case "list":
		subs, err := c.ListSubscriptions(ctx)
		if err != nil {
			return apiError(name, err)
		}
		printSubscriptionList(stdout, subs)
	case "delete":
		if err := c.DeleteSubscription(ctx, f.name, f.version); err != nil {
			return apiError(name, err)
		}
		fmt.Fprintf(stdout, "deleted subscription %s\n", f.name)
	case "seek":
		return subscriptionsSeek(ctx, c, f, stdout)
	}
	return nil
}

func (f subscriptionFlags) config() client.SubscriptionConfig {
	return client.SubscriptionConfig{Name: f.name, Topics: f.topics, FromBeginning: f.start == "earliest",
		AckDeadline: f.ackDeadline, MaxUnacked: f.maxUnacked, MaxDeliveryAttempts: f.maxAttempts,
		DeadLetterTopic: f.deadLetter, MinBackoff: f.minBackoff, MaxBackoff: f.maxBackoff, Version: f.version}
}

func subscriptionsCreate(ctx context.Context, c *client.Client, f subscriptionFlags, stdout io.Writer) error {
	const name = "subscriptions create"
	switch {
	case len(f.topics) == 0:
		return badUsage(name, errors.New("--topics is required"))
	case f.start != "earliest" && f.start != "latest":
		return badUsage(name, fmt.Errorf("--start %q: want earliest or latest", f.start))
	}
	sub, err := c.CreateSubscription(ctx, f.config())
	if err != nil {
		return apiError(name, err)
	}
	printSubscriptionConfig(stdout, sub)
	return nil
}

// subscriptionsUpdate sends the setting flags given on the command line as
// the update's fields. One backoff flag alone keeps the other's stored
// value (the API changes the two together).
func subscriptionsUpdate(ctx context.Context, c *client.Client, f subscriptionFlags, given map[string]bool, stdout io.Writer) error {
	const name = "subscriptions update"
	var fields []string
	for _, s := range settingFlags {
		if given[s.flag] && !slices.Contains(fields, s.field) {
			fields = append(fields, s.field)
		}
	}
	if len(fields) == 0 {
		return badUsage(name, errors.New("no setting to change: give one or more of --ack-deadline, --max-unacked, --max-delivery-attempts, --dead-letter-topic, --min-backoff, --max-backoff"))
	}
	cfg := f.config()
	if given["min-backoff"] != given["max-backoff"] {
		cur, err := c.GetSubscription(ctx, f.name)
		if err != nil {
			return apiError(name, err)
		}
		if !given["min-backoff"] {
			cfg.MinBackoff = cur.MinBackoff
		} else {
			cfg.MaxBackoff = cur.MaxBackoff
		}
		if f.version == 0 {
			cfg.Version = cur.Version // the other backoff as read, or ABORTED
		}
	}
	sub, err := c.UpdateSubscription(ctx, cfg, fields...)
	if err != nil {
		return apiError(name, err)
	}
	printSubscriptionConfig(stdout, sub)
	return nil
}

func subscriptionsSeek(ctx context.Context, c *client.Client, f subscriptionFlags, stdout io.Writer) error {
	const name = "subscriptions seek"
	var to client.SeekPosition
	switch {
	case (f.to == "") == (f.at == ""):
		return badUsage(name, errors.New("give one of --to earliest|latest and --time"))
	case f.to == "earliest":
		to = client.SeekEarliest
	case f.to == "latest":
		to = client.SeekLatest
	case f.to != "":
		return badUsage(name, fmt.Errorf("--to %q: want earliest or latest", f.to))
	default:
		at, err := time.Parse(time.RFC3339Nano, f.at)
		if err != nil {
			return badUsage(name, fmt.Errorf("--time %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", f.at))
		}
		to = client.SeekTime(at)
	}
	shards, err := c.Seek(ctx, f.name, to)
	if err != nil {
		return apiError(name, err)
	}
	fmt.Fprintf(stdout, "moved %d shard(s) of subscription %s: %s\n", len(shards), f.name, strings.Join(shards, ","))
	return nil
}

// apiError is the server's answer as its message and code.
func apiError(cmd string, err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s (%s)", cmd, st.Message(), st.Code())
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

func printSubscriptionConfig(w io.Writer, s *client.SubscriptionConfig) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name:\t%s\n", s.Name)
	fmt.Fprintf(tw, "topics:\t%s\n", strings.Join(s.Topics, ","))
	fmt.Fprintf(tw, "start:\t%s\n", startName(s.FromBeginning))
	fmt.Fprintf(tw, "ack deadline:\t%s\n", orServerDefault(s.AckDeadline, s.AckDeadline.String(), "--ack-timeout"))
	fmt.Fprintf(tw, "max un-acked:\t%s\n", orServerDefault(s.MaxUnacked, fmt.Sprint(s.MaxUnacked), "--max-unacked"))
	if s.MaxDeliveryAttempts == 0 {
		fmt.Fprintf(tw, "dead letters:\toff\n")
	} else {
		fmt.Fprintf(tw, "dead letters:\tafter %d delivery attempts, to %s\n", s.MaxDeliveryAttempts, s.DeadLetterTopic)
	}
	fmt.Fprintf(tw, "retry backoff:\t%s\n", backoffText(s))
	fmt.Fprintf(tw, "version:\t%d\n", s.Version)
	fmt.Fprintf(tw, "created:\t%s\n", s.Created.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "updated:\t%s\n", s.Updated.UTC().Format(time.RFC3339))
	tw.Flush()
}

func printSubscriptionList(w io.Writer, subs []client.SubscriptionConfig) {
	if len(subs) == 0 {
		fmt.Fprintln(w, "no subscriptions")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTOPICS\tSTART\tACK DEADLINE\tMAX UN-ACKED\tDEAD LETTERS\tRETRY BACKOFF\tVERSION")
	for _, s := range subs {
		dl := "off"
		if s.MaxDeliveryAttempts > 0 {
			dl = fmt.Sprintf("%d->%s", s.MaxDeliveryAttempts, s.DeadLetterTopic)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Name, strings.Join(s.Topics, ","), startName(s.FromBeginning),
			orServerDefault(s.AckDeadline, s.AckDeadline.String(), ""), orServerDefault(s.MaxUnacked, fmt.Sprint(s.MaxUnacked), ""),
			dl, backoffText(&s), s.Version)
	}
	tw.Flush()
}

func startName(fromBeginning bool) string {
	if fromBeginning {
		return "earliest"
	}
	return "latest"
}

// orServerDefault writes a zero setting as the server's default.
func orServerDefault[T comparable](v T, text, flagName string) string {
	var zero T
	switch {
	case v != zero:
		return text
	case flagName == "":
		return "default"
	}
	return "the server's " + flagName
}

func backoffText(s *client.SubscriptionConfig) string {
	if s.MinBackoff == 0 && s.MaxBackoff == 0 {
		return "none (at once)"
	}
	return fmt.Sprintf("%s doubling to %s", s.MinBackoff, s.MaxBackoff)
}
