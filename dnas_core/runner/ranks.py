"""``torchrun`` for a distributed trial, keeping the pool's exit-code protocol.

    python -m dnas_core.runner.ranks --standalone --nproc_per_node N -m dnas_core.runner.worker ...

takes torchrun's own arguments and runs it in this process; torchrun itself ends with
status 1 whenever a rank fails, which would turn a rank's out-of-memory (75), final
divergence (76) or pruning (77) into a plain failure. Here the first of those codes that
any failed rank exited with becomes the trial's status, so the pool requeues or
classifies a distributed trial as it does a single-process one.
"""

from __future__ import annotations

import sys

from dnas_core.runner.jobs import EXIT_NONFINITE, EXIT_OOM, EXIT_PRUNED

#: the rank exit codes that mean something to the pool, most telling first
PROTOCOL = (EXIT_OOM, EXIT_NONFINITE, EXIT_PRUNED)


def status_of(exit_codes: list[int]) -> int:
    """The trial's status from its failed ranks' exit codes (signals are negative)."""
    for code in PROTOCOL:
        if code in exit_codes:
            return code
    return 1


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as exc:
        print(exc, file=sys.stderr, flush=True)
        return status_of([failure.exitcode for failure in exc.failures.values()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
