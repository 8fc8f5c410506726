package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamgate/streamgate/broker/rabbitmq"
	"github.com/streamgate/streamgate/internal/rabbitmqtest"
)

// TestMain stops the rabbitmq-server the RabbitMQ tests start, if any.
func TestMain(m *testing.M) { rabbitmqtest.Main(m) }

// TestCLI_ServeOnRabbitMQPublishesAndSubscribes runs serve with
// --backend rabbitmq on a real rabbitmq-server, then the README's publish
// and subscribe commands through it.
func TestCLI_ServeOnRabbitMQPublishesAndSubscribes(t *testing.T) {
	srv := rabbitmqtest.Require(t)
	admin, err := rabbitmq.New(rabbitmq.DefaultConfig(srv.URI()))
	require.NoError(t, err)
	require.NoError(t, admin.CreateTopic(t.Context(), "rq-demo", 4))
	admin.Close()

	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var serveLog syncBuffer
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--backend", "rabbitmq", "--rabbitmq-addr", srv.URI(),
			"--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--gossip-addr", ""}, nil, &bytes.Buffer{}, &serveLog)
	}()
	waitReady(t, httpAddr)

	var out, errOut bytes.Buffer
	err = run(t.Context(), []string{"publish", "--addr", grpcAddr, "--topic", "rq-demo", "--key", "user-1"},
		strings.NewReader("hello\nworld\n"), &out, &errOut)
	require.NoError(t, err, errOut.String())
	require.Equal(t, 2, strings.Count(out.String(), "\tok\t"), out.String())

	out.Reset()
	err = run(t.Context(), []string{"subscribe", "--addr", grpcAddr, "--subscription", "rq-billing", "--topic", "rq-demo",
		"--from-beginning", "--max", "2"}, nil, &out, &errOut)
	require.NoError(t, err, errOut.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], "attempt=1\tkey=user-1\theaders=\thello")
	require.Contains(t, lines[1], "attempt=1\tkey=user-1\theaders=\tworld")

	// status reads the saved positions from the backend (nobody is
	// subscribed any more): both messages acked, nothing left.
	require.Eventually(t, func() bool {
		out.Reset()
		err := run(t.Context(), []string{"status", "--addr", grpcAddr, "--subscription", "rq-billing"}, nil, &out, &errOut)
		return err == nil && strings.Contains(out.String(), "total: saved backlog 0, acked unsaved 0")
	}, 20*time.Second, 100*time.Millisecond, "status on RabbitMQ:\n%s%s", &out, &errOut)

	// An unknown topic is NOT_FOUND, as on Kafka.
	out.Reset()
	err = run(t.Context(), []string{"publish", "--addr", grpcAddr, "--topic", "rq-missing", "--message", "x"}, nil, &out, &errOut)
	require.Equal(t, exitError(1), err)
	require.Contains(t, out.String(), "NotFound")

	cancel()
	select {
	case err := <-served:
		require.NoError(t, err, serveLog.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// TestCLI_BackendFlagIsChecked: a wrong --backend or --rabbitmq-addr is a
// usage error before anything starts.
func TestCLI_BackendFlagIsChecked(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--backend", "pulsar"},
		{"serve", "--backend", "rabbitmq", "--rabbitmq-addr", "localhost:5552"},
		{"serve", "--backend", "rabbitmq", "--brokers", "k:9092"},
	} {
		var errOut bytes.Buffer
		err := run(t.Context(), args, nil, &bytes.Buffer{}, &errOut)
		require.Error(t, err, "%v", args)
		require.Contains(t, errOut.String(), "usage: streamgate serve", "%v", args)
	}
}
