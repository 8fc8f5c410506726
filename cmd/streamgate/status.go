package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/streamgate/streamgate/client"
)

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	addr := "localhost:50051"
	var subs listFlag
	fs := newFlagSet("status", stderr)
	fs.StringVar(&addr, "addr", addr, "streamgate gRPC address (any node)")
	fs.Var(&subs, "subscription", "also describe these subscriptions; repeatable or comma-separated")
	if err := parseFlags(fs, args, osLookupEnv); err != nil {
		return err
	}
	c, err := client.Dial(addr)
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
			return fmt.Errorf("status: subscription %q: %w", name, err)
		}
		fmt.Fprintf(stdout, "\nsubscription %s (topics %s):\n", info.Name, strings.Join(info.Topics, ","))
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SHARD\tSUBSCRIBER\tNODE\tREAD BY\tIN FLIGHT\tBACKLOG")
		for _, s := range info.Shards {
			backlog := "?"
			if s.Backlog >= 0 {
				backlog = fmt.Sprint(s.Backlog)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", s.Shard, s.SubscriberID, s.Node, orDash(s.ClaimedBy), s.InFlight, backlog)
		}
		tw.Flush()
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
