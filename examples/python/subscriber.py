#!/usr/bin/env python3
"""Subscribe to streamgate topics: print each message (shard, delivery
attempt, key, payload) and ack each batch after printing it.

    python3 subscriber.py --subscription billing --topic demo --from-beginning --max 50

On exit (--max reached, or Ctrl-C) it half-closes its side of the stream and
reads the server's side to the end: the server applies every ack sent before
the half-close, then ends the stream with OK, so no ack is lost.
"""
import argparse
import queue
import signal
import sys

import grpc

from streamgate.v1 import streamgate_pb2 as pb
from streamgate.v1 import streamgate_pb2_grpc as pb_grpc

CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="localhost:50051", help="streamgate's gRPC address")
    p.add_argument("--subscription", required=True)
    p.add_argument("--topic", required=True, action="append", help="repeat for several topics")
    p.add_argument("--from-beginning", action="store_true", help="a new subscription starts at the earliest message")
    p.add_argument("--max", type=int, default=0, help="exit after N messages (0: run until Ctrl-C)")
    args = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)

    # The request stream: gRPC sends what we put in the queue; None
    # half-closes. A SimpleQueue, because its put may run inside the signal
    # handler below while the main thread is in the middle of a put.
    outbox = queue.SimpleQueue()
    def requests():
        while (req := outbox.get()) is not None:
            yield req

    closing = False
    def close(*_):
        nonlocal closing
        closing = True
        outbox.put(None)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C gives up
    signal.signal(signal.SIGINT, close)

    start = pb.START_POSITION_EARLIEST if args.from_beginning else pb.START_POSITION_UNSPECIFIED
    outbox.put(pb.SubscribeRequest(open=pb.Open(subscription=args.subscription, topics=args.topic, start_position=start)))
    seen = 0
    with grpc.insecure_channel(args.addr) as channel:
        try:
            # Ends when the server ends the stream with OK, after our half-close.
            for resp in pb_grpc.SubscriberStub(channel).Subscribe(requests()):
                kind = resp.WhichOneof("response")
                if kind == "opened":
                    o = resp.opened
                    print(f"opened: subscriber {o.subscriber_id} on node {o.node}, max_unacked {o.max_unacked}", file=sys.stderr)
                elif kind == "notice":
                    n, code = resp.notice, CODE_NAMES.get(resp.notice.status.code, resp.notice.status.code)
                    print(f"{'terminal ' if n.terminal else ''}notice: {code}: {n.status.message}", file=sys.stderr)
                elif kind == "messages" and not closing:
                    # Past --max, messages are neither printed nor acked: the
                    # server hands them to the subscription's next subscriber.
                    batch = resp.messages.messages[:args.max - seen] if args.max else resp.messages.messages
                    for m in batch:
                        key, payload = m.key.decode(errors="replace"), m.payload.decode(errors="replace")
                        print(f"{m.shard}\tattempt={m.delivery_attempt}\tkey={key}\t{payload}")
                    outbox.put(pb.SubscribeRequest(ack=pb.Ack(message_ids=[m.id for m in batch])))
                    seen += len(batch)
                    if args.max and seen >= args.max:
                        close()
        except grpc.RpcError as e:  # after a terminal notice, or a broken stream
            outbox.put(None)
            print(f"subscriber: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
