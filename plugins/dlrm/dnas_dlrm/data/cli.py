"""``dnas dlrm prepare``: the click command over :func:`.prepare.prepare`.

Also runnable alone: ``python -m dnas_dlrm.data.cli INPUT... --out DIR``.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

from .criteo import BadLineError
from .linereader import CorruptInput
from .manifest import ManifestError
from .prepare import PrepareError, PrepareOptions, prepare
from .prepare_progress import prepare_progress
from .schema import NUM_SPARSE


def _parse_hash_sizes(values: tuple[str, ...]) -> tuple[int | None, dict[str, int] | list[int]]:
    """``--hash-size`` values: ``N`` (all features), ``C3=N`` (one), or 26 comma-separated."""
    global_size: int | None = None
    per_feature: dict[str, int] = {}
    listed: list[int] | None = None

    def number(text: str) -> int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise click.BadParameter(f"{text!r} is not an integer",
                                     param_hint="--hash-size") from None

    for value in values:
        if "=" in value:
            name, size = value.split("=", 1)
            per_feature[name.strip()] = number(size)
        elif "," in value:
            parts = [p for p in value.split(",")]
            if len(parts) != NUM_SPARSE:
                raise click.BadParameter(f"a comma list needs {NUM_SPARSE} sizes, got "
                                         f"{len(parts)}", param_hint="--hash-size")
            listed = [number(p) for p in parts]
        else:
            global_size = number(value)
    if listed is not None:
        if per_feature:
            raise click.BadParameter("give either a comma list of 26 sizes or C<j>=N "
                                     "entries, not both", param_hint="--hash-size")
        return global_size, listed
    return global_size, per_feature


class _Fraction(click.ParamType):
    """A fraction written as a decimal (``0.1``) or a ratio (``1/14``)."""

    name = "fraction"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return float(Fraction(str(value).replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a fraction (write 0.1 or 1/14)", param, ctx)


@click.command("prepare")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (must not exist, unless --overwrite).")
@click.option("--hash-size", "hash_size", multiple=True, metavar="N|Cj=N|N1,...,N26",
              help="Hash categorical values into tables of N rows: one N for all features, "
                   "Cj=N for one feature (repeatable), or 26 comma-separated sizes. "
                   "Features without a size use a vocabulary built on the training rows.")
@click.option("--min-count", default=1, show_default=True, type=int,
              help="Vocabulary mode: values seen fewer times in training share row 1.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the splits, the subsample and negative downsampling.")
@click.option("--arch-fraction", default=0.2, show_default=True, type=float,
              help="Fraction of the training rows that train the architecture parameters.")
@click.option("--split", "split", type=click.Choice(["random", "position", "day"]),
              default=None, help="random (default, the paper's): first 6/7 of the rows train, "
              "the rest shuffled and halved into validation/test. position: file order, train "
              "then --val-fraction then --test-fraction of the rows. day: every input but "
              "--eval-file trains; --eval-file (the last input) is halved into validation/test.")
@click.option("--split-by-day", is_flag=True, help="Same as --split day.")
@click.option("--val-fraction", type=_Fraction(), default=None,
              help="--split position: share of the rows for validation (default 0.1; 1/14 "
                   "accepted).")
@click.option("--test-fraction", type=_Fraction(), default=None,
              help="--split position: share of the rows for test, the last ones (default 0.1).")
@click.option("--eval-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="--split day: the input (the last day) that becomes "
                                 "validation and test.")
@click.option("--subsample", default=1.0, show_default=True, type=float,
              help="Keep this fraction of lines (seeded, per line).")
@click.option("--negative-rate", default=None, type=float,
              help="Keep training negatives with this probability (recorded; correct "
                   "predictions with correct_downsampled).")
@click.option("--on-bad-line", type=click.Choice(["error", "skip"]), default="error",
              show_default=True, help="Stop at a malformed line, or skip and list it.")
@click.option("--allow-short-lines", is_flag=True,
              help="Accept lines whose trailing empty fields were stripped.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--split-storage", type=click.Choice(["auto", "indices", "ranges"]),
              default="auto", show_default=True,
              help="indices: each split as sorted row indices (8 bytes a row). ranges: each "
                   "split described by a row range and a per-row hash in the manifest, "
                   "streamed by the loader (for the Terabyte logs). auto: ranges above "
                   "250 million rows unless --negative-rate is given.")
@click.option("--sparse-dtype", type=click.Choice(["auto", "int32", "int64"]), default="auto",
              show_default=True, help="Integer type of the stored ids.")
@click.option("--chunk-mb", default=16, show_default=True, type=int,
              help="Bytes of text parsed at a time (MiB).")
@click.option("--single-thread", is_flag=True, help="Parse on one core only.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def prepare_command(inputs: tuple[Path, ...], out_dir: Path, hash_size: tuple[str, ...],
                    min_count: int, seed: int, arch_fraction: float, split: str | None,
                    split_by_day: bool, val_fraction: float | None, test_fraction: float | None,
                    eval_file: Path | None, subsample: float, negative_rate: float | None,
                    on_bad_line: str, allow_short_lines: bool, overwrite: bool,
                    split_storage: str, sparse_dtype: str,
                    chunk_mb: int, single_thread: bool, quiet: bool) -> None:
    """Prepare Criteo text files (Kaggle train.txt or 1TB day_N, plain or gzip) for DLRM.

    INPUT files are read in the order given, which must be time order.
    """
    global_size, per_feature = _parse_hash_sizes(hash_size)
    if split_by_day and split not in (None, "day"):
        raise click.UsageError(f"--split-by-day (the same as --split day) contradicts "
                               f"--split {split}")
    try:
        options = PrepareOptions(
            hash_size=global_size, hash_sizes=per_feature or None, min_count=min_count,
            seed=seed, arch_fraction=arch_fraction,
            split="day" if split_by_day else (split or "random"),  # type: ignore[arg-type]
            val_fraction=val_fraction, test_fraction=test_fraction, eval_file=eval_file,
            subsample=subsample, negative_rate=negative_rate,
            on_bad_line=on_bad_line,  # type: ignore[arg-type]
            allow_short_lines=allow_short_lines, overwrite=overwrite,
            sparse_dtype=sparse_dtype,  # type: ignore[arg-type]
            split_storage=split_storage,  # type: ignore[arg-type]
            chunk_bytes=chunk_mb << 20, use_threads=not single_thread)
    except PrepareError as error:
        raise click.UsageError(str(error)) from None
    try:
        with prepare_progress(quiet) as progress:
            manifest = prepare(list(inputs), out_dir, options, progress=progress,
                               notes=lambda text: click.echo(text, err=True))
    except (PrepareError, BadLineError, ManifestError, CorruptInput) as error:
        raise click.ClickException(str(error)) from None
    if not quiet:
        sizes = ", ".join(f"{k} {v:,}" for k, v in manifest.split_sizes.items())
        storage = "ranges" if manifest.ranges else "indices"
        click.echo(f"prepared {manifest.rows:,} rows into {out_dir} in {manifest.elapsed_s:.1f} s "
                   f"({manifest.split['protocol']} split, {storage}: "
                   f"{sizes}); bad lines: "
                   f"{manifest.bad_lines['count']:,}", err=True)


if __name__ == "__main__":
    prepare_command(sys.argv[1:])
