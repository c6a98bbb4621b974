"""The search engine: everything one search needs, with no processes or studies.

Gumbel-softmax sampling, the supernet base and its decisions, cost models and the
cost-aware loss, latency tables, the chunk plan and temperature schedule, optimizers,
the data contract and resumable batch sources, the search manager, sampled-architecture
training, tasks and metrics, checkpoints and TensorBoard logging.
"""
