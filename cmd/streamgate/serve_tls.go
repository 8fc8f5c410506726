package main

// serve's TLS settings: the gRPC API's certificate (reloaded when its files
// change), client certificates (mTLS), and the credentials nodes dial each
// other's Admin API with.

import (
	"cmp"
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/streamgate/streamgate/internal/tlsconf"
	"github.com/streamgate/streamgate/node"
)

// serveTLS is what serve's --tls-* and --cluster-tls-* flags set.
type serveTLS struct {
	cert, key, clientCA, clientAuth                       string
	clusterCA, clusterCert, clusterKey, clusterServerName string
}

func (t *serveTLS) register(fs *flag.FlagSet) {
	fs.StringVar(&t.cert, "tls-cert", "", "PEM certificate (chain) of the gRPC API; with --tls-key turns TLS on. Read again within seconds when the file changes, no restart (a broken new file keeps the old one and is logged)")
	fs.StringVar(&t.key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&t.clientCA, "tls-client-ca", "", "PEM CA bundle that client certificates must chain to (mTLS); also what nodes verify each other with unless --cluster-tls-ca is given")
	fs.StringVar(&t.clientAuth, "tls-client-auth", "", "with --tls-client-ca: require (default: a client without a valid certificate is turned away) or request (one without a certificate is let in; one sent must be valid)")
	fs.StringVar(&t.clusterCA, "cluster-tls-ca", "", "PEM CA bundle that other nodes' certificates are verified against when this node calls their Admin API (default: --tls-client-ca, else the system roots)")
	fs.StringVar(&t.clusterCert, "cluster-tls-cert", "", "PEM client certificate this node presents to other nodes (default: --tls-cert; it then needs the clientAuth extended key usage when nodes require client certificates)")
	fs.StringVar(&t.clusterKey, "cluster-tls-key", "", "PEM private key of --cluster-tls-cert")
	fs.StringVar(&t.clusterServerName, "cluster-tls-server-name", "", "name other nodes' certificates must carry (default: the host of each node's gossiped gRPC address)")
}

// on tells whether the gRPC API serves TLS.
func (t *serveTLS) on() bool { return t.cert != "" }

// check validates the combination before anything starts; the files are
// read by apply.
func (t *serveTLS) check(src sources) error {
	if (t.cert == "") != (t.key == "") {
		return fmt.Errorf("%s and %s: give both or neither", src.describe("tls-cert"), src.describe("tls-key"))
	}
	if (t.clusterCert == "") != (t.clusterKey == "") {
		return fmt.Errorf("%s and %s: give both or neither", src.describe("cluster-tls-cert"), src.describe("cluster-tls-key"))
	}
	if !t.on() {
		for _, f := range []struct{ name, v string }{
			{"tls-client-ca", t.clientCA}, {"tls-client-auth", t.clientAuth}, {"cluster-tls-ca", t.clusterCA},
			{"cluster-tls-cert", t.clusterCert}, {"cluster-tls-server-name", t.clusterServerName},
		} {
			if f.v != "" {
				// Nodes dial each other the way they serve: TLS to
				// peers from a plaintext node would fail every call.
				return fmt.Errorf("%s needs TLS on (--tls-cert and --tls-key)", src.describe(f.name))
			}
		}
		return nil
	}
	switch t.clientAuth {
	case "", tlsconf.ClientAuthRequest, tlsconf.ClientAuthRequire:
	default:
		return fmt.Errorf("%s %q: want request or require", src.describe("tls-client-auth"), t.clientAuth)
	}
	if t.clientAuth != "" && t.clientCA == "" {
		return fmt.Errorf("%s needs %s, the CA client certificates are verified against", src.describe("tls-client-auth"), src.describe("tls-client-ca"))
	}
	return nil
}

// apply reads the files and sets the node's server and cluster
// credentials, and the watchers that reload the certificates (the node
// runs and stops them). Without TLS it does nothing.
func (t *serveTLS) apply(opts *node.Options, log *slog.Logger) error {
	if !t.on() {
		return nil
	}
	serving, err := tlsconf.NewReloader(t.cert, t.key, log.With("flag", "tls-cert"))
	if err != nil {
		return fmt.Errorf("--tls-cert: %w", err)
	}
	watch := func(r *tlsconf.Reloader) func(context.Context) {
		return func(ctx context.Context) { r.Watch(ctx, tlsconf.DefaultReloadInterval) }
	}
	opts.Watchers = append(opts.Watchers, watch(serving))
	var clientCAs *x509.CertPool
	if t.clientCA != "" {
		if clientCAs, err = tlsconf.LoadPool(t.clientCA); err != nil {
			return fmt.Errorf("--tls-client-ca: %w", err)
		}
	}
	scfg, err := tlsconf.Server(serving, clientCAs, t.clientAuth)
	if err != nil {
		return fmt.Errorf("--tls-client-auth: %w", err)
	}
	opts.Credentials = tlsconf.LogRefused(credentials.NewTLS(scfg), log, 10*time.Second)

	// Peers are verified against the cluster CA, else the client CA (a
	// cluster with mTLS usually has one private CA for all), else the
	// system roots: never against a union, so that a private cluster does
	// not also trust every public CA.
	cluster := tlsconf.Client{RootCAs: clientCAs, Reloader: serving, ServerName: t.clusterServerName}
	if t.clusterCA != "" {
		if cluster.RootCAs, err = tlsconf.LoadPool(t.clusterCA); err != nil {
			return fmt.Errorf("--cluster-tls-ca: %w", err)
		}
	}
	if t.clusterCert != "" {
		if cluster.Reloader, err = tlsconf.NewReloader(t.clusterCert, t.clusterKey, log.With("flag", "cluster-tls-cert")); err != nil {
			return fmt.Errorf("--cluster-tls-cert: %w", err)
		}
		opts.Watchers = append(opts.Watchers, watch(cluster.Reloader))
	}
	ccfg, err := cluster.Config()
	if err != nil {
		return fmt.Errorf("--cluster-tls-*: %w", err)
	}
	opts.ClusterCredentials = credentials.NewTLS(ccfg)
	auth := "none"
	if clientCAs != nil {
		auth = cmp.Or(t.clientAuth, tlsconf.ClientAuthRequire)
	}
	log.Info("gRPC API serves TLS", "cert", t.cert, "subject", serving.Subject(), "client_certificates", auth)
	return nil
}

// warnPlaintext logs one loud line when the gRPC API serves plaintext
// where other hosts can reach it.
func warnPlaintext(log *slog.Logger, listening net.Addr) {
	host, _, err := net.SplitHostPort(listening.String())
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() || host == "localhost" {
		return
	}
	log.Warn("gRPC API serves PLAINTEXT on a non-loopback address: anyone on the network can read and inject traffic; set --tls-cert and --tls-key", "grpc", listening.String())
}
