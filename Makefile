proto:
	go generate ./proto/...

test:
	go test -race ./...

.PHONY: proto test
