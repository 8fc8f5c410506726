package node_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamgate/streamgate/internal/testenv"
	"github.com/streamgate/streamgate/node"
	pb "github.com/streamgate/streamgate/proto/streamgate/v1"
)

// HTTP/2 by hand (RFC 9113): grpc-go's own client never pings faster than
// every 10 s, so an abusive pinger has to be written frame by frame.
const (
	h2Preface        = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2Settings       = 0x4
	h2Ping           = 0x6
	h2GoAway         = 0x7
	h2NoError        = 0x0
	h2EnhanceYourCal = 0xb
)

func h2Frame(typ byte, payload []byte) []byte {
	f := make([]byte, 9, 9+len(payload))
	f[0], f[1], f[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	f[3] = typ
	return append(f, payload...)
}

// h2Conn opens a plaintext HTTP/2 connection to addr, as gRPC speaks it.
func h2Conn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.Write(append([]byte(h2Preface), h2Frame(h2Settings, nil)...))
	require.NoError(t, err)
	return c
}

// awaitGoAway reads frames until a GOAWAY and returns its error code.
func awaitGoAway(t *testing.T, c net.Conn, within time.Duration) uint32 {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	hdr := make([]byte, 9)
	for {
		_, err := io.ReadFull(c, hdr)
		require.NoError(t, err, "no GOAWAY within %s", within)
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		_, err = io.ReadFull(c, payload)
		require.NoError(t, err)
		if hdr[3] == h2GoAway {
			require.GreaterOrEqual(t, len(payload), 8)
			return binary.BigEndian.Uint32(payload[4:8])
		}
	}
}

// A client that pings more often than --keepalive-min-time is closed with
// GOAWAY ENHANCE_YOUR_CALM (after grpc-go's two forgiven strikes).
func TestKeepalive_PingFloodIsClosedWithEnhanceYourCalm(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) { c.KeepaliveMinTime = time.Hour }})
	c := h2Conn(t, env.Addr)
	for i := range 5 {
		_, err := c.Write(h2Frame(h2Ping, []byte{0, 0, 0, 0, 0, 0, 0, byte(i)}))
		if err != nil {
			break // closed already
		}
	}
	assert.EqualValues(t, h2EnhanceYourCal, awaitGoAway(t, c, 10*time.Second))
}

// Pings at the policy's pace are answered and the connection stays.
func TestKeepalive_PingsAtThePolicysPaceAreAnswered(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) { c.KeepaliveMinTime = 50 * time.Millisecond }})
	c := h2Conn(t, env.Addr)
	hdr := make([]byte, 9)
	for i := range 4 {
		// The wait is the pace under test, not synchronisation.
		time.Sleep(100 * time.Millisecond)
		_, err := c.Write(h2Frame(h2Ping, []byte{0, 0, 0, 0, 0, 0, 0, byte(i)}))
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		for acked := false; !acked; {
			_, err := io.ReadFull(c, hdr)
			require.NoError(t, err)
			payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
			_, err = io.ReadFull(c, payload)
			require.NoError(t, err)
			require.NotEqual(t, byte(h2GoAway), hdr[3], "closed a client pinging at the allowed pace")
			acked = hdr[3] == h2Ping && hdr[4]&0x1 != 0 && payload[7] == byte(i)
		}
	}
}

// The Go client's keepalive (client.DefaultDialOptions: every 10 s) must
// stay within the default policy, or every idle client would be closed.
func TestKeepalive_DefaultPolicyAdmitsTheGoClientsPings(t *testing.T) {
	assert.Less(t, node.DefaultConfig().KeepaliveMinTime, 10*time.Second)
}

// --max-connection-age closes a connection with GOAWAY NO_ERROR once it is
// that old; an open Subscribe stream ends after the grace, and the client
// reconnects by itself for the next call.
func TestMaxConnectionAge_ConnectionIsClosedAndClientsReconnect(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Topics: []string{"t"}, Node: func(c *node.Config) {
		c.MaxConnectionAge = 300 * time.Millisecond
		c.MaxConnectionAgeGrace = 300 * time.Millisecond
	}})
	c := h2Conn(t, env.Addr)
	assert.EqualValues(t, h2NoError, awaitGoAway(t, c, 10*time.Second))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := pb.NewSubscriberClient(env.Client.Conn()).Subscribe(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: earliest("s", "t")}}))
	for err == nil {
		_, err = stream.Recv()
	}
	require.Equal(t, codes.Unavailable, status.Code(err), "the stream is cut after the grace: %v", err)
	require.Eventually(t, func() bool {
		s, err := pb.NewSubscriberClient(env.Client.Conn()).Subscribe(ctx)
		if err != nil || s.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Open{Open: earliest("s", "t")}}) != nil {
			return false
		}
		r, err := s.Recv()
		return err == nil && r.GetOpened() != nil
	}, 10*time.Second, 50*time.Millisecond, "the client reconnects")
}
