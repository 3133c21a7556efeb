#!/usr/bin/env python3
"""The gRPC interop client cases that a room619 node must pass, with grpcio.

The `grpc.testing` contracts are compiled at run time with `grpc_tools.protoc`
into a temporary directory, so nothing generated is kept. Each case follows
the interop test descriptions of upstream gRPC (doc/interop-test-descriptions.md).

    python interop_client.py --server_host=127.0.0.1 --server_port=8080 \
        --test_case=large_unary,ping_pong      # or --test_case=all

Prints one line per case passed; on the first failure prints what was wrong
to stderr and exits with status 1 (2 for bad arguments or a broken set-up).
With --hold_channel=true the client keeps its channel open once every case has
passed, until its stdin closes: a harness can then look at the server side of
a case (did it notice a cancellation?) while the client is still connected.

The compression cases (client_compressed_unary, server_compressed_unary and
their streaming forms) are not here: a room619 node accepts no gRPC message
compression, by design, so they do not apply.
"""

import argparse
import importlib
import os
import queue
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_DIR = os.path.join(HERE, os.pardir, "proto", "proto")
PROTOS = ("empty.proto", "messages.proto", "test.proto")

ECHO_INITIAL_KEY = "x-grpc-test-echo-initial"
ECHO_INITIAL_VALUE = "test_initial_metadata_value"
ECHO_TRAILING_KEY = "x-grpc-test-echo-trailing-bin"
ECHO_TRAILING_VALUE = b"\xab\xab\xab"

SPECIAL_STATUS_MESSAGE = (
    "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
)


class CaseFailed(Exception):
    """A case's assertion did not hold."""


def check(condition, message):
    if not condition:
        raise CaseFailed(message)


def compile_protos(proto_dir, out_dir):
    """Compiles the grpc.testing contracts into `out_dir`; returns the modules."""
    proto_dir = os.path.abspath(proto_dir)
    files = [os.path.join("grpc", "testing", name) for name in PROTOS]
    for name in files:
        if not os.path.isfile(os.path.join(proto_dir, name)):
            raise SystemExit(f"interop_client: {name} not found under {proto_dir}")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={proto_dir}",
            f"--proto_path={include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *files,
        ]
    )
    if status != 0:
        raise SystemExit(f"interop_client: protoc failed with status {status}")
    # The generated modules are named `grpc.testing.*` (from the proto package)
    # and import each other so; `grpc` itself is grpcio, a regular package, so
    # its search path is extended rather than shadowed.
    grpc.__path__.append(os.path.join(out_dir, "grpc"))
    messages = importlib.import_module("grpc.testing.messages_pb2")
    empty = importlib.import_module("grpc.testing.empty_pb2")
    services = importlib.import_module("grpc.testing.test_pb2_grpc")
    return empty, messages, services


class Requests:
    """A request iterator that the case feeds one message at a time."""

    _DONE = object()

    def __init__(self):
        self._queue = queue.Queue()

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._DONE:
            raise StopIteration
        return item

    def send(self, request):
        self._queue.put(request)

    def close(self):
        self._queue.put(self._DONE)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Cases:
    """The interop cases, each a method named after the case."""

    def __init__(self, channel, empty, messages, services):
        self.empty = empty
        self.messages = messages
        self.stub = services.TestServiceStub(channel)
        self.unimplemented_stub = services.UnimplementedServiceStub(channel)

    def payload(self, size):
        return self.messages.Payload(body=b"\x00" * size)

    def check_body(self, payload, size, what):
        check(
            len(payload.body) == size,
            f"{what}: payload body is {len(payload.body)} bytes, expected {size}",
        )
        check(payload.body == b"\x00" * size, f"{what}: payload body is not all zeros")

    def empty_unary(self):
        response = self.stub.EmptyCall(self.empty.Empty())
        check(isinstance(response, self.empty.Empty), f"response is {type(response)}, not Empty")

    def large_unary(self):
        request = self.messages.SimpleRequest(
            response_type=self.messages.COMPRESSABLE,
            response_size=314159,
            payload=self.payload(271828),
        )
        response = self.stub.UnaryCall(request)
        self.check_body(response.payload, 314159, "UnaryCall")

    def client_streaming(self):
        sizes = (27182, 8, 1828, 45904)
        requests = (
            self.messages.StreamingInputCallRequest(payload=self.payload(size)) for size in sizes
        )
        response = self.stub.StreamingInputCall(requests)
        check(
            response.aggregated_payload_size == 74922,
            f"aggregated_payload_size is {response.aggregated_payload_size}, expected 74922",
        )

    def server_streaming(self):
        sizes = (31415, 9, 2653, 58979)
        request = self.messages.StreamingOutputCallRequest(
            response_type=self.messages.COMPRESSABLE,
            response_parameters=[self.messages.ResponseParameters(size=size) for size in sizes],
        )
        responses = list(self.stub.StreamingOutputCall(request))
        check(len(responses) == len(sizes), f"got {len(responses)} responses, expected 4")
        for index, (response, size) in enumerate(zip(responses, sizes)):
            self.check_body(response.payload, size, f"response {index}")

    def ping_pong(self):
        request_sizes = (27182, 8, 1828, 45904)
        response_sizes = (31415, 9, 2653, 58979)
        with Requests() as requests:
            responses = self.stub.FullDuplexCall(requests)
            for index, (request_size, response_size) in enumerate(
                zip(request_sizes, response_sizes)
            ):
                requests.send(
                    self.messages.StreamingOutputCallRequest(
                        response_type=self.messages.COMPRESSABLE,
                        response_parameters=[self.messages.ResponseParameters(size=response_size)],
                        payload=self.payload(request_size),
                    )
                )
                response = next(responses, None)
                check(response is not None, f"no response to request {index}")
                self.check_body(response.payload, response_size, f"response {index}")
            requests.close()
            rest = list(responses)
            check(not rest, f"got {len(rest)} responses after the fourth, expected none")

    def empty_stream(self):
        with Requests() as requests:
            responses = self.stub.FullDuplexCall(requests)
            requests.close()
            received = list(responses)
            check(not received, f"got {len(received)} responses, expected none")
            check(
                responses.code() == grpc.StatusCode.OK,
                f"status {responses.code()}, expected OK",
            )

    def status_code_and_message(self):
        self._check_echoed_status(2, "test status message")

    def special_status_message(self):
        request = self.messages.SimpleRequest(
            response_status=self.messages.EchoStatus(code=2, message=SPECIAL_STATUS_MESSAGE)
        )
        self._check_error(
            lambda: self.stub.UnaryCall(request),
            grpc.StatusCode.UNKNOWN,
            SPECIAL_STATUS_MESSAGE,
            "UnaryCall",
        )

    def _check_echoed_status(self, code, message):
        status = self.messages.EchoStatus(code=code, message=message)
        expected = grpc.StatusCode.UNKNOWN
        unary = self.messages.SimpleRequest(response_status=status)
        self._check_error(lambda: self.stub.UnaryCall(unary), expected, message, "UnaryCall")

        def full_duplex():
            with Requests() as requests:
                responses = self.stub.FullDuplexCall(requests)
                requests.send(self.messages.StreamingOutputCallRequest(response_status=status))
                requests.close()
                return list(responses)

        self._check_error(full_duplex, expected, message, "FullDuplexCall")

    def _check_error(self, call, code, message, what):
        error = self._check_code(call, code, what)
        check(
            error.details() == message,
            f"{what}: status message {error.details()!r}, expected {message!r}",
        )

    def _check_code(self, call, code, what):
        """Runs `call`, checks it fails with `code`, and returns the error."""
        try:
            result = call()
        except grpc.RpcError as error:
            check(error.code() == code, f"{what}: status {error.code()}, expected {code}")
            return error
        raise CaseFailed(f"{what}: succeeded with {result!r}, expected status {code}")

    def unimplemented_method(self):
        self._check_code(
            lambda: self.stub.UnimplementedCall(self.empty.Empty()),
            grpc.StatusCode.UNIMPLEMENTED,
            "TestService/UnimplementedCall",
        )

    def unimplemented_service(self):
        self._check_code(
            lambda: self.unimplemented_stub.UnimplementedCall(self.empty.Empty()),
            grpc.StatusCode.UNIMPLEMENTED,
            "UnimplementedService/UnimplementedCall",
        )

    def cancel_after_begin(self):
        with Requests() as requests:
            # The call starts and waits for requests that never come: the
            # server cannot answer it before the cancel.
            call = self.stub.StreamingInputCall.future(requests)
            check(call.cancel(), "StreamingInputCall: cancel() did not cancel the call")
            check(call.cancelled(), "StreamingInputCall: the call is not cancelled")
            check(
                call.code() == grpc.StatusCode.CANCELLED,
                f"StreamingInputCall: status {call.code()}, expected CANCELLED",
            )

    def cancel_after_first_response(self):
        with Requests() as requests:
            responses = self.stub.FullDuplexCall(requests)
            requests.send(
                self.messages.StreamingOutputCallRequest(
                    response_type=self.messages.COMPRESSABLE,
                    response_parameters=[self.messages.ResponseParameters(size=31415)],
                    payload=self.payload(27182),
                )
            )
            response = next(responses, None)
            check(response is not None, "FullDuplexCall: no response before the cancel")
            self.check_body(response.payload, 31415, "FullDuplexCall")
            check(responses.cancel(), "FullDuplexCall: cancel() did not cancel the call")
            try:
                response = next(responses)
            except grpc.RpcError as error:
                check(
                    error.code() == grpc.StatusCode.CANCELLED,
                    f"FullDuplexCall: status {error.code()} after the cancel, expected CANCELLED",
                )
            else:
                raise CaseFailed(
                    f"FullDuplexCall: got {response!r} after the cancel, expected CANCELLED"
                )
            check(
                responses.code() == grpc.StatusCode.CANCELLED,
                f"FullDuplexCall: status {responses.code()}, expected CANCELLED",
            )

    def custom_metadata(self):
        metadata = (
            (ECHO_INITIAL_KEY, ECHO_INITIAL_VALUE),
            (ECHO_TRAILING_KEY, ECHO_TRAILING_VALUE),
        )
        request = self.messages.SimpleRequest(
            response_type=self.messages.COMPRESSABLE,
            response_size=314159,
            payload=self.payload(271828),
        )
        response, call = self.stub.UnaryCall.with_call(request, metadata=metadata)
        self.check_body(response.payload, 314159, "UnaryCall")
        self._check_echoed_metadata(call, "UnaryCall")

        with Requests() as requests:
            responses = self.stub.FullDuplexCall(requests, metadata=metadata)
            requests.send(
                self.messages.StreamingOutputCallRequest(
                    response_type=self.messages.COMPRESSABLE,
                    response_parameters=[self.messages.ResponseParameters(size=314159)],
                    payload=self.payload(271828),
                )
            )
            requests.close()
            received = list(responses)
            check(len(received) == 1, f"FullDuplexCall: got {len(received)} responses, expected 1")
            self.check_body(received[0].payload, 314159, "FullDuplexCall")
            self._check_echoed_metadata(responses, "FullDuplexCall")

    def _check_echoed_metadata(self, call, what):
        initial = [value for key, value in call.initial_metadata() if key == ECHO_INITIAL_KEY]
        check(
            initial == [ECHO_INITIAL_VALUE],
            f"{what}: initial metadata {ECHO_INITIAL_KEY} is {initial!r}, "
            f"expected [{ECHO_INITIAL_VALUE!r}]",
        )
        trailing = [value for key, value in call.trailing_metadata() if key == ECHO_TRAILING_KEY]
        check(
            trailing == [ECHO_TRAILING_VALUE],
            f"{what}: trailing metadata {ECHO_TRAILING_KEY} is {trailing!r}, "
            f"expected [{ECHO_TRAILING_VALUE!r}]",
        )

    def timeout_on_sleeping_server(self):
        with Requests() as requests:
            responses = self.stub.FullDuplexCall(requests, timeout=0.001)
            requests.send(
                self.messages.StreamingOutputCallRequest(
                    response_type=self.messages.COMPRESSABLE,
                    payload=self.payload(27182),
                )
            )
            try:
                response = next(responses)
            except grpc.RpcError as error:
                check(
                    error.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"status {error.code()}, expected DEADLINE_EXCEEDED",
                )
            else:
                raise CaseFailed(f"got {response!r}, expected DEADLINE_EXCEEDED")


CASES = (
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "status_code_and_message",
    "special_status_message",
    "custom_metadata",
    "timeout_on_sleeping_server",
    "empty_stream",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server_host", default="127.0.0.1")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument(
        "--test_case",
        default="all",
        help=f"comma-separated cases, or all: {', '.join(CASES)}",
    )
    parser.add_argument(
        "--use_tls",
        default="false",
        choices=("false",),
        help="plaintext only (the only mode this client supports)",
    )
    parser.add_argument(
        "--hold_channel",
        default="false",
        choices=("false", "true"),
        help="once every case has passed, keep the channel open until stdin closes",
    )
    parser.add_argument(
        "--proto_path",
        default=DEFAULT_PROTO_DIR,
        help="the directory holding grpc/testing/*.proto",
    )
    args = parser.parse_args(argv)
    names = CASES if args.test_case == "all" else tuple(args.test_case.split(","))
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown test case(s): {', '.join(unknown)}; known: {', '.join(CASES)}")
    return args, names


def main(argv):
    args, names = parse_args(argv)
    target = f"{args.server_host}:{args.server_port}"
    with tempfile.TemporaryDirectory(prefix="room619-interop-") as out_dir:
        empty, messages, services = compile_protos(args.proto_path, out_dir)
        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=10)
            except grpc.FutureTimeoutError:
                print(f"FAIL: could not connect to {target} within 10 s", file=sys.stderr)
                return 1
            cases = Cases(channel, empty, messages, services)
            for name in names:
                try:
                    getattr(cases, name)()
                except CaseFailed as failure:
                    print(f"FAIL {name}: {failure}", file=sys.stderr)
                    return 1
                except grpc.RpcError as error:
                    print(
                        f"FAIL {name}: unexpected status {error.code()}: {error.details()!r}",
                        file=sys.stderr,
                    )
                    return 1
                print(f"PASS {name}", flush=True)
            if args.hold_channel == "true":
                sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
