package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/cluster"
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
		drainTimeout       = 30 * time.Second
		gossipAddr         = ":7946"
		advertiseAddr      string
		advertiseGRPC      string
		join               listFlag
		gossipKey          string
		ccfg               = cluster.DefaultConfig()
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
	fs.DurationVar(&ncfg.ShardRefreshInterval, "shard-refresh-interval", ncfg.ShardRefreshInterval, "how often subscriptions look for shards added to their topics")
	fs.DurationVar(&kcfg.TopicCheckInterval, "topic-check-interval", kcfg.TopicCheckInterval, "how often a subscription checks that its topics still exist and were not recreated")
	fs.DurationVar(&kcfg.CommitInterval, "commit-interval", kcfg.CommitInterval, "save acked positions at least this often")
	fs.IntVar(&kcfg.CommitEvery, "commit-every", kcfg.CommitEvery, "save acked positions after this many acks of a subscription")
	fs.IntVar(&kcfg.MaxBufferedPerShard, "max-buffered-per-shard", kcfg.MaxBufferedPerShard, "undelivered + unsaved messages of a shard before it is paused at the broker")
	fs.DurationVar(&kcfg.PublishTimeout, "publish-timeout", kcfg.PublishTimeout, "how long a message may wait for the broker's confirmation, retries included")
	fs.StringVar(&logFormat, "log-format", logFormat, "text or json")
	fs.StringVar(&logLevel, "log-level", logLevel, "debug, info, warn or error")
	fs.Var(&embeddedTopics, "embedded-topics", "topics the embedded broker creates at start (only without --brokers)")
	fs.StringVar(&embeddedAddr, "embedded-addr", embeddedAddr, "listen address of the embedded broker, for other Kafka clients such as kcat (only without --brokers)")
	fs.IntVar(&embeddedPartitions, "embedded-partitions", embeddedPartitions, "shards per topic of the embedded broker")
	fs.DurationVar(&drainTimeout, "drain-timeout", drainTimeout, "on SIGTERM, how long subscribers may take to ack what they hold before their streams end")
	fs.StringVar(&gossipAddr, "gossip-addr", gossipAddr, "memberlist bind address (empty: no cluster, a node of its own)")
	fs.StringVar(&advertiseAddr, "advertise-addr", "", "host[:port] other nodes use to reach this one's gossip (default: derived from the bind address)")
	fs.StringVar(&advertiseGRPC, "advertise-grpc-addr", "", "host:port other nodes use to reach this one's gRPC API (default: the gossip advertise host with the --grpc-addr port)")
	fs.Var(&join, "join", "comma-separated seed nodes' gossip addresses (host names allowed); retried until one answers")
	fs.StringVar(&gossipKey, "gossip-key", "", "base64 gossip encryption key of 16, 24 or 32 bytes; every node needs the same")
	fs.DurationVar(&ccfg.ProbeInterval, "gossip-probe-interval", ccfg.ProbeInterval, "how often a node probes a random peer (failure detection)")
	fs.DurationVar(&ccfg.ProbeTimeout, "gossip-probe-timeout", ccfg.ProbeTimeout, "how long a probe waits for an answer")
	fs.IntVar(&ccfg.SuspicionMult, "gossip-suspicion-mult", ccfg.SuspicionMult, "a suspected node is declared dead after this many probe intervals (scaled by cluster size)")
	fs.DurationVar(&ccfg.GossipInterval, "gossip-interval", ccfg.GossipInterval, "how often gossip messages are sent")
	fs.DurationVar(&ccfg.PushPullInterval, "gossip-push-pull-interval", ccfg.PushPullInterval, "how often full state is exchanged with a random peer (anti-entropy)")
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

	grpcLis, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	var members *cluster.Cluster
	if gossipAddr != "" {
		if members, err = startCluster(ccfg, ncfg.NodeName, gossipAddr, advertiseAddr, advertiseGRPC, grpcLis.Addr(), join, gossipKey, reg, log); err != nil {
			grpcLis.Close()
			return err
		}
		log.Info("cluster member", "gossip", members.LocalAddr(), "join", []string(join))
	}
	opts := node.Options{Registry: reg, Logger: log}
	if members != nil {
		opts.Cluster = members
	}
	srv, err := node.NewServer(ncfg, backend, opts)
	if err != nil {
		grpcLis.Close()
		if members != nil {
			members.Kill()
		}
		return err
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
	log.Info("draining", "timeout", drainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; err != nil {
		return err
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := backend.Flush(fctx); err != nil {
		log.Warn("unconfirmed publishes at exit", "err", err)
	}
	log.Info("stopped")
	return nil
}

// startCluster maps the gossip flags onto cluster.Config and starts the
// member.
func startCluster(ccfg cluster.Config, name, gossipAddr, advertise, advertiseGRPC string, grpcAddr net.Addr, join []string,
	key string, reg *prometheus.Registry, log *slog.Logger) (*cluster.Cluster, error) {
	host, port, err := net.SplitHostPort(gossipAddr)
	if err != nil {
		return nil, fmt.Errorf("--gossip-addr %q: %w", gossipAddr, err)
	}
	ccfg.NodeName = name
	if host != "" {
		ccfg.BindAddr = host
	}
	if ccfg.BindPort, err = strconv.Atoi(port); err != nil {
		return nil, fmt.Errorf("--gossip-addr %q: bad port", gossipAddr)
	}
	if advertise != "" {
		h, p, err := net.SplitHostPort(advertise)
		if err != nil {
			h, p = advertise, ""
		}
		ccfg.AdvertiseAddr = h
		if p != "" {
			if ccfg.AdvertisePort, err = strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("--advertise-addr %q: bad port", advertise)
			}
		}
	}
	if key != "" {
		if ccfg.SecretKey, err = base64.StdEncoding.DecodeString(key); err != nil {
			return nil, fmt.Errorf("--gossip-key: not base64: %w", err)
		}
	}
	ccfg.Join = join
	ccfg.GRPCAddr = advertiseGRPC
	if ccfg.GRPCAddr == "" {
		_, gport, _ := net.SplitHostPort(grpcAddr.String())
		h := ccfg.AdvertiseAddr
		if h == "" {
			if h = ccfg.BindAddr; h == "" || h == "0.0.0.0" || h == "::" {
				h, _ = os.Hostname()
			}
		}
		ccfg.GRPCAddr = net.JoinHostPort(h, gport)
	}
	ccfg.Logger = log
	ccfg.Registerer = reg
	return cluster.Start(ccfg)
}
