"""derain's local pages, each run until Ctrl+C:

``python -m derain.web serve [--weights W]... [--device D]``: derain your images in the browser (``derain web``);
``python -m derain.web review DATASET``: review a real-rain dataset (``derain review DATASET``).
Both take ``--host`` (default 127.0.0.1: this machine only), ``--port`` and ``--no-browser``.
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
    serve = commands.add_parser("serve", help="derain your images in the browser")
    serve.add_argument("--weights", action="append", help="catalog name or checkpoint path (repeatable)")
    serve.add_argument("--device", default="auto")
    review = commands.add_parser("review", help="review a real-rain dataset made by derain build-dataset")
    review.add_argument("dataset")
    for command, port in ((serve, 8000), (review, 8765)):
        command.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
        command.add_argument("--port", type=int, default=port)
        command.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    args = parser.parse_args(argv)
    try:
        import uvicorn

        if args.command == "serve":
            from derain.web.app import create_app

            app = create_app(args.weights, device=args.device)
        else:
            from derain.web.review import create_app as create_review_app

            app = create_review_app(args.dataset)
        _check_port(args.host, args.port)
    except ImportError:
        print('derain: error: the web pages need the web extra: pip install "derain[web]"', file=sys.stderr)
        return 1
    except DerainError as exc:
        print(f"derain: error: {exc}", file=sys.stderr)
        return 1
    url = f"http://{args.host}:{args.port}/"
    what = "derain web" if args.command == "serve" else "derain review"
    saved = "" if args.command == "serve" else "; decisions are saved as you click"
    print(f"{what}: {url} (Ctrl+C stops{saved})", flush=True)
    if not args.no_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
