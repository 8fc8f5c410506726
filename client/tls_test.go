package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/streamgate/streamgate/client"
	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/internal/tlsconf"
	"github.com/streamgate/streamgate/internal/tlstest"
	"github.com/streamgate/streamgate/node"
)

// A client with WithTLS (CA, client certificate, server name) publishes
// to a node that requires client certificates; the message reaches the
// broker.
func TestTLS_ClientPublishesThroughANodeRequiringClientCertificates(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	srv := ca.Issue(t, "node", tlstest.Options{Hosts: []string{"node.streamgate.test"}})
	r, err := tlsconf.NewReloader(srv.CertFile, srv.KeyFile, nil)
	require.NoError(t, err)
	pool, err := tlsconf.LoadPool(ca.File)
	require.NoError(t, err)
	scfg, err := tlsconf.Server(r, pool, tlsconf.ClientAuthRequire)
	require.NoError(t, err)
	cli := ca.Issue(t, "alice", tlstest.Options{})
	opt, err := client.WithTLS(client.TLS{CAFile: ca.File, CertFile: cli.CertFile, KeyFile: cli.KeyFile, ServerName: "node.streamgate.test"})
	require.NoError(t, err)
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Partitions: 1,
		NodeOptions: func(o *node.Options) { o.Credentials = credentials.NewTLS(scfg) },
		DialOptions: []grpc.DialOption{opt}})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := env.Client.Publisher(client.PublishSettings{})
	_, err = p.Publish(ctx, client.Message{Topic: "t", Payload: []byte("over tls")}).Get(ctx)
	require.NoError(t, err)
	require.NoError(t, p.Close())
	recs := testenv.ReadAll(t, env.Consumer(t, "t"), 1, 10*time.Second)
	assert.Equal(t, "over tls", string(recs[0].Value))
}

func TestTLS_WithTLSNamesTheFileThatDoesNotLoad(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	cli := ca.Issue(t, "alice", tlstest.Options{})
	_, err := client.WithTLS(client.TLS{CAFile: "/nonexistent/ca.pem"})
	assert.ErrorContains(t, err, "/nonexistent/ca.pem")
	_, err = client.WithTLS(client.TLS{CAFile: ca.File, CertFile: cli.CertFile})
	assert.ErrorContains(t, err, "both")
	_, err = client.WithTLS(client.TLS{CAFile: ca.File, CertFile: cli.CertFile, KeyFile: ca.File})
	assert.ErrorContains(t, err, cli.CertFile)
	_, err = client.WithTLS(client.TLS{CAFile: cli.KeyFile})
	assert.ErrorContains(t, err, "no PEM certificate")
}
