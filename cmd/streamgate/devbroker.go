package main

import (
	"context"
	"io"

	"github.com/streamgate/streamgate/internal/devbroker"
)

func runDevbroker(ctx context.Context, args []string, stderr io.Writer) error {
	cfg := devbroker.DefaultConfig()
	cfg.Addr = "127.0.0.1:9092"
	var topics listFlag
	logFormat, logLevel := "text", "info"
	fs := newFlagSet("devbroker", stderr)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address (0.0.0.0:9092 to accept other hosts and containers)")
	fs.StringVar(&cfg.AdvertiseHost, "advertise-host", cfg.AdvertiseHost, "host name clients are told to connect to (default: the listen host)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "persist the broker's state in this folder (default: memory only)")
	fs.Var(&topics, "topics", "comma-separated topics to create at start")
	fs.IntVar(&cfg.Partitions, "partitions", cfg.Partitions, "shards per created topic")
	fs.BoolVar(&cfg.AutoCreateTopics, "auto-create-topics", cfg.AutoCreateTopics, "create topics on first use")
	fs.StringVar(&logFormat, "log-format", logFormat, "text or json")
	fs.StringVar(&logLevel, "log-level", logLevel, "debug, info, warn or error")
	src, err := parseSettings(fs, args, osLookupEnv)
	if err != nil {
		return err
	}
	log, err := newLogger(logFormat, logLevel, stderr)
	if err != nil {
		return badUsage("devbroker", err)
	}
	cfg.Topics = topics
	if err := checkAddr(src, "addr", cfg.Addr, "127.0.0.1:9092"); err != nil {
		return badUsage("devbroker", err)
	}
	if err := cfg.Validate(); err != nil {
		return badUsage("devbroker", namedByFlags(err, "devbroker", devbrokerFlags, src))
	}
	b, err := devbroker.Start(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	log.Info("devbroker listening; data is not durable unless --data-dir is set",
		"addr", b.ListenAddr(), "advertised", b.ListenAddrs()[0], "topics", cfg.Topics, "partitions", cfg.Partitions)
	<-ctx.Done()
	log.Info("devbroker stopping")
	return nil
}
