"""Runs many ``dnas`` command lines, each in its own forked process, for the CLI tests.

    python -m tests.cli_runner < cases.json > results.json

Importing torch, optuna and the CLI costs ~2 s a process, which a table of a few dozen
bad inputs cannot afford. This process imports them once, then forks one child per case:
the child changes to the case's directory, takes its environment (plugins are loaded
there, not here: ``DNAS_PLUGINS`` and ``DNAS_PLUGIN_MODULES`` differ between cases) and
runs the real entry point, ``dnas_cli.main:main``, with its stdout and stderr in files;
a case still running after its ``timeout`` seconds is killed (exit code -14).
An exception that escapes is printed as the interpreter would print it, so a traceback
shows up on stderr exactly as in ``python -m dnas_cli.main``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

import dnas_cli.main
import dnas_core.runner.experiment  # noqa: F401 - imported once here, for every child
import dnas_core.runner.orchestrate  # noqa: F401


def _child(case: dict) -> None:
    os.chdir(case["cwd"])
    os.environ.clear()
    os.environ.update(case["env"])
    out = os.open(case["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(case["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.argv = ["dnas", *case["args"]]
    # a bad input that is accepted starts a search: stop it (SIGALRM ends the child)
    signal.alarm(int(case.get("timeout", 60)))
    code = 0
    try:
        dnas_cli.main.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter would print
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    cases = json.load(sys.stdin)
    codes = []
    for case in cases:
        pid = os.fork()
        if pid == 0:
            _child(case)
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    json.dump(codes, sys.stdout)


if __name__ == "__main__":
    main()
