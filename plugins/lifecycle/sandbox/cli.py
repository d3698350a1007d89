"""``python -m lifecycle.sandbox``: run the provider sandbox in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from lifecycle.sandbox.latency import DEFAULT_SIGMA, Latency
from lifecycle.sandbox.server import DEFAULT_TWILIO_SID, SandboxServer

DEFAULT_PORT = 8025


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of the sandbox."""
    parser = argparse.ArgumentParser(
        prog="python -m lifecycle.sandbox",
        description="Local SendGrid Mail Send + Twilio Messages sandbox: signed webhooks, fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any (default: %(default)s)")
    parser.add_argument("--sendgrid-webhook-url", help="where SendGrid Event Webhook batches are posted")
    parser.add_argument("--twilio-inbound-url", help="where inbound SMS (STOP...) webhooks are posted")
    parser.add_argument(
        "--twilio-account-sid",
        default=DEFAULT_TWILIO_SID,
        help="account SID to accept (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="median time a provider request takes to answer, in milliseconds (default: none)",
    )
    parser.add_argument(
        "--latency-sigma",
        type=float,
        default=DEFAULT_SIGMA,
        help="spread of the lognormal latency: p99 = median x e^(2.326 sigma) (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sandbox until SIGTERM/SIGINT; prints its URL and the SendGrid webhook public key."""
    args = build_parser().parse_args(argv)
    stopped = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = SandboxServer(
        host=args.host,
        port=args.port,
        sendgrid_webhook_url=args.sendgrid_webhook_url,
        twilio_inbound_url=args.twilio_inbound_url,
        twilio_account_sid=args.twilio_account_sid,
        latency=Latency(args.latency_ms, args.latency_sigma),
    ).start()
    try:
        print(f"Provider sandbox listening on {server.url}", flush=True)
        print(f"Twilio account SID: {args.twilio_account_sid}", flush=True)
        print(f"SendGrid webhook public key: {server.public_key}", flush=True)
        print(f"Provider latency: {server.latency.describe()}", flush=True)
        while not stopped.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
