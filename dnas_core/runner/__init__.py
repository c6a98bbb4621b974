"""The experiment runner: many trials of the engine, each in its own process.

Experiment files and their grids, the Optuna studies that hold the trials, the GPU-aware
trial pool (placement, process lifecycle, outcomes), the worker that runs one trial, the
pipeline of one trial, the coordinator and the report.
"""
