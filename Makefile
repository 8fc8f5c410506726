proto:
	go generate ./proto/...

test:
	go test -race ./...

image:
	CGO_ENABLED=0 go build -trimpath -o dist/streamgate ./cmd/streamgate
	docker build -t streamgate:local .

.PHONY: proto test image
