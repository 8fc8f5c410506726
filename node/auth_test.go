package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/auth"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

const authTestPolicy = `
rules:
  - identities: [alice]
    actions: [publish]
    topics: ["orders*"]
  - groups: [readers]
    actions: [subscribe]
    topics: ["orders*"]
    subscriptions: ["billing-*"]
  - identities: [ops]
    actions: [admin]
    subscriptions: ["*"]
`

func tokenLine(id, tok string, groups ...string) string {
	h := sha256.Sum256([]byte(tok))
	line := id + " " + hex.EncodeToString(h[:])
	for _, g := range groups {
		line += " " + g
	}
	return line + "\n"
}

// authNode starts a node whose auth reads a tokens file (alice, bob of
// readers, ops) and the policy above, re-read every 20 ms. It returns the
// env and the policy file's path.
func authNode(t *testing.T) (*testenv.Env, string, *authLogs) {
	t.Helper()
	dir := t.TempDir()
	cfg := auth.DefaultConfig()
	cfg.ReloadInterval = 20 * time.Millisecond
	cfg.TokensFile = filepath.Join(dir, "tokens")
	cfg.PolicyFile = filepath.Join(dir, "policy.yaml")
	require.NoError(t, os.WriteFile(cfg.TokensFile, []byte(tokenLine("alice", "alice-tok")+tokenLine("bob", "bob-tok", "readers")+tokenLine("ops", "ops-tok")), 0o600))
	require.NoError(t, os.WriteFile(cfg.PolicyFile, []byte(authTestPolicy), 0o600))
	logs := &authLogs{}
	a, err := auth.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), nil)
	require.NoError(t, err)
	env := testenv.Start(t, testenv.Options{
		Topics: []string{"orders", "payments"}, Partitions: 2,
		NodeOptions: func(o *node.Options) { o.Auth = a },
		DialOptions: []grpc.DialOption{client.WithToken("ops-tok")},
	})
	return env, cfg.PolicyFile, logs
}

// authLogs is a log sink the auth watcher and the test share.
type authLogs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *authLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *authLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// connAs dials the node sending token ("": none).
func connAs(t *testing.T, addr, token string) *grpc.ClientConn {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// publishBatch sends one request of messages to topics and returns each
// topic's result, by request id (the topic; a repeated topic keeps its
// last result).
func publishBatch(ctx context.Context, t *testing.T, conn *grpc.ClientConn, topics ...string) (map[string]*pb.PublishResult, error) {
	stream, err := pb.NewPublisherClient(conn).Publish(ctx)
	require.NoError(t, err)
	req := &pb.PublishRequest{}
	for _, tp := range topics {
		req.Messages = append(req.Messages, &pb.OutgoingMessage{RequestId: tp, Topic: tp, Payload: []byte("x")})
	}
	if err := stream.Send(req); err != nil {
		_, err = stream.Recv()
		return nil, err
	}
	require.NoError(t, stream.CloseSend())
	out := map[string]*pb.PublishResult{}
	for n := 0; n < len(topics); {
		resp, err := stream.Recv()
		if err != nil {
			return out, err
		}
		for _, r := range resp.GetResults() {
			out[r.GetRequestId()] = r
			n++
		}
	}
	return out, nil
}

// openAs opens a subscription and returns the first response's error.
func openAs(ctx context.Context, t *testing.T, conn *grpc.ClientConn, sub string, topics ...string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewSubscriberClient(conn).Subscribe(ctx)
	require.NoError(t, err)
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: &pb.Open{Subscription: sub, Topics: topics}}}); err != nil {
		_, err = stream.Recv()
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	require.NotNil(t, resp.GetOpened(), "first response: %v", resp)
	return nil
}

func requireCode(t *testing.T, err error, c codes.Code, msg string) {
	t.Helper()
	require.Equal(t, c, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), msg)
}

func TestAuthNodeAuthentication(t *testing.T) {
	env, _, _ := authNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	_, err := publishBatch(ctx, t, connAs(t, env.Addr, ""), "orders")
	requireCode(t, err, codes.Unauthenticated, "no credentials")
	_, err = publishBatch(ctx, t, connAs(t, env.Addr, "nope"), "orders")
	requireCode(t, err, codes.Unauthenticated, "not in the tokens file")
	err = openAs(ctx, t, connAs(t, env.Addr, ""), "billing-1", "orders")
	requireCode(t, err, codes.Unauthenticated, "no credentials")
	_, err = pb.NewAdminClient(connAs(t, env.Addr, "")).ListMembers(ctx, &pb.ListMembersRequest{})
	requireCode(t, err, codes.Unauthenticated, "no credentials")

	// Health stays open.
	resp, err := healthpb.NewHealthClient(connAs(t, env.Addr, "")).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	// The Go client's WithToken works end to end (ops may do everything
	// admin; the env's client sends ops-tok).
	_, _, err = env.Client.Members(ctx)
	require.NoError(t, err)
}

func TestAuthNodePolicyPublishSubscribeAdmin(t *testing.T) {
	env, _, _ := authNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, bob, ops := connAs(t, env.Addr, "alice-tok"), connAs(t, env.Addr, "bob-tok"), connAs(t, env.Addr, "ops-tok")

	// A denied message fails alone; the rest of the batch is published.
	res, err := publishBatch(ctx, t, alice, "orders", "payments", "orders")
	require.NoError(t, err)
	require.Nil(t, res["orders"].GetError())
	require.NotEmpty(t, res["orders"].GetMessageId())
	require.Equal(t, int32(codes.PermissionDenied), res["payments"].GetError().GetCode())
	require.Equal(t, `identity "alice" may not publish to topic "payments": no rule of the policy file allows it`, res["payments"].GetError().GetMessage())
	res, err = publishBatch(ctx, t, bob, "orders")
	require.NoError(t, err)
	require.Equal(t, int32(codes.PermissionDenied), res["orders"].GetError().GetCode())

	// Subscribe: the subscription and every topic.
	require.NoError(t, openAs(ctx, t, bob, "billing-1", "orders"))
	requireCode(t, openAs(ctx, t, bob, "shipping", "orders"), codes.PermissionDenied, `identity "bob" may not subscribe to subscription "shipping"`)
	requireCode(t, openAs(ctx, t, bob, "billing-2", "orders", "payments"), codes.PermissionDenied, `may not subscribe to topic "payments"`)
	requireCode(t, openAs(ctx, t, alice, "billing-3", "orders"), codes.PermissionDenied, `identity "alice"`)

	// Admin: cluster-wide calls need admin on "*"; a subscriber may
	// describe its own subscription but not change it.
	_, err = pb.NewAdminClient(alice).ListMembers(ctx, &pb.ListMembersRequest{})
	requireCode(t, err, codes.PermissionDenied, `identity "alice" may not administer the cluster`)
	_, err = pb.NewAdminClient(ops).ListMembers(ctx, &pb.ListMembersRequest{})
	require.NoError(t, err)
	_, err = pb.NewAdminClient(bob).DescribeSubscription(ctx, &pb.DescribeSubscriptionRequest{Subscription: "billing-1"})
	require.NoError(t, err)
	_, err = pb.NewAdminClient(bob).DescribeSubscription(ctx, &pb.DescribeSubscriptionRequest{Subscription: "shipping"})
	requireCode(t, err, codes.PermissionDenied, `may not administer subscription "shipping"`)
	_, err = pb.NewAdminClient(bob).DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Name: "billing-1"})
	requireCode(t, err, codes.PermissionDenied, `identity "bob" may not administer subscription "billing-1"`)
	_, err = pb.NewAdminClient(ops).GetSubscription(ctx, &pb.GetSubscriptionRequest{Name: "billing-1"})
	require.NoError(t, err)
}

func TestAuthNodePolicyReload(t *testing.T) {
	env, policy, logs := authNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := connAs(t, env.Addr, "alice-tok")
	denied := func() bool {
		res, err := publishBatch(ctx, t, alice, "payments")
		require.NoError(t, err)
		return res["payments"].GetError().GetCode() == int32(codes.PermissionDenied)
	}
	require.True(t, denied())
	require.NoError(t, os.WriteFile(policy, []byte(authTestPolicy+"  - identities: [alice]\n    actions: [publish]\n    topics: [payments]\n"), 0o600))
	require.Eventually(t, func() bool { return !denied() }, 10*time.Second, 20*time.Millisecond)
	// A broken file keeps the policy before it.
	require.NoError(t, os.WriteFile(policy, []byte("rules: [ {"), 0o600))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "keeping the previous policy file") }, 10*time.Second, 20*time.Millisecond)
	require.False(t, denied())
}
