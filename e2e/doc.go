// Package e2e holds end-to-end tests that run the streamgate binary in
// Docker containers through testcontainers-go.
//
// The tests build a static streamgate binary (CGO_ENABLED=0), wrap it in a
// FROM scratch image once per run, and start `streamgate devbroker` and
// `streamgate serve` on a user-defined network. Nothing is pulled from a
// registry, so they run on an engine that cannot reach one.
//
// Run them with:
//
//	TESTCONTAINERS_RYUK_DISABLED=true go test -race -count=1 -v ./e2e/
//
// (TestMain sets TESTCONTAINERS_RYUK_DISABLED=true when it is unset, since
// the Ryuk reaper is an image that would have to be pulled; the containers
// and networks are removed by the tests' own cleanups instead.)
//
// When no Docker engine answers the tests are skipped with the reason,
// except under CI=true, where the run fails: CI must not pass by skipping.
package e2e
