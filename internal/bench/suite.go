package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"

	"github.com/streamgate/streamgate/client"
)

// Modes are the workloads a Suite runs.
var Modes = []string{"both", "publish", "subscribe", "e2e"}

// Suite is one `streamgate bench` run: a mode's phases through the gateway
// and, with Direct, the same workload with franz-go before each.
type Suite struct {
	Mode    string // one of Modes
	Addr    string // the gateway's gRPC address
	Brokers string // the broker's bootstrap address; "" when unknown (no Direct, no topic creation)
	Topic   string // with Brokers: a prefix for the topics made for the run; without: the topic to use
	Shards  int    // partitions of the topics made for the run
	Direct  bool
	Workload
	// DialOptions are added to the gateway client's (TLS, for one).
	DialOptions []grpc.DialOption
	// KafkaOpts are added to every franz-go client of Brokers (TLS and
	// SASL, for one).
	KafkaOpts []kgo.Opt

	// GatewayPID and BrokerPID are local processes whose CPU each phase
	// reads from /proc; 0 when not known.
	GatewayPID, BrokerPID int

	// Phase is called when a phase starts, with its row's name.
	Phase func(name string)
}

// Row is one phase's figures.
type Row struct {
	Name    string // e.g. "publish (streamgate)"
	Path    string // "direct" or "streamgate"
	Kind    string // "write", "read" or "e2e"
	Result  Result
	Gateway time.Duration // the gateway's CPU over the phase; -1 when not read
	Broker  time.Duration // the broker's CPU over the phase; -1 when not read
}

// Run runs the suite's phases in order and returns a row for each.
func (s Suite) Run(ctx context.Context) ([]Row, error) {
	if err := s.Workload.Check(); err != nil {
		return nil, err
	}
	if s.Direct && s.Brokers == "" {
		return nil, errors.New("--direct needs the broker's address (--brokers)")
	}
	gwTopic, directTopic := s.Topic, s.Topic+"-direct"
	if s.Brokers != "" {
		gwTopic = s.Topic + "-gateway"
		topics := []string{gwTopic}
		if s.Direct {
			topics = append(topics, directTopic)
		}
		if err := createTopics(ctx, s.Brokers, s.Shards, s.KafkaOpts, topics...); err != nil {
			return nil, err
		}
	}
	cl, err := client.Dial(s.Addr, s.DialOptions...)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", s.Addr, err)
	}
	defer cl.Close()
	sub := "bench-" + gwTopic

	var rows []Row
	add := func(row Row, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", row.Name, err)
		}
		rows = append(rows, row)
		return nil
	}
	switch s.Mode {
	case "both", "publish", "subscribe":
		if s.Direct && s.Mode != "subscribe" {
			if err := add(s.write(ctx, "produce (direct franz-go)", "direct", func() (Writer, func(), error) {
				return DirectWriter(ctx, s.Brokers, directTopic, s.Workload, s.KafkaOpts...)
			})); err != nil {
				return rows, err
			}
		}
		if s.Direct && s.Mode == "subscribe" {
			if err := s.fill(ctx, func() (Writer, func(), error) {
				return DirectWriter(ctx, s.Brokers, directTopic, s.Workload, s.KafkaOpts...)
			}); err != nil {
				return rows, fmt.Errorf("filling %s: %w", directTopic, err)
			}
		}
		if s.Mode != "subscribe" {
			if err := add(s.write(ctx, "publish (streamgate)", "streamgate", func() (Writer, func(), error) {
				return GatewayWriter(cl, gwTopic, s.Workload), func() {}, nil
			})); err != nil {
				return rows, err
			}
		} else if err := s.fill(ctx, func() (Writer, func(), error) { return GatewayWriter(cl, gwTopic, s.Workload), func() {}, nil }); err != nil {
			return rows, fmt.Errorf("filling %s: %w", gwTopic, err)
		}
		if s.Mode == "publish" {
			return rows, nil
		}
		want := s.written(rows)
		if s.Direct {
			if err := add(s.read(ctx, "consume + commit (direct franz-go)", "direct", want, func() (Reader, func(), error) {
				return DirectReader(s.Brokers, directTopic, "bench-"+directTopic, s.Workload, s.KafkaOpts...), func() {}, nil
			})); err != nil {
				return rows, err
			}
		}
		err := add(s.read(ctx, "subscribe + ack (streamgate)", "streamgate", want, func() (Reader, func(), error) {
			return GatewayReader(ctx, cl, sub, gwTopic, s.Workload)
		}))
		return rows, err
	case "e2e":
		// Progress counts deliveries only.
		quiet := s.Workload
		quiet.Progress = nil
		if s.Direct {
			if err := add(s.e2e(ctx, "produce -> consume (direct franz-go)", "direct",
				func() (Writer, func(), error) {
					return DirectWriter(ctx, s.Brokers, directTopic, quiet, s.KafkaOpts...)
				},
				func() (Reader, func(), error) {
					return DirectReader(s.Brokers, directTopic, "bench-"+directTopic, s.Workload, s.KafkaOpts...), func() {}, nil
				})); err != nil {
				return rows, err
			}
		}
		err := add(s.e2e(ctx, "publish -> subscribe (streamgate)", "streamgate",
			func() (Writer, func(), error) { return GatewayWriter(cl, gwTopic, quiet), func() {}, nil },
			func() (Reader, func(), error) { return GatewayReader(ctx, cl, sub, gwTopic, s.Workload) }))
		return rows, err
	}
	return nil, fmt.Errorf("--mode %q: want one of %v", s.Mode, Modes)
}

// written is how many messages the last write phase confirmed (with
// --duration the readers read that many), or Count.
func (s Suite) written(rows []Row) int64 {
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].Kind == "write" {
			return rows[i].Result.Messages
		}
	}
	return int64(s.Count)
}

// cpu reads a process's CPU; -1 when pid is 0 or unreadable.
func cpu(pid int) time.Duration {
	if pid == 0 {
		return -1
	}
	d, err := ProcessCPU(pid)
	if err != nil {
		return -1
	}
	return d
}

// measure runs timed between reads of the processes' CPU.
func (s Suite) measure(name, path, kind string, timed func() (Result, error)) (Row, error) {
	if s.Phase != nil {
		s.Phase(name)
	}
	g0, b0 := cpu(s.GatewayPID), cpu(s.BrokerPID)
	res, err := timed()
	row := Row{Name: name, Path: path, Kind: kind, Result: res, Gateway: -1, Broker: -1}
	if g1 := cpu(s.GatewayPID); g0 >= 0 && g1 >= 0 {
		row.Gateway = g1 - g0
	}
	if b1 := cpu(s.BrokerPID); b0 >= 0 && b1 >= 0 {
		row.Broker = b1 - b0
	}
	return row, err
}

func (s Suite) write(ctx context.Context, name, path string, prepare func() (Writer, func(), error)) (Row, error) {
	w, cleanup, err := prepare()
	if err != nil {
		return Row{Name: name}, err
	}
	defer cleanup()
	return s.measure(name, path, "write", func() (Result, error) {
		m := startMeter()
		n, b, err := w(ctx)
		return m.result(n, b, nil), err
	})
}

// fill writes the workload before a read phase, untimed, with no row.
func (s Suite) fill(ctx context.Context, prepare func() (Writer, func(), error)) error {
	_, err := s.write(ctx, "filling the topic (untimed)", "", prepare)
	return err
}

func (s Suite) read(ctx context.Context, name, path string, want int64, prepare func() (Reader, func(), error)) (Row, error) {
	r, cleanup, err := prepare()
	if err != nil {
		return Row{Name: name}, err
	}
	defer cleanup()
	return s.measure(name, path, "read", func() (Result, error) {
		var target atomic.Int64
		target.Store(want)
		m := startMeter()
		n, b, err := r(ctx, &target, nil)
		return m.result(n, b, nil), err
	})
}

// e2e reads while it writes and records each delivery's latency, but not
// for messages sent in the first tenth of the run (at most 1 s) while the
// readers start.
func (s Suite) e2e(ctx context.Context, name, path string, prepW func() (Writer, func(), error), prepR func() (Reader, func(), error)) (Row, error) {
	r, rclean, err := prepR()
	if err != nil {
		return Row{Name: name}, err
	}
	defer rclean()
	w, wclean, err := prepW()
	if err != nil {
		return Row{Name: name}, err
	}
	defer wclean()
	return s.measure(name, path, "e2e", func() (Result, error) {
		var target atomic.Int64
		target.Store(math.MaxInt64)
		m := startMeter()
		lat := &Histogram{from: m.start.Add(min(time.Second, s.runLength()/10))}
		type readResult struct {
			n   int64
			err error
		}
		readDone := make(chan readResult, 1)
		go func() {
			n, _, err := r(ctx, &target, lat)
			readDone <- readResult{n, err}
		}()
		n, b, werr := w(ctx)
		target.Store(n)
		rr := <-readDone
		return m.result(n, b, lat), errors.Join(werr, rr.err)
	})
}

// runLength is how long the write phase is meant to take.
func (s Suite) runLength() time.Duration {
	if s.Duration > 0 {
		return s.Duration
	}
	if s.Rate > 0 {
		return time.Duration(float64(s.Count) / s.Rate * float64(time.Second))
	}
	return time.Second
}

func createTopics(ctx context.Context, brokers string, shards int, opts []kgo.Opt, topics ...string) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers)}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, int32(shards), -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("creating topics %v: %w", topics, err)
	}
	for _, t := range resp.Sorted() {
		if t.Err != nil {
			return fmt.Errorf("creating topic %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}
