"""Prefect flows: the orchestration layer. They hold no maths: every step calls a plain
bru_core function (bru_core.search, bru_core.aggregate)."""
