// Command streamgate is the streamgate gateway and its tools.
//
//	streamgate [serve] [flags]    run a node (the default subcommand)
//	streamgate devbroker [flags]  run the in-memory Kafka-protocol broker alone
//	streamgate publish [flags]    publish messages from flags or stdin lines
//	streamgate subscribe [flags]  print a subscription's messages and ack them
//	streamgate status [flags]     print the cluster's members and assignments
//
// Every flag of serve and devbroker can also be set by an environment
// variable: the flag name upper-cased, dashes to underscores, prefixed
// STREAMGATE_ (--grpc-addr is STREAMGATE_GRPC_ADDR). A flag given on the
// command line wins over the environment.
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

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
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
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown subcommand %q", cmd)
	}
}

const usage = `usage: streamgate [subcommand] [flags]

subcommands:
  serve       run a node (default); with no --brokers it embeds an in-memory broker
  devbroker   run the in-memory Kafka-protocol broker alone
  publish     publish messages from flags or stdin lines
  subscribe   print a subscription's messages and ack them
  status      print the cluster's members and subscriptions' assignments

'streamgate <subcommand> -h' lists a subcommand's flags.
`
