"""GetFeature from a few threads over xds:///routeguide for --duration
seconds, for the gray-failure tests: prints one JSON line with, per
--bucket seconds, the calls each node answered (routeguide-node header) and
the calls that failed."""

import argparse
import collections
import json
import threading
import time

import grpc

import route_guide_pb2
import route_guide_pb2_grpc

NODE_HEADER = "routeguide-node"
POINT = route_guide_pb2.Point(latitude=409146138, longitude=-746188906)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="xds:///routeguide")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--bucket", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    lock = threading.Lock()
    buckets = collections.defaultdict(collections.Counter)
    errors = collections.Counter()
    with grpc.insecure_channel(args.target) as channel:
        stub = route_guide_pb2_grpc.RouteGuideStub(channel)
        stub.GetFeature(POINT, timeout=30, wait_for_ready=True)  # resources in
        start = time.monotonic()

        def work():
            while True:
                at = time.monotonic() - start
                if at >= args.duration:
                    return
                bucket = int(at / args.bucket)
                try:
                    _, call = stub.GetFeature.with_call(POINT, timeout=5)
                    node = dict(call.initial_metadata() or ()).get(NODE_HEADER, "?")
                except grpc.RpcError as error:
                    node = "failed"
                    with lock:
                        errors[error.code().name] += 1
                with lock:
                    buckets[bucket][node] += 1

        threads = [threading.Thread(target=work) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    last = max(buckets) if buckets else -1
    print(json.dumps({
        "buckets": [dict(buckets[i]) for i in range(last + 1)],
        "errors": dict(errors),
    }), flush=True)


if __name__ == "__main__":
    main()
