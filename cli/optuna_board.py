"""The optuna-dashboard process ``dnas dashboard`` starts: ``python -m dnas_cli.optuna_board
URL HOST PORT``. It opens the storage as dnas does, so ``journal:PATH`` runs work too."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from optuna_dashboard import run_server

    from dnas_core.runner.study import open_storage

    url, host, port = argv
    run_server(open_storage(url), host=host, port=int(port))


if __name__ == "__main__":
    main(sys.argv[1:])
