"""Speed and memory targets, each printed next to a baseline measured in the same run.

Run them with `d1 bench NAME` (or `python -m benchmarks.NAME_bench`). Targets live here, never in
timed unit tests, because the hosts are shared and noisy.
"""


def take_arguments(argv: list[str] | None, module: str, suite: str,
                   choices: tuple[str, ...] = ()) -> str | None:
    """The one argument a benchmark takes (one of `choices`), or None; anything else is a
    usage error (exit 2) before anything runs: `--help` or a misspelt section must not start
    a suite of several minutes."""
    import sys
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) > 1 or (args and args[0] not in choices):
        forms = f" [{'|'.join(choices)}]" if choices else ""
        print(f"usage: python -m benchmarks.{module}{forms}  (or `d1 bench {suite}`), not "
              f"{' '.join(args)!r}", file=sys.stderr)
        raise SystemExit(2)
    return args[0] if args else None
