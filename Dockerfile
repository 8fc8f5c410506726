# A streamgate image from a static binary built on the host, so that it
# builds without pulling anything (`make image`):
#   CGO_ENABLED=0 go build -trimpath -o dist/streamgate ./cmd/streamgate
FROM scratch
COPY dist/streamgate /streamgate
ENTRYPOINT ["/streamgate"]
