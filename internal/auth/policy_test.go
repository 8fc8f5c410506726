package auth

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

const testPolicy = `
rules:
  - identities: [alice]
    actions: [publish]
    topics: ["orders.*"]
  - groups: [readers]
    actions: [subscribe]
    topics: ["orders.*", audit]
    subscriptions: ["billing-*"]
  - identities: [ops-*]
    actions: [admin]
    subscriptions: ["*"]
  - identities: [carol]
    actions: [admin]
    subscriptions: [carol-*]
`

func TestPolicyAllows(t *testing.T) {
	p, err := parsePolicy([]byte(testPolicy))
	require.NoError(t, err)
	alice := Identity{Name: "alice"}
	reader := Identity{Name: "bob", Groups: []string{"x", "readers"}}
	ops := Identity{Name: "ops-jane"}
	carol := Identity{Name: "carol"}
	for _, tc := range []struct {
		id     Identity
		action Action
		res    Resource
		want   bool
	}{
		{alice, Publish, Resource{Topic, "orders.eu"}, true},
		{alice, Publish, Resource{Topic, "orders."}, true},
		{alice, Publish, Resource{Topic, "payments"}, false},
		{alice, Subscribe, Resource{Topic, "orders.eu"}, false},
		{reader, Subscribe, Resource{Topic, "audit"}, true},
		{reader, Subscribe, Resource{Topic, "audit2"}, false},
		{reader, Subscribe, Resource{Subscription, "billing-eu"}, true},
		{reader, Subscribe, Resource{Subscription, "shipping"}, false},
		{reader, Publish, Resource{Topic, "orders.eu"}, false},
		{ops, Admin, Resource{Subscription, "anything"}, true},
		{ops, Admin, Resource{Cluster, ""}, true},
		{carol, Admin, Resource{Subscription, "carol-1"}, true},
		{carol, Admin, Resource{Subscription, "bob-1"}, false},
		{carol, Admin, Resource{Cluster, ""}, false},
		{Identity{Name: "ops"}, Admin, Resource{Subscription, "x"}, false},
	} {
		require.Equal(t, tc.want, p.Allows(tc.id, tc.action, tc.res), "%s %s %s", tc.id.Name, tc.action, tc.res)
	}
}

func TestPolicyGlob(t *testing.T) {
	for _, tc := range []struct {
		p, n string
		want bool
	}{
		{"*", "", true}, {"a", "a", true}, {"a", "ab", false}, {"a*", "abc", true}, {"*c", "abc", true},
		{"a*c", "abc", true}, {"a*c", "ac", true}, {"a*c", "acb", false}, {"a*b*c", "aXbYc", true},
		{"a*b*c", "aXcYb", false}, {"ab*ba", "aba", false}, {"*.*", "x.y", true},
	} {
		require.Equal(t, tc.want, glob(tc.p, tc.n), "%q ~ %q", tc.p, tc.n)
	}
}

func TestPolicyParseErrors(t *testing.T) {
	for want, doc := range map[string]string{
		"no rules":                "rules: []",
		"unknown action":          `{"rules":[{"identities":["a"],"actions":["write"],"topics":["*"]}]}`,
		"field topic not found":   "rules:\n  - identities: [a]\n    actions: [publish]\n    topic: [x]\n",
		"names no identities":     "rules:\n  - actions: [publish]\n    topics: [x]\n",
		"grants publish but":      "rules:\n  - identities: [a]\n    actions: [publish]\n",
		"grants subscribe but":    "rules:\n  - identities: [a]\n    actions: [subscribe]\n    topics: [x]\n",
		"an empty pattern":        "rules:\n  - identities: ['']\n    actions: [publish]\n    topics: [x]\n",
		"grants admin but names ": "rules:\n  - groups: [g]\n    actions: [admin]\n",
	} {
		_, err := parsePolicy([]byte(doc))
		require.ErrorContains(t, err, want, doc)
	}
	// JSON is accepted as it is.
	_, err := parsePolicy([]byte(`{"rules":[{"identities":["a"],"actions":["publish"],"topics":["*"]}]}`))
	require.NoError(t, err)
}

// syncBuffer is a log sink the watcher and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPolicyDeniedCountedAndLoggedOnce(t *testing.T) {
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	dir := t.TempDir()
	cfg.TokensFile = writeFile(t, dir, "tokens", "alice "+hashHex("t")+"\n")
	cfg.PolicyFile = writeFile(t, dir, "policy.yaml", testPolicy)
	a, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), reg)
	require.NoError(t, err)
	ctx := NewContext(context.Background(), Identity{Name: "alice"})
	for range 5 {
		err := a.Authorize(ctx, Publish, Resource{Topic, "payments"})
		var denied *DeniedError
		require.ErrorAs(t, err, &denied)
		require.Equal(t, `identity "alice" may not publish to topic "payments": no rule of the policy file allows it`, err.Error())
	}
	require.NoError(t, a.Authorize(ctx, Publish, Resource{Topic, "orders.1"}))
	require.Error(t, a.Authorize(ctx, Admin, Resource{Cluster, ""}))
	require.Equal(t, 5.0, counter(t, a.denied.WithLabelValues("publish")))
	require.Equal(t, 1.0, counter(t, a.denied.WithLabelValues("admin")))
	require.Equal(t, 1, strings.Count(logs.String(), `resource="topic \"payments\""`), logs.String())
	require.Equal(t, 1, strings.Count(logs.String(), `resource="the cluster"`), logs.String())

	// AuthorizeAny: carol may describe her own subscription by admin; a
	// reader by subscribe.
	reader := NewContext(context.Background(), Identity{Name: "bob", Groups: []string{"readers"}})
	require.NoError(t, a.AuthorizeAny(reader, Resource{Subscription, "billing-1"}, Admin, Subscribe))
	require.Error(t, a.AuthorizeAny(reader, Resource{Subscription, "other"}, Admin, Subscribe))
}

func TestPolicyNoFileAllowsAllAndWarns(t *testing.T) {
	var logs syncBuffer
	cfg := DefaultConfig()
	cfg.TokensFile = writeFile(t, t.TempDir(), "tokens", "alice "+hashHex("t")+"\n")
	a, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, err)
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "no --auth-policy-file")
	require.NoError(t, a.Authorize(NewContext(context.Background(), Identity{Name: "alice"}), Admin, Resource{Cluster, ""}))
}

func TestPolicyReload(t *testing.T) {
	var logs syncBuffer
	cfg := DefaultConfig()
	cfg.ReloadInterval = 20 * time.Millisecond
	dir := t.TempDir()
	cfg.TokensFile = writeFile(t, dir, "tokens", "alice "+hashHex("t1")+"\n")
	cfg.PolicyFile = writeFile(t, dir, "policy.yaml", testPolicy)
	a, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	alice := NewContext(context.Background(), Identity{Name: "alice"})
	require.Error(t, a.Authorize(alice, Publish, Resource{Topic, "payments"}))
	require.NoError(t, os.WriteFile(cfg.PolicyFile, []byte("rules:\n  - identities: [alice]\n    actions: [publish]\n    topics: [payments]\n"), 0o600))
	require.Eventually(t, func() bool { return a.Authorize(alice, Publish, Resource{Topic, "payments"}) == nil }, 10*time.Second, 10*time.Millisecond)
	require.Error(t, a.Authorize(alice, Publish, Resource{Topic, "orders.1"}), "the new policy replaced the old")

	// A broken policy keeps the one before and says why, once.
	require.NoError(t, os.WriteFile(cfg.PolicyFile, []byte("rules:\n  - identities: [alice]\n    actions: [publsh]\n    topics: [x]\n"), 0o600))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "keeping the previous policy file") }, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, logs.String(), `unknown action \"publsh\"`)
	require.NoError(t, a.Authorize(alice, Publish, Resource{Topic, "payments"}))

	// Tokens too: the new token works, the old one is gone; a broken
	// file keeps them.
	require.NoError(t, os.WriteFile(cfg.TokensFile, []byte("alice "+hashHex("t2")+"\n"), 0o600))
	require.Eventually(t, func() bool { _, err := a.Authenticate(bearer("t2")); return err == nil }, 10*time.Second, 10*time.Millisecond)
	_, err = a.Authenticate(bearer("t1"))
	require.Error(t, err)
	require.NoError(t, os.WriteFile(cfg.TokensFile, []byte("alice t3\n"), 0o600))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "keeping the previous tokens file") }, 10*time.Second, 10*time.Millisecond)
	_, err = a.Authenticate(bearer("t2"))
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(logs.String(), "keeping the previous policy file"), "a broken file is reported once")
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
