package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc"
)

// healthPrefix is the health service's method prefix: load balancers and
// orchestrators probe it without credentials.
const healthPrefix = "/grpc.health.v1.Health/"

// UnaryServerInterceptor authenticates every unary call but health
// checks and puts the identity in the handler's context.
func (a *Auth) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, healthPrefix) {
			return handler(ctx, req)
		}
		id, err := a.Authenticate(ctx)
		if err != nil {
			return nil, err
		}
		return handler(NewContext(ctx, id), req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams (health's
// Watch stays open; reflection needs credentials like the API).
func (a *Auth) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if strings.HasPrefix(info.FullMethod, healthPrefix) {
			return handler(srv, ss)
		}
		id, err := a.Authenticate(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &identityStream{ServerStream: ss, ctx: NewContext(ss.Context(), id)})
	}
}

// identityStream is a stream whose context carries the caller's identity.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }
