package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// whoService answers a call with the caller's identity, so a test sees
// what the interceptor put in the context.
var whoService = grpc.ServiceDesc{
	ServiceName: "test.Who",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Name", Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, _ any) (any, error) {
			id, _ := FromContext(ctx)
			return wrapperspb.String(id.Method + ":" + id.Name), nil
		}
		return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Who/Name"}, h)
	}}},
}

type certs struct {
	ca         *x509.Certificate
	caKey      *ecdsa.PrivateKey
	server     tls.Certificate
	client     tls.Certificate
	clientNoCN tls.Certificate
}

func newCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (tls.Certificate, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, c, key
}

func makeCerts(t *testing.T) certs {
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	_, ca, caKey := newCert(t, caTmpl, nil, nil)
	leaf := func(serial int64, cn string, dns []string, ous []string, usage x509.ExtKeyUsage) tls.Certificate {
		c, _, _ := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ous}, DNSNames: dns,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, ca, caKey)
		return c
	}
	return certs{ca: ca, caKey: caKey,
		server:     leaf(2, "server", []string{"localhost"}, nil, x509.ExtKeyUsageServerAuth),
		client:     leaf(3, "orders-svc", nil, []string{"writers"}, x509.ExtKeyUsageClientAuth),
		clientNoCN: leaf(4, "", []string{"worker.example"}, nil, x509.ExtKeyUsageClientAuth),
	}
}

// serveTLS serves whoService and health over TLS that requests (but does
// not require) a client certificate, with a's interceptors.
func serveTLS(t *testing.T, a *Auth, c certs) string {
	pool := x509.NewCertPool()
	pool.AddCert(c.ca)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{c.server}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12})
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(a.UnaryServerInterceptor()), grpc.StreamInterceptor(a.StreamServerInterceptor()))
	srv.RegisterService(&whoService, nil)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

func dialTLS(t *testing.T, addr string, c certs, cert *tls.Certificate) *grpc.ClientConn {
	pool := x509.NewCertPool()
	pool.AddCert(c.ca)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func who(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	out := new(wrapperspb.StringValue)
	err := conn.Invoke(ctx, "/test.Who/Name", wrapperspb.String(""), out)
	return out.GetValue(), err
}

func TestAuthMTLSIdentityAndHealthOpen(t *testing.T) {
	c := makeCerts(t)
	cfg := DefaultConfig()
	cfg.MTLS = true
	cfg.TokensFile = writeFile(t, t.TempDir(), "tokens", "alice "+hashHex("tok")+"\n")
	a, err := New(cfg, nil, nil)
	require.NoError(t, err)
	addr := serveTLS(t, a, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got, err := who(ctx, dialTLS(t, addr, c, &c.client))
	require.NoError(t, err)
	require.Equal(t, "mtls:orders-svc", got)
	got, err = who(ctx, dialTLS(t, addr, c, &c.clientNoCN))
	require.NoError(t, err)
	require.Equal(t, "mtls:worker.example", got, "no CN: the first DNS SAN")

	anon := dialTLS(t, addr, c, nil)
	_, err = who(ctx, anon)
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "no credentials")
	// A token over TLS without a client certificate.
	got, err = who(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer tok"), anon)
	require.NoError(t, err)
	require.Equal(t, "token:alice", got)
	// Health needs nothing.
	resp, err := healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
}
