package node

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// subscribeService implements the Subscriber gRPC service.
type subscribeService struct {
	pb.UnimplementedSubscriberServer
}

// Subscribe is not served yet: the consume side is the next piece of work.
func (s *subscribeService) Subscribe(grpc.BidiStreamingServer[pb.SubscribeRequest, pb.SubscribeResponse]) error {
	return status.Error(codes.Unimplemented, "Subscribe is not implemented by this node yet")
}
