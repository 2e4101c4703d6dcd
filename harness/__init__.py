"""The machine that judges candidates: adapters, strategies, checks, grading, reports, CLI."""
