package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/internal/devbroker"
	"github.com/streamgate/streamgate/node"
)

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	ncfg := node.DefaultConfig()
	kcfg := kafka.DefaultConfig()
	var (
		brokers            listFlag
		embeddedTopics     listFlag
		grpcAddr           = ":50051"
		httpAddr           = ":8080"
		logFormat          = "text"
		logLevel           = "info"
		embeddedPartitions = 8
		embeddedAddr       = "127.0.0.1:9092"
		shutdownTimeout    = 30 * time.Second
	)
	fs := newFlagSet("serve", stderr)
	fs.Var(&brokers, "brokers", "comma-separated Kafka bootstrap addresses (empty: start an embedded in-memory broker)")
	fs.StringVar(&grpcAddr, "grpc-addr", grpcAddr, "listen address of the gRPC API")
	fs.StringVar(&httpAddr, "http-addr", httpAddr, "listen address of /metrics, /healthz and /readyz (empty: off)")
	fs.StringVar(&ncfg.NodeName, "node-name", ncfg.NodeName, "unique name of this node in the cluster")
	fs.IntVar(&ncfg.PublishWindow, "publish-window", ncfg.PublishWindow, "unconfirmed publishes per stream before the node stops reading it")
	fs.Int64Var(&ncfg.MaxBufferedBytes, "max-buffered-bytes", ncfg.MaxBufferedBytes, "bytes of unconfirmed publishes the node holds across streams before all wait")
	fs.IntVar(&ncfg.MaxMessageBytes, "max-message-bytes", ncfg.MaxMessageBytes, "largest message accepted (topic, key, payload and headers)")
	fs.IntVar(&ncfg.MaxUnacked, "max-unacked", ncfg.MaxUnacked, "un-acked messages a subscriber may hold before deliveries to it stop")
	fs.DurationVar(&ncfg.AckTimeout, "ack-timeout", ncfg.AckTimeout, "a subscriber holding a message un-acked this long is disconnected and its messages redelivered")
	fs.DurationVar(&kcfg.CommitInterval, "commit-interval", kcfg.CommitInterval, "save acked positions at least this often")
	fs.IntVar(&kcfg.CommitEvery, "commit-every", kcfg.CommitEvery, "save acked positions after this many acks of a subscription")
	fs.IntVar(&kcfg.MaxBufferedPerShard, "max-buffered-per-shard", kcfg.MaxBufferedPerShard, "undelivered + unsaved messages of a shard before it is paused at the broker")
	fs.DurationVar(&kcfg.PublishTimeout, "publish-timeout", kcfg.PublishTimeout, "how long a message may wait for the broker's confirmation, retries included")
	fs.StringVar(&logFormat, "log-format", logFormat, "text or json")
	fs.StringVar(&logLevel, "log-level", logLevel, "debug, info, warn or error")
	fs.Var(&embeddedTopics, "embedded-topics", "topics the embedded broker creates at start (only without --brokers)")
	fs.StringVar(&embeddedAddr, "embedded-addr", embeddedAddr, "listen address of the embedded broker, for other Kafka clients such as kcat (only without --brokers)")
	fs.IntVar(&embeddedPartitions, "embedded-partitions", embeddedPartitions, "shards per topic of the embedded broker")
	fs.DurationVar(&shutdownTimeout, "shutdown-timeout", shutdownTimeout, "how long open streams may take to finish on SIGTERM")
	if err := parseFlags(fs, args, osLookupEnv); err != nil {
		return err
	}
	log, err := newLogger(logFormat, logLevel, stderr)
	if err != nil {
		return err
	}
	kcfg.MaxMessageBytes = ncfg.MaxMessageBytes
	kcfg.Logger = log

	if len(brokers) == 0 {
		dcfg := devbroker.DefaultConfig()
		dcfg.Addr = embeddedAddr
		dcfg.Topics = embeddedTopics
		dcfg.Partitions = embeddedPartitions
		db, err := devbroker.Start(dcfg)
		if err != nil {
			return err
		}
		defer db.Close()
		brokers = listFlag{db.ListenAddr()}
		log.Warn("no --brokers given: started an embedded in-memory broker; data is NOT durable and is lost on exit",
			"addr", db.ListenAddr(), "topics", dcfg.Topics, "shards_per_topic", dcfg.Partitions)
	}
	kcfg.Brokers = brokers

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	kcfg.Registerer = reg
	backend, err := kafka.New(kcfg)
	if err != nil {
		return err
	}
	defer backend.Close()

	srv, err := node.NewServer(ncfg, backend, reg, log)
	if err != nil {
		return err
	}
	grpcLis, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	var httpLis net.Listener
	if httpAddr != "" {
		if httpLis, err = net.Listen("tcp", httpAddr); err != nil {
			grpcLis.Close()
			return fmt.Errorf("--http-addr: %w", err)
		}
	}
	log.Info("streamgate serving", "node", ncfg.NodeName, "grpc", grpcLis.Addr().String(), "http", httpAddr, "brokers", kcfg.Brokers)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(grpcLis, httpLis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; err != nil {
		return err
	}
	if err := backend.Flush(sctx); err != nil {
		log.Warn("unconfirmed publishes at exit", "err", err)
	}
	log.Info("stopped")
	return nil
}
