package node

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamgate/streamgate/internal/auth"
)

// memberDialer is how a node reaches another member's Admin API (the
// describe and seek fan-outs): with the cluster's client credentials, so
// that a cluster serving TLS, even with client certificates required,
// talks to itself the way its clients do.
type memberDialer struct {
	creds credentials.TransportCredentials // nil: plaintext
	token string                           // bearer token sent with each call (Options.ClusterToken); "": none
}

// dial connects to a member's gRPC address. The caller closes the
// connection.
func (d memberDialer) dial(addr string) (*grpc.ClientConn, error) {
	creds := d.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	if d.token != "" {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(auth.Bearer{Token: d.token}))
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
}

// credsOption is the server option of opts.Credentials; none for plaintext.
func credsOption(opts Options) []grpc.ServerOption {
	if opts.Credentials == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(opts.Credentials)}
}
