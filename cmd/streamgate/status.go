package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
)

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	addr := "localhost:50051"
	var subs listFlag
	fs := newFlagSet("status", stderr)
	fs.StringVar(&addr, "addr", addr, "streamgate gRPC address (any node)")
	var tlsFlags clientTLS
	tlsFlags.register(fs)
	fs.Var(&subs, "subscription", "also describe these subscriptions; repeatable or comma-separated")
	if err := parseFlags(fs, args, osLookupEnv); err != nil {
		return err
	}
	c, err := tlsFlags.dial("status", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	self, members, err := c.Members(ctx)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	fmt.Fprintf(stdout, "members (as %s sees them):\n", self)
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tGRPC\tGOSSIP\tSUBSCRIBERS\tCLAIMED SHARDS")
	for _, m := range members {
		state := m.State
		if m.Draining {
			state += ",draining"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", m.Name, state, m.GRPCAddr, m.GossipAddr, m.Subscribers, m.ClaimedShards)
	}
	tw.Flush()
	for _, name := range subs {
		info, err := c.DescribeSubscription(ctx, name)
		if err != nil {
			if st, ok := status.FromError(err); ok && st.Code() == codes.NotFound {
				return fmt.Errorf("status: %s", st.Message())
			}
			return fmt.Errorf("status: subscription %q: %w", name, err)
		}
		printSubscription(stdout, info)
	}
	return nil
}

// printSubscription prints one subscription's shards. SAVED BACKLOG is what
// the backend has saved (messages after the saved position); ACKED UNSAVED
// is the part of it that subscribers acked and the next save removes.
func printSubscription(w io.Writer, info *client.SubscriptionInfo) {
	fmt.Fprintf(w, "\nsubscription %s (topics %s):\n", info.Name, strings.Join(info.Topics, ","))
	if len(info.Subscribers) == 0 {
		fmt.Fprintln(w, "no subscribers; positions saved by the backend")
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tSUBSCRIBER\tNODE\tREAD BY\tIN FLIGHT\tSAVED BACKLOG\tACKED UNSAVED")
	var backlog, unsaved int64
	unknown := false
	for _, s := range info.Shards {
		b := "?"
		switch {
		case s.Backlog < 0:
			unknown = true
		case !s.Saved:
			b = fmt.Sprintf("%d (no saved position)", s.Backlog)
		default:
			b = fmt.Sprint(s.Backlog)
		}
		backlog += max(s.Backlog, 0)
		unsaved += s.AckedUnsaved
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\n", s.Shard, orDash(s.SubscriberID), orDash(s.Node), orDash(s.ClaimedBy), s.InFlight, b, s.AckedUnsaved)
	}
	tw.Flush()
	total := fmt.Sprint(backlog)
	if unknown {
		total = "at least " + total
	}
	fmt.Fprintf(w, "total: saved backlog %s, acked unsaved %d\n", total, unsaved)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
