"""A RouteGuide client for the cluster, written as after gRPC's Python
tutorial (route_guide_client.py), dialling xds:///routeguide.

The cluster's nodes serve xDS: with a bootstrap file that names them
(`client xds-bootstrap ADDR... > bootstrap.json`), gRPC finds every node,
spreads calls round robin, retries on another node and follows joins and
drains, with no code of ours.

    python3 -m grpc_tools.protoc -I proto/routeguide --python_out=OUT \
        --grpc_python_out=OUT route_guide.proto
    GRPC_XDS_BOOTSTRAP=bootstrap.json PYTHONPATH=OUT \
        python3 deploy/python/route_guide_client.py

It makes the four RPCs once each, synchronously and with futures, prints
what they answered, then calls GetFeature and ListFeatures from a few
threads, with --duration, or until stdin closes with --until-stdin-closes,
and prints one JSON summary: what the RPCs answered, calls ok and failed,
and the calls each node answered (from the routeguide-node header).
"""

import argparse
import collections
import json
import random
import sys
import threading
import time

import grpc

import route_guide_pb2
import route_guide_pb2_grpc

NODE_HEADER = "routeguide-node"
KNOWN_POINT = route_guide_pb2.Point(latitude=409146138, longitude=-746188906)
NOWHERE = route_guide_pb2.Point(latitude=0, longitude=0)
RECTANGLE = route_guide_pb2.Rectangle(
    lo=route_guide_pb2.Point(latitude=400000000, longitude=-750000000),
    hi=route_guide_pb2.Point(latitude=420000000, longitude=-730000000),
)


class Tally:
    """Calls ok and failed, and the nodes that answered, across threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.errors = collections.Counter()
        self.by_node = collections.Counter()

    def answered(self, metadata):
        node = dict(metadata or ()).get(NODE_HEADER, "?")
        with self.lock:
            self.ok += 1
            first = node not in self.by_node
            self.by_node[node] += 1
        if first:
            # The driving test waits for these lines.
            print("node", node, flush=True)

    def failed(self, error):
        code = error.code().name if isinstance(error, grpc.Call) else type(error).__name__
        with self.lock:
            self.errors[code] += 1
        print("failed:", code, error, file=sys.stderr, flush=True)


def get_feature(stub, point, tally):
    feature, call = stub.GetFeature.with_call(point, timeout=10)
    tally.answered(call.initial_metadata())
    return feature


def get_features_with_futures(stub, points, tally):
    futures = [stub.GetFeature.future(p, timeout=10) for p in points]
    names = []
    for future in futures:
        names.append(future.result().name)
        tally.answered(future.initial_metadata())
    return names


def list_features(stub, tally):
    responses = stub.ListFeatures(RECTANGLE, timeout=10)
    features = list(responses)
    tally.answered(responses.initial_metadata())
    return features


def route_iterator(features, count):
    for _ in range(count):
        yield random.choice(features).location


def record_route(stub, features, tally):
    summary, call = stub.RecordRoute.with_call(route_iterator(features, 10), timeout=10)
    tally.answered(call.initial_metadata())
    future = stub.RecordRoute.future(route_iterator(features, 5), timeout=10)
    summary_of_future = future.result()
    tally.answered(future.initial_metadata())
    return summary, summary_of_future


def route_chat(stub, tally):
    point = route_guide_pb2.Point(latitude=random.randint(1, 10**8), longitude=1)
    notes = [route_guide_pb2.RouteNote(location=point, message=m) for m in ("First", "Second", "Third")]
    responses = stub.RouteChat(iter(notes), timeout=10)
    received = [note.message for note in responses]
    tally.answered(responses.initial_metadata())
    return received


def tour(stub, tally):
    """The four RPCs once each, as the tutorial makes them."""
    features = list_features(stub, tally)
    summary, summary_of_future = record_route(stub, features, tally)
    return {
        "get_known": get_feature(stub, KNOWN_POINT, tally).name,
        "get_unknown": get_feature(stub, NOWHERE, tally).name,
        "get_futures": get_features_with_futures(stub, [KNOWN_POINT] * 6, tally),
        "list_count": len(features),
        "record_points": summary.point_count,
        "record_points_future": summary_of_future.point_count,
        "record_features": summary.feature_count,
        "chat": route_chat(stub, tally),
    }


def load(stub, tally, stop, threads):
    """GetFeature, synchronous and futures, and ListFeatures, until stop."""

    def work():
        while not stop.is_set():
            try:
                get_feature(stub, KNOWN_POINT, tally)
                get_features_with_futures(stub, [KNOWN_POINT, NOWHERE], tally)
                list_features(stub, tally)
            except grpc.RpcError as error:
                tally.failed(error)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="xds:///routeguide")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of load")
    parser.add_argument("--until-stdin-closes", action="store_true", help="load until stdin closes")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    tally = Tally()
    with grpc.insecure_channel(args.target) as channel:
        stub = route_guide_pb2_grpc.RouteGuideStub(channel)
        answers = tour(stub, tally)
        print("tour done", flush=True)
        stop = threading.Event()
        if args.until_stdin_closes:
            threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        else:
            threading.Timer(args.duration, stop.set).start()
        load(stub, tally, stop, args.threads)
    print(json.dumps({
        "answers": answers,
        "ok": tally.ok,
        "failed": sum(tally.errors.values()),
        "errors": dict(tally.errors),
        "by_node": dict(tally.by_node),
    }), flush=True)


if __name__ == "__main__":
    main()
