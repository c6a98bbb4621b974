"""Configuration: YAML and ``--set`` overrides validated once into typed settings.

The validator (file, line and key in every error), the core's settings dataclasses, and
the merge of defaults, domain YAML, preset, user file and overrides into one run's spec.
"""
