"""``python -m lightning_modules.analysis COMMAND ...``: one entry point for every analysis command."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command -> module with add_arguments(parser) and run(args)
COMMANDS = {
    "words": "lightning_modules.analysis.words",
    "abx": "lightning_modules.analysis.abx",
    "boundaries": "lightning_modules.analysis.boundaries",
    "localization": "lightning_modules.analysis.localization",
    "keywords": "lightning_modules.analysis.keywords",
}


def main(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m lightning_modules.analysis",
                                     description="Analyses of trained VGS-Lightning models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        sub = commands.add_parser(name, help=(module.__doc__ or "").strip().split("\n")[0],
                                  description=module.__doc__)
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    return modules[args.command].run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
