package node

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// memberDialer is how a node reaches another member's Admin API (the
// describe and seek fan-outs): with the cluster's client credentials, so
// that a cluster serving TLS, even with client certificates required,
// talks to itself the way its clients do.
type memberDialer struct {
	creds credentials.TransportCredentials // nil: plaintext
}

// dial connects to a member's gRPC address. The caller closes the
// connection.
func (d memberDialer) dial(addr string) (*grpc.ClientConn, error) {
	creds := d.creds
	if creds == nil {
		creds = insecure.NewCredentials()
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
