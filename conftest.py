"""Root pytest configuration: keep fixture adapters (which crash on purpose) out of doctest
collection; they are loaded by the tests that need them."""

collect_ignore_glob = ["tests/harness/fixtures/*", "examples/*", "benchmarks/*"]
