// Package lint holds no code, only a test: TestLint runs go vet and
// staticcheck on the whole module, so that the README's test command (and
// CI, which runs exactly that) fails on their findings. Install the pinned
// staticcheck with
//
//	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
//
// or point STREAMGATE_STATICCHECK at a binary. Without one the test skips
// its staticcheck half, unless CI=true, where it fails.
package lint
