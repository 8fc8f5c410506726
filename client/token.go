package client

import (
	"google.golang.org/grpc"

	"github.com/streamgate/streamgate/internal/auth"
)

// WithToken is the dial option that sends token as "authorization: Bearer
// <token>" with every call, for a server that authenticates by static
// tokens or JWTs. It is sent over plaintext connections too (a loopback
// server, a TLS-terminating proxy); use it with WithTLS elsewhere.
func WithToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(auth.Bearer{Token: token})
}
