package e2e

import (
	"context"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

const (
	// brokerAlias is the devbroker's name on the test network, and the host
	// it advertises to Kafka clients.
	brokerAlias = "broker"
	brokerPort  = "9092/tcp"
	grpcPort    = "50051/tcp"
	httpPort    = "8080/tcp"

	startupTimeout = 30 * time.Second
)

// newNetwork creates a user-defined bridge network (network aliases work
// only on those), removed when t ends.
func newNetwork(t *testing.T) *testcontainers.DockerNetwork {
	t.Helper()
	nw, err := network.New(t.Context())
	testcontainers.CleanupNetwork(t, nw)
	require.NoError(t, err, "create network")
	return nw
}

// startBroker runs `streamgate devbroker` on nw as brokerAlias, advertising
// that alias, with topic created at start.
func startBroker(t *testing.T, nw *testcontainers.DockerNetwork, topic string, partitions int) *testcontainers.DockerContainer {
	t.Helper()
	return run(t, "devbroker",
		testcontainers.WithCmd("devbroker",
			"--addr", "0.0.0.0:9092",
			"--advertise-host", brokerAlias,
			"--topics", topic,
			"--partitions", strconv.Itoa(partitions)),
		testcontainers.WithExposedPorts(brokerPort),
		network.WithNetwork([]string{brokerAlias}, nw),
		// Not wait.ForListeningPort: it runs /bin/sh in the container, and
		// a scratch image has none. The line comes once the port listens.
		testcontainers.WithWaitStrategy(wait.ForLog("devbroker listening").WithStartupTimeout(startupTimeout)),
	)
}

// startGateway runs `streamgate serve` on nw against the broker started by
// startBroker, and waits until /readyz says the broker answers it.
func startGateway(t *testing.T, nw *testcontainers.DockerNetwork, nodeName string) *testcontainers.DockerContainer {
	t.Helper()
	return run(t, "serve "+nodeName,
		testcontainers.WithCmd("serve",
			"--brokers", brokerAlias+":9092",
			"--grpc-addr", ":50051",
			"--http-addr", ":8080",
			"--node-name", nodeName),
		testcontainers.WithExposedPorts(grpcPort, httpPort),
		network.WithNetwork([]string{nodeName}, nw),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/readyz").WithPort(httpPort).WithStartupTimeout(startupTimeout)),
	)
}

// run starts a container of this run's streamgate image, removed when t
// ends; if t failed, its logs are printed first.
func run(t *testing.T, name string, opts ...testcontainers.ContainerCustomizer) *testcontainers.DockerContainer {
	t.Helper()
	opts = append(opts, testcontainers.WithLogger(tclog.TestLogger(t)))
	ctr, err := testcontainers.Run(t.Context(), streamgateImage(t), opts...)
	testcontainers.CleanupContainer(t, ctr)
	// Cleanups run last-in first-out: this one sees the container still there.
	t.Cleanup(func() {
		if t.Failed() && ctr != nil {
			logContainer(t, name, ctr)
		}
	})
	require.NoError(t, err, "start %s container", name)
	return ctr
}

// logContainer copies a container's output into the test log.
func logContainer(t *testing.T, name string, ctr *testcontainers.DockerContainer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		t.Logf("%s container logs: %v", name, err)
		return
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil && len(b) == 0 {
		t.Logf("%s container logs: %v", name, err)
		return
	}
	t.Logf("%s container logs:\n%s", name, b)
}
