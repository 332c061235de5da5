"""One entry point: `rinha api|worker|emulator|stack`, each with its own flags."""

from __future__ import annotations

import argparse
import importlib

from rinha import __version__, config, logs

# Each role's `run(config)` lives in its package; imported lazily so `rinha emulator` does not
# pay for aiohttp and `rinha stack` starts fast.
ROLE_ENTRY = {
    "api": "rinha.api.server",
    "worker": "rinha.worker.server",
    "emulator": "rinha.emulator.server",
    "stack": "rinha.stack.launcher",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rinha", description=__doc__)
    top.add_argument("--version", action="version", version=f"rinha {__version__}")
    roles = top.add_subparsers(dest="role", required=True, metavar="ROLE")
    for role, cls in config.ROLES.items():
        sub = roles.add_parser(role, help=(cls.__doc__ or "").strip(), description=(cls.__doc__ or "").strip())
        config.add_arguments(sub, cls)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = config.build(config.ROLES[args.role], args)
    fields = {"role": args.role, "node": settings.name} if args.role == "api" else {"role": args.role}
    logs.setup(settings.log_level, **fields)
    module = importlib.import_module(ROLE_ENTRY[args.role])
    return module.run(settings) or 0
