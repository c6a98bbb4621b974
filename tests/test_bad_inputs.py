"""Bad inputs through the real command line (issue 10).

Each row of ``CASES`` runs ``python -m dnas_cli.main`` in a fresh working directory that
holds only the case's input files, and must end with: a non-zero exit, a message naming
the offending key, file or line, no Python traceback (nor decoder noise or click's bare
"Aborted!"), and nothing created or removed in the working directory (for a validation
error the ``--out`` directory is never made; a case that ran trials, ``makes_out``, may
make only that one). A case whose input only an unprivileged user can be refused
(a read-only directory) is skipped for root.

All rows run when the module starts, each in a process forked from one that imported
the CLI once (:mod:`tests.cli_runner`); the tests then check one row each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = "tests.core.toy_plugin"
OUT = "out"  # every case's --out, relative to its working directory


@dataclass
class Case:
    name: str
    args: list[str]
    expected: list[str]  # substrings of stderr
    files: dict[str, str | bytes] = field(default_factory=dict)
    modules: str = TOY
    plugins: str = ""
    setup: Callable[[Path], None] | None = None  # makes what the case finds in its directory
    makes_out: bool = False  # the run got as far as its --out (named) directory
    unprivileged: bool = False  # root ignores file modes: the case cannot fail for root


def _toy_registry():
    from dnas_core.plugins.registry import make_registry
    from tests.core import toy_plugin

    return make_registry([toy_plugin], entry_points=False)


def made_study(*sets: str) -> Callable[[Path], None]:
    """A run directory OUT whose study a first ``dnas search --set SETS`` created."""
    def setup(work: Path) -> None:
        from dnas_core.runner.experiment import plan_experiment
        from dnas_core.runner.study import Studies, default_storage

        plan = plan_experiment(_toy_registry(), plugin="toy", overrides=sets)
        (work / OUT).mkdir()
        Studies(default_storage(work / OUT), plan)
    return setup


def stored_study(*sets: str) -> Callable[[Path], None]:
    """``other.db``: the storage of a study a first ``dnas search --set SETS`` created."""
    def setup(work: Path) -> None:
        from dnas_core.runner.experiment import plan_experiment
        from dnas_core.runner.study import Studies

        plan = plan_experiment(_toy_registry(), plugin="toy", overrides=sets)
        Studies(f"sqlite:///{work / 'other.db'}", plan)
    return setup


def trained_with(*sets: str) -> Callable[[Path], None]:
    """A ``dnas train`` directory OUT whose settings were ``--set SETS``."""
    def setup(work: Path) -> None:
        import yaml

        from dnas_core.config.runspec import resolve

        (work / OUT).mkdir()
        spec = resolve(_toy_registry(), "toy", overrides=sets)
        (work / OUT / "config.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return setup


def prepared(edit: Callable[[Path], None] = lambda data: None) -> Callable[[Path], None]:
    """A directory ``data`` made by ``prepare`` (2000 rows), then changed by ``edit``."""
    def setup(work: Path) -> None:
        from dnas_dlrm.data import PrepareOptions, prepare, write_tsv

        prepare(write_tsv(work / "train.txt", 2000, seed=1), work / "data",
                PrepareOptions(hash_size=100))
        edit(work / "data")
    return setup


def manifest_rows(data: Path, rows: int) -> None:
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**manifest, "rows": rows}))


def criteo_text(work: Path, extra: str = "") -> Path:
    """``train.txt``: 200 good Criteo lines, then ``extra``."""
    from dnas_dlrm.data import write_tsv

    path = write_tsv(work / "train.txt", 200, seed=1)
    with path.open("a") as handle:
        handle.write(extra)
    return path


def cut_gzip(work: Path) -> None:
    from dnas_dlrm.data import write_tsv

    whole = write_tsv(work / "whole.txt.gz", 2000, seed=1).read_bytes()
    (work / "whole.txt.gz").unlink()
    (work / "train.txt.gz").write_bytes(whole[:len(whole) // 2])


def read_only(work: Path) -> None:
    (work / "ro").mkdir(mode=0o555)


def toy(*sets: str, more: tuple[str, ...] = ()) -> list[str]:
    args = ["search", "-p", "toy", "-o", OUT, *more]
    for item in sets:
        args += ["--set", item]
    return args


def dlrm(*sets: str) -> list[str]:
    return ["search", "-p", "dlrm", "-o", OUT] + [a for s in sets for a in ("--set", s)]


def prep(*args: str) -> list[str]:
    return ["dlrm", "prepare", *args, "--out", OUT, "--hash-size", "100", "-q"]


DLRM = {"modules": "", "plugins": "dlrm"}
HUGE_FIELD = "0" + "\t1" * 13 + "\t" + "a" * (10 << 20) + "\t" * 25 + "\n"


EXPERIMENT = "plugin: toy\nsupernets:\n  grid:\n    search.total_epochs: [5, 6]\n"
CASES = [
    # item 3: a plugin's `search` does not replace the core's
    Case("plugin-command-clash", toy("train.batch_size=0"),
         ["warning: plugin 'tests.core.clash_plugin': command 'search' not added: the name "
          "is taken by a core command", "--set train.batch_size=0: train.batch_size: must be "
          "'auto' or an integer of at least 1"], modules=f"{TOY},tests.core.clash_plugin"),
    # item 4: validated before anything runs
    Case("batch-size-0", toy("search.batch_size=0"), ["search.batch_size: must be 'auto'"]),
    Case("eval-batch-size-0", toy("train.eval_batch_size=0"),
         ["--set train.eval_batch_size=0: train.eval_batch_size: must be at least 1, got 0"]),
    Case("total-epochs-0", toy("search.total_epochs=0"),
         ["--set search.total_epochs=0: search.total_epochs: must be positive"]),
    Case("warmup-negative", toy("search.warmup_epochs=-1"),
         ["search.warmup_epochs: must lie between 0 and search.total_epochs"]),
    Case("warmup-past-total", toy("search.warmup_epochs=6"),
         ["--set search.warmup_epochs=6: search.warmup_epochs: must lie between 0"]),
    Case("alternate-every-0", toy("search.alternate_every=0"),
         ["search.alternate_every: must be positive"]),
    Case("arch-sampling-empty", toy("search.arch_sampling={}"),
         ["search.arch_sampling: must name at least one amount of architecture epochs"]),
    Case("arch-sampling-past-end", toy("search.arch_sampling={9: 2}"),
         ["search.arch_sampling: key 9.0 must be a positive number of architecture epochs no "
          "larger than the 4 this plan trains"]),
    Case("optimizer-unknown", toy("search.weights_optimizer.name=Adamm"),
         ["search.weights_optimizer.name: unknown optimizer 'Adamm'; expected one of ASGD"]),
    Case("optimizer-bad-args", toy("train.optimizer.args={nesterov_: true}"),
         ["train.optimizer.args: SGD refuses these arguments ({'nesterov_': True})"]),
    Case("nan-coefficient", toy("search.cost.coef=.nan"),
         ["search.cost.coef: expected a number, got NaN"]),
    Case("device-bogus", toy("device=bogus"),
         ["--set device=bogus: device: must be 'auto' or a torch device"]),
    Case("device-missing-gpu", toy("device=cuda:99"),
         ["device: 'cuda:99' is not available here"]),
    Case("devices-missing-gpu", toy(more=("--devices", "7")),
         ["Invalid value for '--devices': GPU 7 is not visible here"]),
    Case("jobs-per-device-0", toy(more=("--jobs-per-device", "0")),
         ["Invalid value for '--jobs-per-device': 0 is not in the range x>=1"]),
    Case("grid-point-bad", ["search", "-e", "exp.yaml", "-o", OUT],
         ["exp.yaml line 7 (grid value 'Adamm'): train.optimizer.name: unknown optimizer"],
         files={"exp.yaml": EXPERIMENT + "architectures:\n  grid:\n"
                                         "    train.optimizer.name: [Adam, Adamm]\n"}),
    Case("range-end-bad", ["search", "-e", "exp.yaml", "-o", OUT],
         ["exp.yaml line 5 (grid value 0): train.eval_batch_size: must be at least 1, got 0"],
         files={"exp.yaml": "plugin: toy\narchitectures:\n  n_trials: 3\n  grid:\n"
                            "    train.eval_batch_size: {low: 0, high: 64, integer: true}\n"}),
    Case("mlp-size-options-empty", dlrm("domain.mlp_size_options=[]"),
         ["--set domain.mlp_size_options=[]: domain.mlp_size_options: must be positive"],
         modules="", plugins="dlrm"),
    # item 7: configuration files
    Case("duplicate-key", toy(more=("-c", "run.yaml")),
         ["run.yaml line 4: invalid YAML: key 'search' is given twice (lines 1 and 4)"],
         files={"run.yaml": "search:\n  total_epochs: 2\nseed: 3\nsearch:\n  warmup_epochs: 1\n"}),
    Case("binary-config", toy(more=("-c", "run.yaml")),
         ["run.yaml: not a YAML file: byte 1 is not UTF-8 text"],
         files={"run.yaml": b"\x00\xff\xfe\x89PNG\r\n"}),
    Case("binary-experiment", ["search", "-e", "exp.yaml", "-o", OUT],
         ["exp.yaml: not a YAML file: byte 0 is not UTF-8 text"],
         files={"exp.yaml": b"\xff\xd8\xff\xe0JFIF"}),
    Case("float-without-dot-accepted", toy(more=("-c", "run.yaml")),
         # train is checked after search: this error means coef: 3e-6 was read as a number
         ["run.yaml line 5: train.epochs: expected an integer, got 'x'"],
         files={"run.yaml": "search:\n  cost:\n    coef: 3e-6\ntrain:\n  epochs: x\n"}),
    Case("grid-value-blames-its-line", ["search", "-e", "exp.yaml", "-o", OUT],
         ["exp.yaml line 4 (grid value 'nope'): search.cost.coef: expected a number"],
         files={"exp.yaml": "plugin: toy\nsupernets:\n  grid:\n    search.cost.coef: [1, nope]\n"}),
    Case("range-low-above-high", ["search", "-e", "exp.yaml", "-o", OUT],
         ["exp.yaml line 5: supernets.grid.search.cost.coef.low: must be below high, got "
          "low=2.0 and high=1.0"],
         files={"exp.yaml": "plugin: toy\nsupernets:\n  n_trials: 2\n  grid:\n"
                            "    search.cost.coef: {low: 2, high: 1}\n"}),
    Case("emb-card-options-blames-itself",
         dlrm("domain.search=[emb_card]") + ["-c", "run.yaml"],
         ["run.yaml line 3: domain.emb_card_options: must be fractions in (0, 1]"],
         files={"run.yaml": "domain:\n  search: [emb_dim]\n  emb_card_options: [2]\n"},
         modules="", plugins="dlrm"),
    # item 9: a run directory made with other settings
    Case("rerun-other-settings", toy("seed=2", "search.cost.coef=0.5"),
         ["this study was made by another experiment (set.search.cost.coef: None then, 0.5 "
          "now; set.seed: 1 then, 2 now)"], setup=made_study("seed=1")),
    Case("retrain-other-settings",
         ["train", "-p", "toy", "--arch", "arch.json", "-o", OUT, "--set", "seed=2"],
         ["out/config.yaml: this run directory was made with other settings (seed: 1 then, 2 "
          "now)"], files={"arch.json": '{"op": "mlp"}'}, setup=trained_with("seed=1")),
    # item 5: --data checked before the run directory exists
    Case("data-not-prepared", dlrm() + ["--data", "notdata"],
         ["domain.data.path: ", "notdata is not a complete prepared dataset: it has no "
          "manifest.json"], setup=lambda work: (work / "notdata").mkdir(), **DLRM),
    Case("data-missing", dlrm() + ["--data", "nothere"],
         ["nothere: no such prepared data directory"], **DLRM),
    Case("data-truncated-array", dlrm() + ["--data", "data"],
         ["data/dense.npy: 1,000 bytes, expected 104,128 for float32 (2000, 13) (truncated"],
         setup=prepared(lambda data: os.truncate(data / "dense.npy", 1000)), **DLRM),
    Case("data-empty-array", dlrm() + ["--data", "data"],
         ["data/sparse.npy: not a readable .npy array (0 bytes)"],
         setup=prepared(lambda data: os.truncate(data / "sparse.npy", 0)), **DLRM),
    Case("data-zero-rows", dlrm() + ["--data", "data"],
         ["data/manifest.json: the data set has no rows"],
         setup=prepared(lambda data: manifest_rows(data, 0)), **DLRM),
    Case("data-rows-not-the-manifests", dlrm() + ["--data", "data"],
         ["data/labels.npy: holds float32 (2000,), the manifest says float32 (1999,)"],
         setup=prepared(lambda data: manifest_rows(data, 1999)), **DLRM),
    Case("data-array-missing", dlrm() + ["--data", "data"],
         ["incomplete prepared dataset, missing ['labels.npy']"],
         setup=prepared(lambda data: (data / "labels.npy").unlink()), **DLRM),
    Case("data-manifest-garbage", dlrm() + ["--data", "data"],
         ["data/manifest.json: unreadable manifest"],
         setup=prepared(lambda data: (data / "manifest.json").write_text("{oops")), **DLRM),
    Case("train-data-not-prepared",
         ["train", "-p", "dlrm", "--arch", "arch.json", "-o", OUT, "--data", "notdata"],
         ["notdata is not a complete prepared dataset"], files={"arch.json": "{}"},
         setup=lambda work: (work / "notdata").mkdir(), **DLRM),
    # item 6: prepare's inputs
    Case("prepare-empty-input", prep("empty.txt"),
         ["no rows to prepare: the input (empty.txt) holds no lines"], files={"empty.txt": ""},
         **DLRM),
    Case("prepare-every-line-bad", prep("junk.txt", "--on-bad-line", "skip"),
         ["no rows to prepare: every one of the 2 lines of junk.txt is bad and was skipped "
          "(the first: junk.txt, line 1, field I1"], files={"junk.txt": "junk\nmore junk\n"},
         **DLRM),
    Case("prepare-subsample-keeps-none", prep("train.txt", "--subsample", "0.0001"),
         ["no rows to prepare: subsample (--subsample) 0.0001 kept none of the 200 good lines"],
         setup=criteo_text, **DLRM),
    Case("prepare-10mb-field", prep("train.txt"),
         ["bad line in train.txt, line 201, field C1: a value of 10,485,760 bytes"],
         setup=lambda work: criteo_text(work, HUGE_FIELD) and None, **DLRM),
    Case("prepare-cut-gzip", prep("train.txt.gz"),
         ["train.txt.gz: the gzip data is cut short or damaged"], setup=cut_gzip, **DLRM),
    Case("prepare-binary-junk", prep("junk.bin", "--on-bad-line", "skip"),
         ["every one of the", "junk.bin, line 1, field line: binary data (a NUL byte)"],
         files={"junk.bin": bytes(range(256)) * 64 + b"\n\xb5\x8e\x00" * 50}, **DLRM),
    Case("prepare-same-input-twice", prep("train.txt", "./train.txt"),
         ["input train.txt is given twice (inputs 1 and 2 are the same file)"],
         setup=criteo_text, **DLRM),
    # item 8: a sentence, not a traceback
    Case("out-under-a-file", ["search", "-p", "toy", "-o", "afile/out"],
         ["afile/out: cannot create the run directory: Not a directory"],
         files={"afile": "x"}),
    Case("train-out-under-a-file", ["train", "-p", "toy", "--arch", "arch.json", "-o", "afile/out"],
         ["afile/out: cannot create the run directory: Not a directory"],
         files={"afile": "x", "arch.json": '{"op": "mlp"}'}),
    Case("out-read-only", ["search", "-p", "toy", "-o", "ro/out"],
         ["ro/out: cannot create the run directory: Permission denied"], setup=read_only,
         unprivileged=True),
    Case("storage-unknown-scheme", toy(more=("--storage", "bogus://x")),
         ["storage bogus://x: unknown database 'bogus'"]),
    Case("storage-not-a-url", toy(more=("--storage", "notaurl")),
         ["storage notaurl: not a storage URL; expected sqlite:///PATH"]),
    Case("storage-sqlite-no-directory", toy(more=("--storage", "sqlite:///nodir/x.db")),
         ["storage sqlite:///nodir/x.db: no directory nodir for the database file"]),
    Case("storage-journal-no-directory", toy(more=("--storage", "journal:nodir/x.log")),
         ["storage journal:nodir/x.log: journal: needs a file in an existing directory"]),
    Case("storage-not-a-database", toy(more=("--storage", "sqlite:///not.db")),
         ["sqlite:///not.db: cannot open the storage: DatabaseError: (sqlite3.DatabaseError) "
          "file is not a database"], files={"not.db": "not a database\n" * 100}),
    Case("storage-of-another-experiment", toy("seed=2", more=("--storage", "sqlite:///other.db")),
         ["sqlite:///other.db: this study was made by another experiment (set.seed: 1 then, 2 "
          "now)"], setup=stored_study("seed=1")),
    Case("worker-missing-path", ["worker", "nothere"],
         ["nothere: no such run directory, and not a storage URL"]),
    Case("worker-out-under-a-file",
         ["worker", "sqlite:///other.db", "-o", "afile/out", "--devices", "cpu"],
         ["afile/out: cannot create the run directory: Not a directory"], files={"afile": "x"},
         setup=stored_study()),
    Case("worker-bogus-url", ["worker", "bogus://x"], ["storage bogus://x: unknown database"]),
    Case("baseline-contradiction", toy(more=("--baseline", "tpe", "--no-baseline")),
         ["--no-baseline contradicts --baseline tpe"]),
    Case("baseline-unknown", toy(more=("--baseline", "grid")),
         ["Invalid value for '--baseline': 'grid' is not one of 'random', 'tpe', "
          "'random,tpe', 'none'"]),
    Case("every-trial-fails", toy("search.cost.terms={latency: 1}", more=("--no-baseline",)),
         ["Error: no searched architecture finished training (1 trials failed, 0 diverged); "
          "first: supernets/0: failed: exit 1: ", "unknown cost 'latency'",
          "(log: out/trials/supernet-"], makes_out=True),
]


#: the cases this user can run (root writes into read-only directories)
RUN = [c for c in CASES if not (c.unprivileged and os.geteuid() == 0)]


def _tree(root: Path, skip: str | None = None) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if skip is None or p.relative_to(root).parts[0] != skip}


def _prepare(case: Case, work: Path) -> None:
    work.mkdir()
    for name, content in case.files.items():
        path = work / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    if case.setup is not None:
        case.setup(work)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case's (exit code, stderr, files before, files after)."""
    base = tmp_path_factory.mktemp("bad")
    jobs, before = [], {}
    for case in RUN:
        work = base / case.name
        _prepare(case, work)
        before[case.name] = _tree(work)
        env = {**os.environ, "DNAS_PLUGINS": case.plugins, "DNAS_PLUGIN_MODULES": case.modules,
               "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
        jobs.append({"args": case.args, "cwd": str(work), "env": env,
                     "stdout": str(base / f"{case.name}.out"),
                     "stderr": str(base / f"{case.name}.err")})
    done = subprocess.run([sys.executable, "-m", "tests.cli_runner"], input=json.dumps(jobs),
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    codes = json.loads(done.stdout)
    return {case.name: (code, (base / f"{case.name}.err").read_text(), before[case.name],
                        _tree(base / case.name, OUT if case.makes_out else None))
            for case, code in zip(RUN, codes, strict=True)}


def test_the_cases_have_distinct_names():
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_input_is_refused_with_a_named_error(outcomes, case):
    if case not in RUN:
        pytest.skip("root may write into a read-only directory")
    code, stderr, before, after = outcomes[case.name]
    assert code != 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    for expected in case.expected:
        assert expected in stderr, stderr[-2000:]
    assert after == before  # nothing made, removed or grown here (no --out for a bad input)
    assert "Exception ignored" not in stderr and "Aborted!" not in stderr, stderr[-2000:]
