"""``nbody-explorer``: ``panel serve explorer`` with safe defaults for a shared machine.

- It listens on 127.0.0.1 only (``panel serve`` alone listens on every interface), and accepts
  websocket connections from pages served as ``localhost:PORT`` or ``127.0.0.1:PORT``. To expose
  it, pass ``--address 0.0.0.0 --allow-websocket-origin HOST:PORT`` yourself, behind a login
  (``--basic-auth`` or ``--oauth-provider``, see ``panel serve --help``).
- A closed tab's session is dropped within seconds (``--unused-session-lifetime``, checked every
  ``--check-unused-sessions`` milliseconds; Bokeh's default is 15 s, checked every 17 s), and
  with it the session's job (the Explorer stops it in ``on_session_destroyed``). The lifetime
  also counts from a page's request to its websocket connection, so it leaves a slow browser
  time to connect.
- The page reads and writes files only under the working directory; each
  ``--allow-files-under DIR`` allows one more directory (paths in an imported TOML or typed
  into the page are checked against these, see :mod:`explorer.files`).

Every other option goes to ``panel serve`` unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .files import FILE_ROOTS_ENV

APP = Path(__file__).resolve().parent
SESSION_DEFAULTS = {"--check-unused-sessions": "1000", "--unused-session-lifetime": "5000"}  # milliseconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbody-explorer", epilog="Other options are passed to 'panel serve'.",
                                     description="Serve the nbody explorer dashboard with safe defaults.")
    parser.add_argument("--port", type=int, default=5006)
    parser.add_argument("--address", default="127.0.0.1",
                        help="the interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--allow-websocket-origin", action="append", metavar="HOST[:PORT]",
                        help="a host the page may be opened from (default: localhost:PORT, 127.0.0.1:PORT)")
    parser.add_argument("--allow-files-under", action="append", default=[], metavar="DIR",
                        help="a directory outside the working directory that the page may read and write")
    return parser


def panel_serve_args(argv: list[str]) -> tuple[list[str], list[Path]]:
    """The ``panel serve`` arguments for ``nbody-explorer`` ``argv``, and the file roots."""
    args, rest = _parser().parse_known_args(argv)
    origins = args.allow_websocket_origin or [f"localhost:{args.port}", f"127.0.0.1:{args.port}"]
    serve = [str(APP), "--port", str(args.port), "--address", args.address]
    for origin in origins:
        serve += ["--allow-websocket-origin", origin]
    for flag, default in SESSION_DEFAULTS.items():
        if not any(arg == flag or arg.startswith(f"{flag}=") for arg in rest):
            serve += [flag, default]
    roots = [Path.cwd(), *(Path(d).resolve() for d in args.allow_files_under)]
    return serve + rest, roots


def main(argv: list[str] | None = None) -> None:
    from panel.command import main as panel_main

    serve, roots = panel_serve_args(sys.argv[1:] if argv is None else argv)
    os.environ[FILE_ROOTS_ENV] = os.pathsep.join(str(r) for r in roots)
    sys.argv = ["panel", "serve", *serve]
    panel_main()


if __name__ == "__main__":
    main()
