package client_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamgate/streamgate/broker/kafka"
	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/devbroker"
	"github.com/streamgate/streamgate/internal/leaktest"
	"github.com/streamgate/streamgate/node"
)

// addr is the node the examples talk to: in a program, "localhost:50051",
// or a list of nodes "node1:50051,node2:50051". TestMain starts one with
// an embedded broker and the topic "orders".
var addr string

func TestMain(m *testing.M) {
	stop, err := startExampleNode()
	if err != nil {
		fmt.Fprintln(os.Stderr, "example node:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	// Every goroutine the client starts (stream readers, ack batchers,
	// handlers, publisher loops) has ended once its owner returned
	// (leaktest says why it waits up to 10 s).
	if err := leaktest.Eventually(leaktest.Patience); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		code = 1
	}
	os.Exit(code)
}

// startExampleNode runs a node on a loopback port with an in-memory broker.
func startExampleNode() (func(), error) {
	dcfg := devbroker.DefaultConfig()
	dcfg.Addr, dcfg.Topics, dcfg.Partitions = "127.0.0.1:0", []string{"orders"}, 4
	db, err := devbroker.Start(dcfg)
	if err != nil {
		return nil, err
	}
	backend, err := kafka.New(kafka.DefaultConfig(db.ListenAddr()))
	if err != nil {
		db.Close()
		return nil, err
	}
	srv, err := node.NewServer(node.DefaultConfig(), backend, node.Options{})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr = lis.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis, nil) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
		backend.Close()
		db.Close()
	}, nil
}

// Publish a message and wait for its result.
func ExamplePublisher() {
	c, err := client.Dial(addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p := c.Publisher(client.PublishSettings{})
	defer p.Close() // waits for every result

	ctx := context.Background()
	res := p.Publish(ctx, client.Message{Topic: "orders", Key: []byte("user-1"), Payload: []byte("order 1")})
	id, err := res.Get(ctx)
	if err != nil {
		log.Fatal(err) // status.Code(err) tells why: NotFound, InvalidArgument, Unavailable
	}
	fmt.Println("published, id set:", id != "")
	// Output: published, id set: true
}

// Receive messages with handlers, acking each; cancel the context to stop
// (the acks are sent and the stream closed gracefully first).
func ExampleSubscription_Receive() {
	c, err := client.Dial(addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	p := c.Publisher(client.PublishSettings{})
	for i := 1; i <= 3; i++ {
		p.Publish(ctx, client.Message{Topic: "orders", Key: []byte("user-2"), Payload: fmt.Appendf(nil, "receive %d", i)})
	}
	p.Close()

	sub := c.Subscription("example-receive", "orders")
	sub.ReceiveSettings.FromBeginning = true
	var n atomic.Int32
	err = sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
		if string(m.Key) == "user-2" { // one key: one shard, in order
			fmt.Println(string(m.Payload))
			if n.Add(1) == 3 {
				cancel()
			}
		}
		m.Ack()
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// receive 1
	// receive 2
	// receive 3
}

// Give every node: streams go to the ones that answer, and Receive and
// Publisher move to another node when theirs dies or drains. Here the
// first address does not answer at all.
func Example_failover() {
	dead := "127.0.0.1:1" // a node that is down
	c, err := client.Dial(dead + "," + addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sub := c.Subscription("example-failover", "orders")
	sub.ReceiveSettings.OnReconnect = func(r client.Reconnect) {
		// r.Dropped messages of the broken stream were not acked there:
		// they come again.
		log.Printf("moved from %s to %s: %v (%d to come again)", r.From, r.To, r.Err, r.Dropped)
	}
	got := make(chan string, 1)
	go func() {
		_ = sub.Receive(ctx, func(_ context.Context, m *client.Delivery) {
			m.Ack()
			if string(m.Key) == "user-3" {
				select {
				case got <- string(m.Payload):
				default:
				}
			}
		})
	}()
	p := c.Publisher(client.PublishSettings{})
	defer p.Close()
	// The subscription starts from the time it is opened: publish until
	// the message arrives.
	for i := 0; ; i++ {
		p.Publish(ctx, client.Message{Topic: "orders", Key: []byte("user-3"), Payload: []byte("failover")})
		select {
		case m := <-got:
			fmt.Println("received:", m)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Output: received: failover
}
