package node

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/broker"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// codedError is an error of the node's own making (a bad request), carrying
// its gRPC code; backend errors are mapped from broker's sentinels instead.
type codedError struct {
	code codes.Code
	msg  string
}

func (e *codedError) Error() string { return e.msg }

// invalidf builds an INVALID_ARGUMENT error; user text goes in args only.
func invalidf(format string, args ...any) error {
	return &codedError{code: codes.InvalidArgument, msg: fmt.Sprintf(format, args...)}
}

// notFoundf builds a NOT_FOUND error.
func notFoundf(format string, args ...any) error {
	return &codedError{code: codes.NotFound, msg: fmt.Sprintf(format, args...)}
}

// preconditionf builds a FAILED_PRECONDITION error.
func preconditionf(format string, args ...any) error {
	return &codedError{code: codes.FailedPrecondition, msg: fmt.Sprintf(format, args...)}
}

// code is the one place where errors become gRPC codes.
func code(err error) codes.Code {
	var ce *codedError
	switch {
	case err == nil:
		return codes.OK
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, broker.ErrTopicNotFound), errors.Is(err, broker.ErrSubscriptionNotFound):
		return codes.NotFound
	case errors.Is(err, broker.ErrSubscriptionExists):
		return codes.AlreadyExists
	case errors.Is(err, broker.ErrVersionMismatch):
		return codes.Aborted
	case errors.Is(err, broker.ErrInvalidMessage):
		return codes.InvalidArgument
	case errors.Is(err, broker.ErrPermissionDenied):
		return codes.PermissionDenied
	case errors.Is(err, broker.ErrUnavailable), errors.Is(err, broker.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	default:
		if s, ok := status.FromError(err); ok {
			return s.Code()
		}
		return codes.Internal
	}
}

// toStatus turns err into the API's Status message (nil for nil).
func toStatus(err error) *pb.Status {
	if err == nil {
		return nil
	}
	return &pb.Status{Code: int32(code(err)), Message: err.Error()}
}

// grpcError turns err into an error a handler returns.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(code(err), err.Error())
}
