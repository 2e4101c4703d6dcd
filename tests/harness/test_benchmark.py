"""The benchmark's correctness figures (never its times): the planted softmax-Jacobian
error is caught by xentcheck's derivative check, and the unplanted one is not, through
the same code path ``benchmarks/run.py`` reports from."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")


def _benchmark() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("xentcheck_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_planted_jacobian_error_is_caught() -> None:
    bench = _benchmark()
    planted = bench.planted_jacobian(1e-3)
    assert planted["planted_jacobian_error_caught"] is True, planted
    clean = bench.planted_jacobian(0.0)
    assert clean["planted_jacobian_error_caught"] is False, clean
    assert clean["planted_jacobian_grade"] in ("exact", "faithful", "ulp≤N", "stable")


def test_table_marks_goals() -> None:
    bench = _benchmark()
    text = bench.table({"main_job_seconds": 75.0, "fast_reference_max_ulp_vs_gold": 4e-4,
                        "gold_log_softmax_elements_per_s": 40000})
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert lines["main_job_seconds"].rstrip().endswith("NO")
    assert lines["fast_reference_max_ulp_vs_gold"].rstrip().endswith("yes")
    assert "<=" not in lines["gold_log_softmax_elements_per_s"]


def test_llm_batch_figures_on_a_small_batch() -> None:
    """The LLM batch's code path end to end on (16, 256): every figure present, the run
    over the file ended with a verdict (``_run_tree`` exits otherwise); never its times."""
    bench = _benchmark()
    figures = bench.llm_batch(16, 256, repeats=1, growth=False)
    assert figures["llm_batch_shape"] == [16, 256]
    assert figures["llm_batch_seconds"] > 0 and figures["llm_batch_peak_mb"] > 0
    assert figures["llm_batch_torch_seconds"] > 0
    assert figures["llm_batch_ratio_vs_candidate"] > 0
    # torch timed again in fresh processes, and the ratio's range over every timing
    apart = figures["llm_batch_torch_seconds_apart"]
    assert len(apart) == bench.TORCH_PROCESSES and all(t > 0 for t in apart)
    low, high = figures["llm_batch_ratio_range"]
    assert 0 < low <= figures["llm_batch_ratio_vs_candidate"] <= high
    # the proportional size counts shared pages once: never above the summed resident size
    assert 0 < figures["llm_batch_peak_mb"] <= figures["llm_batch_peak_rss_mb"]
    assert figures["llm_batch_verdict"] in ("conformant", "not conformant")


def test_a_measured_time_comes_from_an_unobserved_run(tmp_path: Path) -> None:
    """``_measured`` times one run alone and samples a second's memory: the first run's
    output comes back, the peak is the second's; runs that end differently stop it."""
    import sys

    bench = _benchmark()
    runs = tmp_path / "runs"
    code = ("import sys, time; f = open(sys.argv[1], 'a'); f.write('x'); f.close(); "
            "n = len(open(sys.argv[1]).read()); held = bytearray(80 << 20); "
            "time.sleep(0.7 if n == 2 else 0); print(n); sys.exit(int(sys.argv[2]) * n)")
    seconds, (rss, pss), done = bench._measured([sys.executable, "-c", code, str(runs), "0"])
    assert runs.read_text() == "xx" and done.stdout.strip() == "1" and seconds > 0
    assert 80 <= pss <= rss  # the sampled run held 80 MB for 0.7 s
    runs.unlink()
    with pytest.raises(SystemExit, match="two runs ended differently"):
        bench._measured([sys.executable, "-c", code, str(runs), "1"])  # exits 1, then 2


def test_the_figures_name_the_machine() -> None:
    """The ratios against NumPy depend on its SIMD code: every run records the CPU, what
    NumPy dispatches to and mpmath's backend beside the figures."""
    figures = _benchmark().machine()
    assert figures["machine_cpus"] >= 1 and figures["machine_cpu"]
    assert isinstance(figures["machine_numpy_simd"], list)
    assert figures["machine_mpmath_backend"] in ("gmpy", "python", "sage")
    assert len(figures["machine_load_average_start"]) == 3
