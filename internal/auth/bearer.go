package auth

import (
	"context"

	"google.golang.org/grpc/credentials"
)

// Bearer is per-call credentials that send "authorization: Bearer
// <token>". It sends the token over plaintext too when allowed: on
// loopback or behind a TLS-terminating proxy that is the operator's call.
type Bearer struct {
	Token string
	// RequireTLS refuses to send the token on a connection without
	// transport security.
	RequireTLS bool
}

var _ credentials.PerRPCCredentials = Bearer{}

// GetRequestMetadata adds the authorization header.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity says whether gRPC must refuse plaintext.
func (b Bearer) RequireTransportSecurity() bool { return b.RequireTLS }
