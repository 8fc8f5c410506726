package main

import (
	"flag"
	"fmt"

	"google.golang.org/grpc"

	"github.com/streamgate/streamgate/client"
)

// clientTLS are the TLS flags of every command that dials a node
// (publish, subscribe, status, subscriptions, bench --addr).
type clientTLS struct {
	on                        bool
	ca, cert, key, serverName string
	token                     string // --token: a bearer token sent with every call (not TLS, but dialled with it)
}

func (t *clientTLS) register(fs *flag.FlagSet) {
	fs.BoolVar(&t.on, "tls", false, "connect over TLS, verifying the node against the system roots (implied by the other --tls-* flags)")
	fs.StringVar(&t.ca, "tls-ca", "", "PEM CA bundle the node's certificate must chain to (default: the system roots)")
	fs.StringVar(&t.cert, "tls-cert", "", "PEM client certificate, for nodes that ask for one (mTLS); with --tls-key")
	fs.StringVar(&t.key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&t.serverName, "tls-server-name", "", "name the node's certificate must carry (default: the host of --addr)")
	fs.StringVar(&t.token, "token", "", "bearer token (static or JWT) for a node that authenticates callers; sent as \"authorization: Bearer\" with every call. Prefer STREAMGATE_TOKEN: a command line is visible to other users")
}

// options are the dial options the flags ask for: none for plaintext
// without a token.
func (t *clientTLS) options() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if t.token != "" {
		opts = append(opts, client.WithToken(t.token))
	}
	if !t.on && t.ca == "" && t.cert == "" && t.key == "" && t.serverName == "" {
		return opts, nil
	}
	if (t.cert == "") != (t.key == "") {
		return nil, fmt.Errorf("--tls-cert and --tls-key: give both or neither")
	}
	opt, err := client.WithTLS(client.TLS{CAFile: t.ca, CertFile: t.cert, KeyFile: t.key, ServerName: t.serverName})
	if err != nil {
		return nil, fmt.Errorf("--tls-*: %w", err)
	}
	return append(opts, opt), nil
}

// dial connects to addr (--addr) as the flags say; its errors are usage
// errors of cmd.
func (t *clientTLS) dial(cmd, addr string) (*client.Client, error) {
	opts, err := t.options()
	if err != nil {
		return nil, badUsage(cmd, err)
	}
	c, err := client.Dial(addr, opts...)
	if err != nil {
		return nil, badUsage(cmd, fmt.Errorf("--addr %q: %w", addr, err))
	}
	return c, nil
}
