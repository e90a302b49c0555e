"""`torchrun ... -m train --recipe mlp [overrides]`: parse, build, run, tear down."""
from __future__ import annotations

import argparse
import sys

from train.errors import UsageError


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m train", description="Train under DDP and measure the network.")
    p.add_argument("--recipe", help="named recipe shipped with gradwire (mlp, lstm, transformer)")
    p.add_argument("--config", help="a TOML file merged over the recipe")
    p.add_argument("--run-dir", help="run folder (default runs/<model>-<timestamp>)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.name=rmsprop train.steps=200")
    return p.parse_intermixed_args(argv)  # overrides may come before or after the options


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from train.config import load_config
        from train.build import prepare
        cfg = load_config(args.recipe or ("mlp" if not args.config else None), args.config, args.overrides)
        prepared = prepare(cfg, args.run_dir)
    except UsageError as e:
        if args.debug:
            raise
        print(f"gradwire: error: {e}", file=sys.stderr)
        return 2
    from train.run import run
    return run(prepared, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
