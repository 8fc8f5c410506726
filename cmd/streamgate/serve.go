package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/cluster"
	"github.com/streamgate/streamgate/internal/devbroker"
	"github.com/streamgate/streamgate/node"
)

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	c := defaultServeConfig()
	fs := newFlagSet("serve", stderr)
	c.register(fs)
	src, err := parseSettings(fs, args, osLookupEnv)
	if err != nil {
		return err
	}
	log, err := newLogger(c.logFormat, c.logLevel, stderr)
	if err != nil {
		return badUsage("serve", err)
	}
	if err := c.check(src); err != nil {
		return badUsage("serve", err)
	}

	// A node's garbage is short-lived and its live heap small, so
	// collecting at 200% growth instead of Go's 100% halves the collections
	// for a few more MiB (BENCHMARKS.md: CPU per message). Not for the
	// embedded broker's sake: its heap is the whole log. GOGC wins.
	embedded := c.backendKind == "kafka" && len(c.brokers) == 0
	if _, set := os.LookupEnv("GOGC"); !set && !embedded {
		debug.SetGCPercent(200)
	}

	// Nothing has started before this line.
	if c.debugAddr != "" {
		// Deferred first, so stopped last: it can profile the shutdown.
		dbg, err := startDebugServer(c.debugAddr, log)
		if err != nil {
			return err
		}
		defer dbg.stop()
	}
	if len(c.brokers) == 0 && c.backendKind == "kafka" {
		db, err := devbroker.Start(c.embedded)
		if err != nil {
			return fmt.Errorf("--embedded-addr: %w", err)
		}
		defer db.Close()
		c.kafka.Brokers = []string{db.ListenAddr()}
		log.Warn("no --brokers given: started an embedded in-memory broker; data is NOT durable and is lost on exit",
			"addr", db.ListenAddr(), "topics", c.embedded.Topics, "shards_per_topic", c.embedded.Partitions)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	backend, err := c.openBackend(log, reg)
	if err != nil {
		return err
	}
	defer backend.Close()

	grpcLis, err := net.Listen("tcp", c.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	var httpLis net.Listener
	if c.httpAddr != "" {
		if httpLis, err = net.Listen("tcp", c.httpAddr); err != nil {
			grpcLis.Close()
			return fmt.Errorf("--http-addr: %w", err)
		}
	}
	closeListeners := func() {
		grpcLis.Close()
		if httpLis != nil {
			httpLis.Close()
		}
	}
	opts := node.Options{Registry: reg, Logger: log}
	if err := c.tls.apply(&opts, log); err != nil {
		closeListeners()
		return err
	}
	if !c.tls.on() {
		warnPlaintext(log, grpcLis.Addr())
	}
	if err := c.auth.apply(&opts, log, reg); err != nil {
		closeListeners()
		return err
	}
	var members *cluster.Cluster
	if c.gossipAddr != "" {
		if c.cluster.GRPCAddr == "" {
			c.cluster.GRPCAddr = c.defaultGRPCAddr(grpcLis.Addr())
		}
		c.cluster.Logger = log
		c.cluster.Registerer = reg
		if members, err = cluster.Start(c.cluster); err != nil {
			closeListeners()
			return err
		}
		log.Info("cluster member", "gossip", members.LocalAddr(), "join", []string(c.join))
		opts.Cluster = members
	}
	srv, err := node.NewServer(c.node, backend, opts)
	if err != nil {
		closeListeners()
		if members != nil {
			members.Kill()
		}
		return err
	}
	log.Info("streamgate serving", "node", c.node.NodeName, "grpc", grpcLis.Addr().String(), "http", c.httpAddr, "brokers", c.kafka.Brokers)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(grpcLis, httpLis) }()
	select {
	case err := <-errc:
		srv.Kill()
		if members != nil {
			_ = members.Leave(5 * time.Second)
		}
		return err
	case <-ctx.Done():
	}
	log.Info("draining", "timeout", c.drainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.drainTimeout)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; err != nil {
		return err
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := flushBackend(fctx, backend); err != nil {
		log.Warn("unconfirmed publishes at exit", "err", err)
	}
	log.Info("stopped")
	return nil
}

// serveBackend is a backend as serve runs it.
type serveBackend interface {
	node.Backend
	Close()
}

// openBackend connects the backend --backend names.
func (c *serveConfig) openBackend(log *slog.Logger, reg *prometheus.Registry) (serveBackend, error) {
	if c.backendKind == "rabbitmq" {
		b, err := newRabbitBackend(c.rabbitAddr, log, c.node.MaxMessageBytes, c.kafka.PublishTimeout)
		if err != nil {
			return nil, fmt.Errorf("--rabbitmq-addr: %w", err)
		}
		log.Info("backend: RabbitMQ streams", "addr", redactURL(c.rabbitAddr))
		return b, nil
	}
	c.kafka.Logger = log
	c.kafka.Registerer = reg
	if c.kafka.TLS != nil || c.kafka.SASL.Mechanism != "" {
		// kafka.SASL logs without its password.
		log.Info("connecting to Kafka with TLS or SASL", "tls", c.kafka.TLS != nil, "sasl", c.kafka.SASL)
	}
	return kafka.New(c.kafka)
}

// flushBackend waits for unconfirmed publishes, where the backend can.
func flushBackend(ctx context.Context, b serveBackend) error {
	if f, ok := b.(interface{ Flush(context.Context) error }); ok {
		return f.Flush(ctx)
	}
	return nil
}

// redactURL drops the password from an address for logs.
func redactURL(addr string) string {
	u, err := url.Parse(addr)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}
