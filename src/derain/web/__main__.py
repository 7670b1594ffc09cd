"""``python -m derain.web review DATASET [--host H] [--port P] [--no-browser]``: serve the review page.

``derain review DATASET`` starts this program; it runs until Ctrl+C.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import threading
import webbrowser

from derain.errors import DerainError


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
            raise DerainError(f"port {port} on {host} {why}; pass another one with --port") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m derain.web", description="derain's local web pages")
    commands = parser.add_subparsers(dest="command", required=True)
    review = commands.add_parser("review", help="review a real-rain dataset made by derain build-dataset")
    review.add_argument("dataset")
    review.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    review.add_argument("--port", type=int, default=8765)
    review.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    args = parser.parse_args(argv)
    try:
        import uvicorn

        from derain.web.review import create_app

        app = create_app(args.dataset)
        _check_port(args.host, args.port)
    except ImportError:
        print('derain: error: the review page needs the web extra: pip install "derain[web]"', file=sys.stderr)
        return 1
    except DerainError as exc:
        print(f"derain: error: {exc}", file=sys.stderr)
        return 1
    url = f"http://{args.host}:{args.port}/"
    print(f"derain review: {url} (Ctrl+C stops; decisions are saved as you click)", flush=True)
    if not args.no_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
