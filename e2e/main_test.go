package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"

	"github.com/streamgate/streamgate/internal/buildbin"
)

const (
	// ryukEnv switches testcontainers' reaper off. The reaper is an image
	// that would have to be pulled, and it counts as off only when the value
	// is exactly "true".
	ryukEnv = "TESTCONTAINERS_RYUK_DISABLED"
	// hostOverrideEnv is the host at which testcontainers reaches mapped
	// ports; see connectDocker.
	hostOverrideEnv = "TESTCONTAINERS_HOST_OVERRIDE"

	// imageRepo names the images the tests build; each run gets its own tag
	// so that concurrent or repeated runs never share (or delete) one.
	imageRepo = "streamgate-e2e"
	// imageLabel marks those images, to find any a killed run left behind:
	// docker images --filter label=org.streamgate.e2e
	imageLabel = "org.streamgate.e2e"

	dockerfile = "FROM scratch\nCOPY streamgate /streamgate\nENTRYPOINT [\"/streamgate\"]\n"
)

var (
	// provider talks to the Docker engine; set by TestMain when one answers.
	provider *testcontainers.DockerProvider
	// engineArch is the engine's GOARCH, which the binary is built for.
	engineArch string
	// skipReason, when set, is why every test skips: no engine answered.
	skipReason string

	// image is the streamgate image of this run, built by the first test
	// that asks for it and removed by TestMain at the end.
	image struct {
		once sync.Once
		ref  string
		err  error
	}
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// testcontainers reads its configuration once, on first use, so this
	// has to come before any call into it.
	if v, ok := os.LookupEnv(ryukEnv); !ok {
		os.Setenv(ryukEnv, "true")
	} else if v != "true" {
		fmt.Fprintf(os.Stderr, "e2e: warning: %s=%q is not exactly \"true\": testcontainers will try to pull its Ryuk reaper image\n", ryukEnv, v)
	}

	p, arch, err := connectDocker()
	if err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "e2e: FAIL: no Docker engine answers (%v); the e2e tests are required when CI=true\n", err)
			return 1
		}
		skipReason = fmt.Sprintf("no Docker engine answers, so the e2e tests cannot run (they are required when CI=true): %v", err)
		fmt.Fprintln(os.Stderr, "e2e: skipping:", skipReason)
		return m.Run()
	}
	provider, engineArch = p, arch
	defer provider.Close()

	code := m.Run()
	if err := removeImage(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// requireDocker skips t when TestMain found no Docker engine, and builds
// the image otherwise: callers start their deadlines after it, since a
// build on a cold cache alone can take minutes.
func requireDocker(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	streamgateImage(t)
}

// connectDocker returns a provider for the engine testcontainers finds
// (DOCKER_HOST, the Docker context, the default socket) and the engine's
// architecture, or why none answers.
func connectDocker() (p *testcontainers.DockerProvider, arch string, err error) {
	// Some of testcontainers' host discovery panics instead of failing.
	defer func() {
		if r := recover(); r != nil {
			p, arch, err = nil, "", fmt.Errorf("testcontainers panicked: %v", r)
		}
	}()
	p, err = testcontainers.NewDockerProvider()
	if err != nil {
		// Its last error alone ("rootless Docker not found") says little.
		return nil, "", fmt.Errorf("testcontainers tried DOCKER_HOST, the Docker context, the default socket and the rootless sockets; the last said: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	v, err := p.Client().ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		p.Close()
		return nil, "", err
	}
	if v.Os != "linux" {
		p.Close()
		return nil, "", fmt.Errorf("the engine runs %s containers; the tests need linux", v.Os)
	}
	info, err := p.Client().Info(ctx, client.InfoOptions{})
	if err != nil {
		p.Close()
		return nil, "", err
	}
	// Inside a container (/.dockerenv) testcontainers assumes the engine is
	// the host's and reaches mapped ports at the default gateway. When this
	// machine is a container running its own engine, as the project's
	// machines are, the ports are published here and the gateway is some
	// other machine. An engine names itself after its host's hostname: if
	// that is ours, the engine is local and its ports are on localhost.
	if _, set := os.LookupEnv(hostOverrideEnv); !set {
		if h, err := os.Hostname(); err == nil && h == info.Info.Name {
			os.Setenv(hostOverrideEnv, "localhost")
		}
	}
	return p, v.Arch, nil
}

// streamgateImage returns the reference of this run's streamgate image,
// building it on the first call.
func streamgateImage(t *testing.T) string {
	t.Helper()
	image.once.Do(func() {
		start := time.Now()
		image.ref, image.err = buildImage()
		if image.err == nil {
			t.Logf("built image %s in %s", image.ref, time.Since(start).Round(time.Millisecond))
		}
	})
	if image.err != nil {
		t.Fatalf("streamgate image: %v", image.err)
	}
	return image.ref
}

// buildImage compiles a static streamgate binary and builds a FROM scratch
// image around it through testcontainers. The build context is a temporary
// folder holding only the Dockerfile and the binary, since the whole folder
// is sent to the engine.
func buildImage() (string, error) {
	// Generous: with empty Go caches the build alone has taken over 5
	// minutes here while other test binaries ran beside it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "streamgate-e2e-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := buildBinary(ctx, filepath.Join(dir, "streamgate")); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}

	var buildLog bytes.Buffer
	req := &testcontainers.ContainerRequest{FromDockerfile: testcontainers.FromDockerfile{
		Context:        dir,
		Repo:           imageRepo,
		Tag:            fmt.Sprintf("run-%d-%d", os.Getpid(), time.Now().UnixNano()),
		KeepImage:      true, // shared by every test of the run; TestMain removes it
		BuildLogWriter: &buildLog,
		BuildOptionsModifier: func(o *client.ImageBuildOptions) {
			o.Labels = map[string]string{imageLabel: "true"}
		},
	}}
	ref, err := provider.BuildImage(ctx, req)
	if err != nil {
		return "", fmt.Errorf("docker build: %w\n%s", err, buildLog.Bytes())
	}
	return ref, nil
}

// buildBinary compiles cmd/streamgate for the engine's platform.
func buildBinary(ctx context.Context, out string) error {
	return buildbin.Build(ctx, out, "GOOS=linux", "GOARCH="+engineArch)
}

// removeImage deletes this run's image, if one was built. The tests'
// cleanups have removed its containers by now.
func removeImage() error {
	if image.ref == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := provider.Client().ImageRemove(ctx, image.ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	if err != nil {
		return fmt.Errorf("removing image %s: %w", image.ref, err)
	}
	return nil
}
