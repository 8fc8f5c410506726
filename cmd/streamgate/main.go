// Command streamgate is the streamgate gateway and its tools.
//
//	streamgate [serve] [flags]    run a node (the default subcommand)
//	streamgate devbroker [flags]  run the in-memory Kafka-protocol broker alone
//	streamgate publish [flags]    publish messages from flags or stdin lines
//	streamgate subscribe [flags]  print a subscription's messages and ack them
//	streamgate status [flags]     print the cluster's members and assignments
//	streamgate subscriptions <create|get|update|list|delete|seek> [flags]
//	                              manage subscriptions (the Admin API)
//	streamgate bench [flags]      measure throughput, latency and CPU per message
//	streamgate help [subcommand]  list the subcommands, or one's flags
//
// Every flag can also be set by an environment variable: the flag name
// upper-cased, dashes to underscores, prefixed STREAMGATE_ (--grpc-addr is
// STREAMGATE_GRPC_ADDR). A flag given on the command line wins over the
// environment. Every setting is checked before anything starts; a bad one
// is reported once, naming the flag (and the variable when that set it),
// and the exit status is 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	var ee exitError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &ee):
		os.Exit(int(ee))
	default:
		fmt.Fprintln(os.Stderr, "streamgate:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a code and no further message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// run runs the subcommand args name. A usage mistake is reported on stderr
// here, once, and becomes exitError(2).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, stdin, stdout, stderr)
	if ue, ok := errors.AsType[*usageError](err); ok {
		prog := "streamgate "
		if ue.cmd == "" {
			prog = "streamgate: "
		}
		fmt.Fprintf(stderr, "%s%s\n%s\n", prog, ue.Error(), ue.usageLine())
		return exitError(2)
	}
	return err
}

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "help" || isHelpFlag(a):
			if len(args) > 1 && a == "help" && args[1] != "help" {
				// "streamgate help serve" is "streamgate serve -h".
				return dispatch(ctx, []string{args[1], "-h"}, stdin, stdout, stderr)
			}
			printUsage(stdout)
			return nil
		case a != "" && a[0] != '-':
			cmd, args = a, args[1:]
		}
	}
	switch cmd {
	case "serve":
		return runServe(ctx, args, stderr)
	case "devbroker":
		return runDevbroker(ctx, args, stderr)
	case "publish":
		return runPublish(ctx, args, stdin, stdout, stderr)
	case "subscribe":
		return runSubscribe(ctx, args, stdout, stderr)
	case "status":
		return runStatus(ctx, args, stdout, stderr)
	case "subscriptions":
		return runSubscriptions(ctx, args, stdout, stderr)
	case "bench":
		return runBench(ctx, args, stdout, stderr)
	default:
		return badUsage("", fmt.Errorf("unknown subcommand %q", cmd))
	}
}

// isHelpFlag reports the spellings the flag package takes for help, which
// before a subcommand ask for the list of subcommands rather than serve's
// flags.
func isHelpFlag(a string) bool {
	switch a {
	case "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

// subcommands are listed by "streamgate help", in this order.
var subcommands = []struct{ name, summary string }{
	{"serve", "run a node (default); with no --brokers it embeds an in-memory broker"},
	{"devbroker", "run the in-memory Kafka-protocol broker alone"},
	{"publish", "publish messages from flags or stdin lines"},
	{"subscribe", "print a subscription's messages and ack them"},
	{"status", "print the cluster's members and subscriptions' assignments"},
	{"subscriptions", "create, get, update, list, delete or seek subscriptions"},
	{"bench", "measure throughput, latency and CPU per message, against direct franz-go"},
}

// summary is a subcommand's line in the list.
func summary(cmd string) string {
	for _, s := range subcommands {
		if s.name == cmd {
			return s.summary
		}
	}
	return ""
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, "usage: streamgate [subcommand] [flags]\n\nsubcommands:\n")
	for _, s := range subcommands {
		fmt.Fprintf(w, "  %-13s %s\n", s.name, s.summary)
	}
	fmt.Fprint(w, `
'streamgate <subcommand> -h' (or 'streamgate help <subcommand>') lists a
subcommand's flags. Every flag can also be set by an environment variable:
the flag name upper-cased, dashes to underscores, prefixed STREAMGATE_
(--grpc-addr is STREAMGATE_GRPC_ADDR); a flag given on the command line wins.
`)
}
