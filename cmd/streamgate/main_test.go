package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFlags_EnvironmentFillsUnsetFlagsAndTheCommandLineWins(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	grpcAddr := fs.String("grpc-addr", ":50051", "")
	window := fs.Int("publish-window", 1000, "")
	var brokers listFlag
	fs.Var(&brokers, "brokers", "")
	env := map[string]string{
		"STREAMGATE_GRPC_ADDR":      ":1111",
		"STREAMGATE_PUBLISH_WINDOW": "7",
		"STREAMGATE_BROKERS":        "a:9092, b:9092",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	require.NoError(t, parseFlags(fs, []string{"--grpc-addr", ":2222"}, lookup))
	assert.Equal(t, ":2222", *grpcAddr, "a flag on the command line wins")
	assert.Equal(t, 7, *window)
	assert.Equal(t, listFlag{"a:9092", "b:9092"}, brokers)

	env["STREAMGATE_PUBLISH_WINDOW"] = "many"
	fs2 := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs2.Int("publish-window", 1000, "")
	err := parseFlags(fs2, nil, lookup)
	require.ErrorContains(t, err, `STREAMGATE_PUBLISH_WINDOW="many"`)
}

// waitReady waits until the node's /readyz answers 200.
func waitReady(t *testing.T, httpAddr string) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// TestCLI_ServeWithEmbeddedBrokerThenPublish runs the README's first command
// (serve, embedded broker) and the quick start's publish.
func TestCLI_ServeWithEmbeddedBrokerThenPublish(t *testing.T) {
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var serveLog bytes.Buffer
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--embedded-topics", "demo", "--embedded-addr", freeAddr(t), "--gossip-addr", "127.0.0.1:0", "--log-format", "json"},
			nil, &bytes.Buffer{}, &syncWriter{w: &serveLog})
	}()
	waitReady(t, httpAddr)

	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"publish", "--addr", grpcAddr, "--topic", "demo", "--key", "k", "--header", "h=v"},
		strings.NewReader("one\ntwo\nthree\n"), &out, &errOut)
	require.NoError(t, err, errOut.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	for _, l := range lines {
		assert.Contains(t, l, "\tok\t")
	}

	out.Reset()
	err = run(context.Background(), []string{"subscribe", "--addr", grpcAddr, "--subscription", "cli", "--topic", "demo",
		"--from-beginning", "--max", "3", "--format", "json"}, nil, &out, &errOut)
	require.NoError(t, err, errOut.String())
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	var payloads []string
	for _, l := range lines {
		var m struct {
			Payload string `json:"payload"`
			Key     string `json:"key"`
			Headers []struct{ Key, Value string }
		}
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		assert.Equal(t, "k", m.Key)
		require.Len(t, m.Headers, 1)
		assert.Equal(t, "h", m.Headers[0].Key)
		payloads = append(payloads, m.Payload)
	}
	assert.Equal(t, []string{"one", "two", "three"}, payloads, "one key: one shard, in order")

	out.Reset()
	err = run(context.Background(), []string{"publish", "--addr", grpcAddr, "--topic", "missing", "--message", "x"}, nil, &out, &errOut)
	require.Equal(t, exitError(1), err, "a failed message makes a non-zero exit")
	assert.Contains(t, out.String(), "NotFound")

	cancel()
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	assert.Contains(t, serveLog.String(), "NOT durable")
}
