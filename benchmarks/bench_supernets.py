"""Training throughput of each DLRM supernet against the plain DLRM of its largest shapes.

One run prints samples/second (forward + backward + SGD step, sparse embedding gradients,
weights phase: theta frozen, Gumbel-soft sampling) for:

* emb_dim supernet vs plain DLRM with every table at the largest width;
* the cardinality candidates' lookups alone (forward, backward, sparse SGD step) in three
  layouts: one fused table with ``embedding_bag`` + per-sample weights (what the package
  uses), one fused table with ``embedding`` + a batched weighted sum, and one separate
  table per feature and option (the paper's layout), against the plain fused table;
* emb_card supernet vs plain DLRM with full tables (``--card-variants``: also whole
  supernets with the two other layouts);
* FC-of-FC MLP supernet vs plain DLRM with the largest MLPs, and the ratio of the measured
  time per example to what the operators' FLOPs predict:
  (t_super / t_plain) x (FLOPs_plain / FLOPs_super), 1.0 = no overhead beyond FLOPs;
* the joint supernet (all four parts) vs plain with the largest of everything (its
  time/FLOPs ratio also carries the embedding search's extra lookups, which FLOPs ignore).

Timings interleave the two models' steps and keep each one's fastest step, so that other
processes on a shared machine disturb the ratios as little as possible.

Shapes follow the paper's Table II; cardinalities are Criteo Kaggle's, capped at
``--max-rows`` (default 20,000) so that the run fits in memory. Ids are random.

    python benchmarks/bench_supernets.py [--batch 2048] [--steps 6] [--mlp-steps 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from dnas_dlrm.models import build_sampled, build_supernet
from dnas_dlrm.models.backbone import FusedEmbedding, init_embedding_rows, module_flops
from dnas_dlrm.models.emb_card import HashedEmbeddings, hash_sizes
from dnas_dlrm.models.fcfc import FcOfFc
from dnas_dlrm.settings import DlrmSettings

KAGGLE = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
          27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
N_DENSE = 13
BIG = [1024, 1024, 1024]


class SeparateHashedEmbeddings(nn.Module):
    """The paper's layout: one nn.Embedding per feature and candidate hash size."""

    def __init__(self, rows: list[int], fractions: list[float], dim: int, sparse: bool):
        super().__init__()
        self.sizes = hash_sizes(rows, fractions)
        self.tables = nn.ModuleList(nn.Embedding(h, dim, sparse=sparse)
                                    for feature in self.sizes for h in feature)
        for table, h in zip(self.tables, [h for f in self.sizes for h in f]):
            init_embedding_rows(table.weight, [h])
        self.dim, self.n_options = dim, len(fractions)

    def forward(self, ids: Tensor, weights: Tensor) -> Tensor:
        out = []
        for j, feature in enumerate(self.sizes):
            mixed = 0
            for o, h in enumerate(feature):
                table = self.tables[j * self.n_options + o]
                mixed = mixed + table(ids[:, j] % h) * weights[:, j, o:o + 1]
            out.append(mixed)
        return torch.stack(out, dim=1)


def settings_for(space: str, max_rows: int | None) -> DlrmSettings:
    if space == "emb_dim":
        return DlrmSettings(search=["emb_dim"], max_rows=max_rows, bottom_mlp=BIG, top_mlp=BIG)
    if space == "emb_card":
        return DlrmSettings(search=["emb_card"], embedding_dim=32, max_rows=max_rows,
                            bottom_mlp=BIG, top_mlp=BIG)
    if space == "mlp":
        return DlrmSettings(search=["bottom_mlp", "top_mlp"], embedding_dim=32,
                            max_rows=max_rows)
    return DlrmSettings(search=["emb_dim", "emb_card", "bottom_mlp", "top_mlp"],
                        max_rows=max_rows)


def largest_spec(supernet: nn.Module, settings: DlrmSettings) -> dict:
    """The spec of the plain DLRM with the supernet's largest option everywhere."""
    n = supernet.n_sparse
    width = supernet.width
    spec = {"emb_dims": [width] * n, "hash_sizes": list(supernet.rows)}
    for part, module in (("bottom_mlp", supernet.bottom_mlp), ("top_mlp", supernet.top_mlp)):
        if isinstance(module, FcOfFc):
            big = max(module.sizes)
            spec[part] = [module.n_in, *[big] * module.n_node_layers, module.n_out]
        else:
            spec[part] = list(module.sizes)
    return spec


def make_batch(batch: int, rows: list[int], seed: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
    gen = torch.Generator().manual_seed(seed)
    dense = torch.rand(batch, N_DENSE, generator=gen) * 5
    sparse = torch.stack([torch.randint(0, c, (batch,), generator=gen) for c in rows], dim=1)
    labels = (torch.rand(batch, generator=gen) < 0.25).float()
    return (dense, sparse), labels


class Trainer:
    """Full SGD training steps of one model on a few pre-made batches."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], batch: int,
                 rows: list[int], lr: float = 0.1):
        self.model, self.batch = model, batch
        self.optimizer = torch.optim.SGD(params, lr=lr)
        self.batches = [make_batch(batch, rows, seed) for seed in range(4)]
        self.loss_fn = nn.BCELoss()
        self.calls = 0

    def step(self) -> float:
        """One step (forward, backward, optimizer); returns its wall time in seconds."""
        inputs, labels = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        self.model.train()
        start = time.perf_counter()
        loss = self.loss_fn(self.model(inputs), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def supernet_trainer(supernet, batch: int, rows: list[int]) -> Trainer:
    """Weights phase as the search runs it: theta frozen, per-example Gumbel weights."""
    supernet.sample_soft(1.0, torch.Generator().manual_seed(0))
    for p in supernet.arch_parameters():
        p.requires_grad_(False)
    return Trainer(supernet, supernet.weight_parameters(), batch, rows)


def paired_throughput(a: Trainer, b: Trainer, warmup: int, steps: int) -> tuple[float, float]:
    """Samples/s of two models, their steps interleaved and each timed by its fastest step:
    other processes on a shared machine only ever slow a step down, so the minimum is the
    least disturbed estimate, and interleaving exposes both models to the same load."""
    for _ in range(warmup):
        a.step()
        b.step()
    times_a, times_b = [], []
    for _ in range(steps):
        times_a.append(a.step())
        times_b.append(b.step())
    return a.batch / min(times_a), b.batch / min(times_b)


def compare(space: str, args, swap: Callable[[nn.Module], None] | None = None,
            label: str | None = None) -> tuple[float, float, nn.Module, nn.Module]:
    torch.manual_seed(0)
    settings = settings_for(space, args.max_rows)
    supernet = build_supernet(settings, KAGGLE, N_DENSE)
    if swap is not None:
        swap(supernet)
    plain = build_sampled(settings, largest_spec(supernet, settings), KAGGLE, N_DENSE)
    rows = list(supernet.rows)
    steps = args.mlp_steps if space in ("mlp", "joint") else args.steps
    super_sps, plain_sps = paired_throughput(
        supernet_trainer(supernet, args.batch, rows),
        Trainer(plain, list(plain.parameters()), args.batch, rows), args.warmup, steps)
    name = label or space
    print(f"{name:<28} supernet {super_sps:9.0f} /s   plain {plain_sps:9.0f} /s   "
          f"ratio {super_sps / plain_sps:5.2f}x", flush=True)
    return super_sps, plain_sps, supernet, plain


class TableTrainer:
    """Embedding lookups alone: forward, backward of a weighted sum, sparse SGD step."""

    def __init__(self, module: nn.Module, rows: list[int], batch: int, hashed: bool):
        self.module, self.batch, self.hashed = module, batch, hashed
        self.optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(0)
        self.ids = [torch.stack([torch.randint(0, c, (batch,), generator=gen) for c in rows], 1)
                    for _ in range(4)]
        n_options = getattr(module, "n_options", 1)
        self.weights = torch.softmax(torch.randn(batch, len(rows), n_options, generator=gen), -1)
        self.calls = 0

    def step(self) -> float:
        ids = self.ids[self.calls % len(self.ids)]
        self.calls += 1
        start = time.perf_counter()
        out = self.module(ids, self.weights) if self.hashed else self.module(ids)
        self.optimizer.zero_grad(set_to_none=True)
        out.sum().backward()
        self.optimizer.step()
        return time.perf_counter() - start


def lookups_only(args) -> None:
    """The cardinality candidates' lookups alone (no MLPs), where layouts differ most."""
    rows = [min(c, args.max_rows) if args.max_rows else c for c in KAGGLE]
    fractions = [1.0, 0.1, 0.01, 0.001]
    torch.manual_seed(0)
    plain = TableTrainer(FusedEmbedding(rows, 32, True), rows, args.batch, hashed=False)
    variants = {
        "fused, embedding_bag": HashedEmbeddings(rows, fractions, 32, True, mode="bag"),
        "fused, gather + bmm": HashedEmbeddings(rows, fractions, 32, True, mode="gather"),
        "separate tables": SeparateHashedEmbeddings(rows, fractions, 32, True),
    }
    trainers = {k: TableTrainer(m, rows, args.batch, hashed=True) for k, m in variants.items()}
    everything = {"plain": plain, **trainers}
    for trainer in everything.values():
        for _ in range(2):
            trainer.step()
    times: dict[str, list[float]] = {k: [] for k in everything}
    for _ in range(args.lookup_steps):
        for name, trainer in everything.items():
            times[name].append(trainer.step())
    base = min(times["plain"])
    print(f"{'emb_card lookups only':<28} plain fused table {base * 1e3:6.1f} ms/step", flush=True)
    for name in trainers:
        best = min(times[name])
        print(f"{'':<28} {name:<22} {best * 1e3:6.1f} ms/step ({best / base:4.2f}x plain)",
              flush=True)


def fcfc_flops(module: nn.Module) -> int:
    """Per-example forward FLOPs of every FC operator of an MLP part."""
    return module_flops(module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model")
    parser.add_argument("--mlp-steps", type=int, default=3,
                        help="timed steps per model for the (slow) FC-of-FC spaces")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lookup-steps", type=int, default=30,
                        help="timed steps of the lookup-only comparison")
    parser.add_argument("--max-rows", type=int, default=20_000)
    parser.add_argument("--spaces", default="emb_dim,emb_card,mlp,joint")
    parser.add_argument("--card-variants", action="store_true",
                        help="also train whole models with the slower cardinality layouts")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"fastest of {args.steps} ({args.mlp_steps} for mlp/joint) interleaved steps after "
          f"{args.warmup} warm-up, max_rows {args.max_rows}", flush=True)
    spaces = args.spaces.split(",")
    if "emb_dim" in spaces:
        compare("emb_dim", args)
    if "emb_card" in spaces:
        def variant(kind: str) -> Callable[[nn.Module], None]:
            def swap(supernet: nn.Module) -> None:
                old = supernet.embeddings.tables
                fractions = supernet.settings.emb_card_options
                if kind == "separate":
                    new = SeparateHashedEmbeddings(supernet.rows, fractions, old.dim, True)
                else:
                    new = HashedEmbeddings(supernet.rows, fractions, old.dim, True, mode=kind)
                supernet.embeddings.tables = new
            return swap
        lookups_only(args)
        compare("emb_card", args, variant("bag"), "emb_card (fused, bag)")
        if args.card_variants:
            compare("emb_card", args, variant("gather"), "emb_card (fused, gather)")
            compare("emb_card", args, variant("separate"), "emb_card (separate tables)")
    for space in ("mlp", "joint"):
        if space not in spaces:
            continue
        super_sps, plain_sps, supernet, plain = compare(space, args)
        super_flops = fcfc_flops(supernet.bottom_mlp) + fcfc_flops(supernet.top_mlp)
        plain_flops = module_flops(plain.bottom_mlp) + module_flops(plain.top_mlp)
        predicted = plain_flops / super_flops
        print(f"{'':<28} MLP FLOPs/example: supernet {super_flops / 1e6:.1f} M (all operators), "
              f"plain {plain_flops / 1e6:.1f} M; time/FLOPs ratio "
              f"{(plain_sps / super_sps) / (super_flops / plain_flops):.2f} "
              f"(speed predicted by FLOPs {predicted:.2f}x, measured "
              f"{super_sps / plain_sps:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
