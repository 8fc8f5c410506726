#!/usr/bin/env python3
"""Publish messages to a streamgate topic and print one line per result:
request id, ok or error, then the message id (or the error's code and text).

    python3 publisher.py --topic demo --key user-1 hello world
    python3 publisher.py --topic demo --count 50
"""
import argparse
import sys

import grpc

from streamgate.v1 import streamgate_pb2 as pb
from streamgate.v1 import streamgate_pb2_grpc as pb_grpc

BATCH = 100  # messages per PublishRequest
CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="localhost:50051", help="streamgate's gRPC address")
    p.add_argument("--topic", required=True)
    p.add_argument("--key", default="", help="equal keys land on the same shard, in order")
    p.add_argument("--count", type=int, default=10, help="without messages: publish message-1 .. message-N")
    p.add_argument("messages", nargs="*", help="payloads to publish, one message each")
    args = p.parse_args()
    payloads = args.messages or [f"message-{i}" for i in range(1, args.count + 1)]
    messages = [
        pb.OutgoingMessage(request_id=str(i), topic=args.topic, key=args.key.encode(), payload=text.encode())
        for i, text in enumerate(payloads, 1)
    ]

    def requests():
        # The stream is half-closed when this generator ends; the server
        # still sends every result before it ends the stream.
        for i in range(0, len(messages), BATCH):
            yield pb.PublishRequest(messages=messages[i:i + BATCH])

    failed = 0
    with grpc.insecure_channel(args.addr) as channel:
        for response in pb_grpc.PublisherStub(channel).Publish(requests()):
            for r in response.results:
                if r.HasField("error"):
                    failed += 1
                    print(f"{r.request_id}\terror\t{CODE_NAMES.get(r.error.code, r.error.code)}\t{r.error.message}")
                else:
                    print(f"{r.request_id}\tok\t{r.message_id}")
    if failed:
        print(f"publisher: {failed} message(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as e:
        print(f"publisher: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
