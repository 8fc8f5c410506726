package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runCLI runs the command in-process and returns its stdout, stderr and
// error.
func runCLI(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(ctx, args, strings.NewReader(""), &out, &syncWriter{w: &errOut})
	return out.String(), errOut.String(), err
}

func TestCLI_HelpListsTheSubcommands(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}, {"help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, err := runCLI(context.Background(), args...)
			require.NoError(t, err)
			assert.Empty(t, errOut)
			for _, sub := range []string{"serve", "devbroker", "publish", "subscribe", "status"} {
				assert.Contains(t, out, "\n  "+sub+" ", "the list names %s", sub)
			}
			assert.Contains(t, out, "'streamgate <subcommand> -h'", "it says how to get a subcommand's flags")
			assert.NotContains(t, out, "--max-unacked", "not serve's flags")
		})
	}
}

func TestCLI_SubcommandHelpListsItsFlags(t *testing.T) {
	out, serveHelp, err := runCLI(context.Background(), "serve", "-h")
	require.ErrorIs(t, err, flag.ErrHelp, "main exits 0 on it")
	assert.Empty(t, out)
	assert.True(t, strings.HasPrefix(serveHelp, "usage: streamgate serve [flags]\n"), serveHelp)
	assert.Contains(t, serveHelp, "--max-unacked int")
	assert.Contains(t, serveHelp, "[STREAMGATE_MAX_UNACKED]")
	assert.Contains(t, serveHelp, "--ack-timeout duration")
	assert.Contains(t, serveHelp, "(default 1m0s)")
	assert.Contains(t, serveHelp, "--debug-addr string")

	_, viaHelp, err := runCLI(context.Background(), "help", "serve")
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.Equal(t, serveHelp, viaHelp, "'help serve' is 'serve -h'")

	_, devHelp, err := runCLI(context.Background(), "devbroker", "--help")
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.Contains(t, devHelp, "--auto-create-topics")
	assert.Contains(t, devHelp, "[STREAMGATE_PARTITIONS]")
}

func TestCLI_UnknownSubcommandIsAUsageError(t *testing.T) {
	out, errOut, err := runCLI(context.Background(), "bogus")
	require.Equal(t, exitError(2), err)
	assert.Empty(t, out)
	assert.Equal(t, "streamgate: unknown subcommand \"bogus\"\n"+
		"usage: streamgate <subcommand> [flags]; 'streamgate help' lists the subcommands\n", errOut)
}

// TestCLI_WrongFlagPrintsItsErrorOnceAndAUsageLine covers every subcommand:
// they all parse with parseFlags.
func TestCLI_WrongFlagPrintsItsErrorOnceAndAUsageLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		cmd  string
	}{
		{[]string{"--bogus"}, "serve"}, // serve is the default subcommand
		{[]string{"serve", "--bogus"}, "serve"},
		{[]string{"devbroker", "--bogus"}, "devbroker"},
		{[]string{"publish", "--bogus"}, "publish"},
		{[]string{"subscribe", "--bogus"}, "subscribe"},
		{[]string{"status", "--bogus"}, "status"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // nothing may start; if something did, it stops at once
			out, errOut, err := runCLI(ctx, tc.args...)
			require.Equal(t, exitError(2), err)
			assert.Empty(t, out)
			assert.Equal(t, "streamgate "+tc.cmd+": flag provided but not defined: -bogus\n"+
				"usage: streamgate "+tc.cmd+" [flags]; 'streamgate "+tc.cmd+" -h' lists them\n", errOut)
		})
	}

	_, errOut, err := runCLI(context.Background(), "serve", "stray")
	require.Equal(t, exitError(2), err)
	assert.Equal(t, "streamgate serve: unexpected argument \"stray\"\n"+
		"usage: streamgate serve [flags]; 'streamgate serve -h' lists them\n", errOut)
}

func TestCLI_BadFlagValueSaysWhatFormItWants(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--ack-timeout", "banana"}, `streamgate serve: --ack-timeout "banana": want a duration such as 60s`},
		{[]string{"serve", "--max-unacked", "many"}, `streamgate serve: --max-unacked "many": want an integer such as 1000`},
		{[]string{"serve", "--max-buffered-bytes", "1.5"}, `streamgate serve: --max-buffered-bytes "1.5": want an integer such as 1000`},
		{[]string{"devbroker", "--auto-create-topics=maybe"}, `streamgate devbroker: --auto-create-topics "maybe": want true or false`},
		{[]string{"subscribe", "--from-beginning=maybe"}, `streamgate subscribe: --from-beginning "maybe": want true or false`},
		{[]string{"publish", "--batch", "lots"}, `streamgate publish: --batch "lots": want an integer such as 1000`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, errOut, err := runCLI(ctx, tc.args...)
			require.Equal(t, exitError(2), err)
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			require.Len(t, lines, 2, errOut)
			assert.Equal(t, tc.want, lines[0])
			assert.True(t, strings.HasPrefix(lines[1], "usage: streamgate "), lines[1])
		})
	}
}

func TestParseFlags_BadEnvironmentValueNamesTheVariableAndTheForm(t *testing.T) {
	for _, tc := range []struct {
		env, value, want string
		define           func(fs *flag.FlagSet)
	}{
		{"STREAMGATE_ACK_TIMEOUT", "banana", `serve: STREAMGATE_ACK_TIMEOUT="banana": want a duration such as 60s`,
			func(fs *flag.FlagSet) { fs.Duration("ack-timeout", time.Minute, "") }},
		{"STREAMGATE_PUBLISH_WINDOW", "many", `serve: STREAMGATE_PUBLISH_WINDOW="many": want an integer such as 1000`,
			func(fs *flag.FlagSet) { fs.Int("publish-window", 1000, "") }},
		{"STREAMGATE_MAX_BUFFERED_BYTES", "64MiB", `serve: STREAMGATE_MAX_BUFFERED_BYTES="64MiB": want an integer such as 1000`,
			func(fs *flag.FlagSet) { fs.Int64("max-buffered-bytes", 1, "") }},
		{"STREAMGATE_AUTO_CREATE_TOPICS", "yes please", `serve: STREAMGATE_AUTO_CREATE_TOPICS="yes please": want true or false`,
			func(fs *flag.FlagSet) { fs.Bool("auto-create-topics", false, "") }},
	} {
		t.Run(tc.env, func(t *testing.T) {
			fs := newFlagSet("serve", io.Discard)
			tc.define(fs)
			lookup := func(k string) (string, bool) { return tc.value, k == tc.env }
			err := parseFlags(fs, nil, lookup)
			var ue *usageError
			require.ErrorAs(t, err, &ue)
			assert.EqualError(t, err, tc.want)
		})
	}
}

func TestCLI_BadEnvironmentValueIsReportedOnce(t *testing.T) {
	t.Setenv("STREAMGATE_ACK_TIMEOUT", "banana")
	_, errOut, err := runCLI(context.Background(), "serve")
	require.Equal(t, exitError(2), err)
	assert.Equal(t, "streamgate serve: STREAMGATE_ACK_TIMEOUT=\"banana\": want a duration such as 60s\n"+
		"usage: streamgate serve [flags]; 'streamgate serve -h' lists them\n", errOut)
}

// holdAddr listens on a loopback port for the test's duration: a serve
// that got as far as listening there, or starting its embedded broker
// there, would fail with a listen error instead of the expected one.
func holdAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// TestCLI_ServeValidatesEverySettingBeforeStartingAnything runs serve with
// its gRPC, HTTP and embedded broker addresses taken: every bad setting
// must be reported, naming its flag, before serve gets to any of them.
func TestCLI_ServeValidatesEverySettingBeforeStartingAnything(t *testing.T) {
	base := []string{"serve", "--grpc-addr", holdAddr(t), "--http-addr", holdAddr(t), "--embedded-addr", holdAddr(t), "--gossip-addr", ""}
	gossip := []string{"--gossip-addr", "127.0.0.1:0"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"node", []string{"--max-unacked", "0"}, "--max-unacked: must be at least 1, got 0"},
		{"node relation", []string{"--max-buffered-bytes", "5"}, "--max-buffered-bytes: must be at least --max-message-bytes (1048576), got 5"},
		{"node duration", []string{"--ack-timeout", "0s"}, "--ack-timeout: must be positive, got 0s"},
		{"limit headers", []string{"--max-headers", "-1"}, "--max-headers: must not be negative (0: no limit), got -1"},
		{"limit key", []string{"--max-key-bytes", "-1"}, "--max-key-bytes: must not be negative (0: no limit), got -1"},
		{"limit ack ids", []string{"--max-ack-ids", "-1"}, "--max-ack-ids: must not be negative (0: no limit), got -1"},
		{"keepalive", []string{"--keepalive-min-time", "0s"}, "--keepalive-min-time: must be positive, got 0s"},
		{"connection age", []string{"--max-connection-age", "-1s"}, "--max-connection-age: must not be negative (0: no limit), got -1s"},
		{"connection age grace", []string{"--max-connection-age-grace", "-1s"}, "--max-connection-age-grace: must not be negative, got -1s"},
		{"streams per connection", []string{"--max-streams-per-connection", "-1"}, "--max-streams-per-connection: must be between 0 (no limit) and 4294967295, got -1"},
		{"streams per identity", []string{"--max-streams-per-identity", "-1"}, "--max-streams-per-identity: must not be negative (0: no limit), got -1"},
		{"opens per second", []string{"--max-opens-per-second", "-0.5"}, "--max-opens-per-second: must be a number not below 0 (0: no limit), got -0.5"},
		{"node name", []string{"--node-name", ""}, "--node-name: must not be empty"},
		{"kafka", []string{"--commit-every", "0"}, "--commit-every: must be at least 1, got 0"},
		{"kafka per shard", []string{"--max-buffered-per-shard", "1"}, "--max-buffered-per-shard: must be at least 2, got 1"},
		{"kafka timeout", []string{"--publish-timeout", "-1s"}, "--publish-timeout: must be positive, got -1s"},
		{"fetch bytes", []string{"--fetch-max-shard-bytes", "10"}, "--fetch-max-shard-bytes: must be between 1024 and 1073741824, got 10"},
		{"producer linger", []string{"--producer-linger", "2m"}, "--producer-linger: must be between 0 and 1m, got 2m0s"},
		{"subscriptions topic", []string{"--subscriptions-topic", ""}, "--subscriptions-topic: must not be empty"},
		{"embedded broker", []string{"--embedded-partitions", "0"}, "--embedded-partitions: must be at least 1, got 0"},
		{"cluster", append(gossip, "--gossip-probe-timeout", "1s"),
			"--gossip-probe-timeout: must be positive and shorter than --gossip-probe-interval (default 150ms)"},
		{"cluster mult", append(gossip, "--gossip-suspicion-mult", "0"), "--gossip-suspicion-mult: must be at least 1 (default 3)"},
		{"gossip key length", append(gossip, "--gossip-key", "AAAA"), "--gossip-key: must be 16, 24 or 32 bytes, not 3"},
		{"gossip key base64", append(gossip, "--gossip-key", "!!"), "--gossip-key: want base64 (of 16, 24 or 32 bytes)"},
		{"join", append(gossip, "--join", "seed one"), `--join: "seed one" is not a host[:port]`},
		{"gossip bind host", []string{"--gossip-addr", "example.com:7946"}, `--gossip-addr: "example.com" is not an IP address`},
		{"gossip addr form", []string{"--gossip-addr", "7946"}, `--gossip-addr "7946": want host:port such as :7946`},
		{"advertise port", append(gossip, "--advertise-addr", "10.0.0.5:x"), `--advertise-addr "10.0.0.5:x": want host or host:port`},
		{"advertise grpc", append(gossip, "--advertise-grpc-addr", "10.0.0.5"), `--advertise-grpc-addr "10.0.0.5": want host:port`},
		{"grpc addr", []string{"--grpc-addr", "50051"}, `--grpc-addr "50051": want host:port such as :50051`},
		{"http addr", []string{"--http-addr", "localhost:99999"}, `--http-addr "localhost:99999": want host:port such as :8080`},
		{"debug addr", []string{"--debug-addr", "6060"}, `--debug-addr "6060": want host:port such as localhost:6060`},
		{"embedded addr", []string{"--embedded-addr", "9092"}, `--embedded-addr "9092": want host:port such as 127.0.0.1:9092`},
		{"drain timeout", []string{"--drain-timeout", "-1s"}, "--drain-timeout: must not be negative, got -1s"},
		{"log level", []string{"--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{"log format", []string{"--log-format", "xml"}, `--log-format "xml": want text or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // should all checks pass, serve stops at once
			_, errOut, err := runCLI(ctx, append(append([]string{}, base...), tc.args...)...)
			require.Equal(t, exitError(2), err, errOut)
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			require.Len(t, lines, 2, "the error and the usage line, no log of anything started:\n%s", errOut)
			assert.True(t, strings.HasPrefix(lines[0], "streamgate serve: "+tc.want), "got %q", lines[0])
			assert.Equal(t, "usage: streamgate serve [flags]; 'streamgate serve -h' lists them", lines[1])
		})
	}

	t.Run("valid settings do reach the taken addresses", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _, err := runCLI(ctx, base...)
		require.Error(t, err)
		assert.NotEqual(t, exitError(2), err)
		assert.ErrorContains(t, err, "--embedded-addr")
	})

	t.Run("a setting from the environment is named with its variable", func(t *testing.T) {
		t.Setenv("STREAMGATE_MAX_UNACKED", "0")
		_, errOut, err := runCLI(context.Background(), base...)
		require.Equal(t, exitError(2), err)
		assert.True(t, strings.HasPrefix(errOut, "streamgate serve: --max-unacked (STREAMGATE_MAX_UNACKED): must be at least 1, got 0\n"), errOut)
	})
}

func TestCLI_DevbrokerValidatesNamingItsFlags(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, errOut, err := runCLI(ctx, "devbroker", "--addr", holdAddr(t), "--partitions", "0")
	require.Equal(t, exitError(2), err)
	assert.True(t, strings.HasPrefix(errOut, "streamgate devbroker: --partitions: must be at least 1, got 0\n"), errOut)
}

func TestNewLogger_WritesDurationsAsText(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger("json", "info", &buf)
	require.NoError(t, err)
	log.Info("m", "timeout", 1500*time.Millisecond, slog.Group("g", slog.Duration("wait", 2*time.Minute)), "n", 7)
	var line struct {
		Timeout any
		G       struct{ Wait any }
		N       any
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line), buf.String())
	assert.Equal(t, "1.5s", line.Timeout)
	assert.Equal(t, "2m0s", line.G.Wait, "in groups too")
	assert.Equal(t, float64(7), line.N, "other kinds unchanged")

	buf.Reset()
	log, err = newLogger("text", "info", &buf)
	require.NoError(t, err)
	log.Info("m", "timeout", 1500*time.Millisecond)
	assert.Contains(t, buf.String(), "timeout=1.5s")
}

// get fetches a URL and returns its status and body.
func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestCLI_ServeDebugAddrServesPprofOnItsOwnListener starts serve with the
// embedded broker and --debug-addr, reads /debug/pprof/ from it, checks the
// metrics port does not serve it, and that it stops with serve. The JSON
// log's durations are strings.
func TestCLI_ServeDebugAddrServesPprofOnItsOwnListener(t *testing.T) {
	grpcAddr, httpAddr, debugAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var serveLog bytes.Buffer
	logw := &syncWriter{w: &serveLog}
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--debug-addr", debugAddr,
			"--embedded-addr", freeAddr(t), "--gossip-addr", "", "--drain-timeout", "2s", "--log-format", "json"},
			nil, io.Discard, logw)
	}()
	var body string
	require.Eventually(t, func() bool {
		code, b, err := get("http://" + debugAddr + "/debug/pprof/")
		body = b
		return err == nil && code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)
	assert.Contains(t, body, "goroutine")
	code, b, err := get("http://" + debugAddr + "/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, b, "goroutine profile")

	waitReady(t, httpAddr)
	code, _, err = get("http://" + httpAddr + "/debug/pprof/")
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, code, "never on the metrics port")

	cancel()
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	_, _, err = get("http://" + debugAddr + "/debug/pprof/")
	assert.Error(t, err, "the debug server stops with serve")

	logw.mu.Lock()
	text := serveLog.String()
	logw.mu.Unlock()
	assert.Contains(t, text, "--debug-addr serves profiling")
	var sawDrain bool
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), l)
		if rec["msg"] == "draining" {
			sawDrain = true
			assert.Equal(t, "2s", rec["timeout"], "JSON logs write durations as text")
		}
	}
	assert.True(t, sawDrain, text)
}

// FuzzServeSettings parses and checks serve's settings from arbitrary
// command lines and one arbitrary environment value: no panic, and every
// mistake is a usage error.
func FuzzServeSettings(f *testing.F) {
	f.Add("--max-unacked 0", "STREAMGATE_ACK_TIMEOUT", "banana")
	f.Add("--gossip-addr 127.0.0.1:0 --join a,,b --gossip-key AAAA", "STREAMGATE_JOIN", "x y")
	f.Add("--grpc-addr [::1]:50051 --advertise-addr [::1]:x", "STREAMGATE_GOSSIP_ADDR", "::")
	f.Add("--brokers a:9092 --max-buffered-bytes 5", "STREAMGATE_MAX_MESSAGE_BYTES", "-1")
	f.Add("-h", "", "")
	f.Fuzz(func(t *testing.T, args, env, value string) {
		c := defaultServeConfig()
		fs := newFlagSet("serve", io.Discard)
		c.register(fs)
		lookup := func(k string) (string, bool) { return value, k == env }
		src, err := parseSettings(fs, strings.Fields(args), lookup)
		if err == nil {
			err = c.check(src)
			if err == nil {
				return
			}
			err = badUsage("serve", err)
		}
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		var ue *usageError
		require.ErrorAs(t, err, &ue)
		require.NotEmpty(t, ue.Error())
	})
}
