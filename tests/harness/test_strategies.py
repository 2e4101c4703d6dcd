"""The inputs: regimes as strategies and fixed-seed samples, the Case record, corpora.

Every regime's sample in every dtype is checked against what the regime promises (the
bands of log(max), the -inf runs of masks, ties, ulp spreads, ...), and so are cases drawn
by the strategies. Samples must be the same bytes for a seed and differ across seeds;
cases must survive JSON and their reproducer bit for bit; the corpus loader must read the
MNIST test corpus and refuse bad files with one-line errors; strategy arguments must be
validated when the strategy is made.
"""

from __future__ import annotations

import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from xentcheck.harness.adapters.contract import DTYPES, OPTIONS
from xentcheck.harness.cases import TARGET_KINDS, Case, _read_only_map
from xentcheck.harness.repro import load_case
from xentcheck.harness.strategies import (
    DEFAULT_CORPUS,
    IGNORED_SETUPS,
    LONG_SHAPES,
    MASK_TILE,
    MAX_CLASSES,
    OVERFLOW_EDGE_HALF_WIDTH,
    REGIMES,
    TINY_SPREAD_ULPS,
    InvalidArgument,
    cases,
    dtypes,
    load_corpus,
    logits,
    options,
    overflow_edge,
    regime_info,
    release,
    sample,
    targets,
)
from xentcheck.harness.truth import tier_for
from xentcheck.references.rounding import float_format

MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist_presoftmax.npz"
SYNTHETIC = tuple(r for r in REGIMES if r not in ("corpus", "known-defects"))
#: The regimes the strategies draw from (known-defects is a fixed corpus).
DRAWN = tuple(r for r in REGIMES if r != "known-defects")

# Property tests here are about the generators, not about finding rare bugs: a fixed
# derandomized run keeps them fast and repeatable.
FAST = settings(
    max_examples=12,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def wide(case: Case) -> np.ndarray:
    return case.logits.astype(np.float64)


def half_ulp(x: float, dtype: str) -> float:
    """Half an ulp of |x| in ``dtype`` (what the cast from float64 may move a value)."""
    f = float_format(dtype)
    e = max(math.frexp(abs(x))[1] - 1, f.emin)
    return math.ldexp(1.0, e - f.precision)


def longest_neg_inf_run(row: np.ndarray) -> int:
    best = run = 0
    for v in np.isneginf(row):
        run = run + 1 if v else 0
        best = max(best, run)
    return best


def check_structure(case: Case) -> None:
    """Shapes, dtypes and target validity, for any case."""
    n, k = case.shape
    assert case.logits.dtype.name == case.dtype, case.case_id
    assert not case.logits.flags.writeable and not case.target.flags.writeable
    if case.target_kind == "indices":
        assert case.target.shape == (n,) and case.target.dtype == np.int64
    else:
        assert case.target.shape == (n, k) and case.target.dtype == case.logits.dtype
    assert set(case.options) <= set(OPTIONS)
    if "weight" in case.options:
        assert case.options["weight"].shape == (k,)
        assert np.all(case.options["weight"].astype(np.float64) >= 0)
    if "ignore_index" in case.options:
        assert case.target_kind == "indices"
        if n:
            assert np.any(case.target == case.options["ignore_index"]), "no row ignored"
    if "label_smoothing" in case.options:
        assert 0.0 <= case.options["label_smoothing"] <= 1.0
    assert case.target_problems() == [], (case.case_id, case.target_problems())


def check_promises(case: Case) -> None:
    """What each regime promises about its logits (dtype-aware)."""
    z = wide(case)
    n, k = case.shape
    lm = overflow_edge(case.dtype)
    fmt = float_format(case.dtype)
    finite = np.isfinite(z)
    regime = case.regime
    if regime in ("moderate", "large", "overflow-edge", "huge", "dominant", "ties"):
        assert finite.all(), case.case_id
    if regime == "moderate":
        assert np.all(np.abs(z) <= min(10.0, lm / 2) * (1 + 2.0**-7))
    elif regime == "large":
        assert np.all(np.abs(z) >= lm / 2 * (1 - 2.0**-7))
        assert np.all(np.abs(z) <= 100.5 * lm * (1 + 2.0**-7))
    elif regime == "overflow-edge":
        band = OVERFLOW_EDGE_HALF_WIDTH + half_ulp(lm + OVERFLOW_EDGE_HALF_WIDTH, case.dtype)
        assert np.all(np.abs(z - lm) <= band), (case.case_id, z)
    elif regime == "huge":
        assert np.all(np.abs(z) >= 100 * lm * (1 - 2.0**-7)) and np.all(np.abs(z) <= fmt.max)
    elif regime == "dominant":
        top2 = np.sort(z, axis=1)[:, -2:]
        gap = 0.5 * fmt.precision * math.log(2.0)
        assert np.all(top2[:, 1] - top2[:, 0] >= 0.9 * gap), (case.case_id, top2)
    elif regime == "ties":
        if k >= 2:
            assert all(np.count_nonzero(row == row.max()) >= 2 for row in z), case.case_id
        if n >= 2:
            assert len({row.tobytes() for row in case.logits}) < n, "no repeated row"
    elif regime == "tiny-spread":
        uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[case.logits.itemsize]
        for i, row in enumerate(z):
            assert np.all(np.sign(row) == np.sign(row[0])) and np.all(np.abs(row) >= 0.98)
            # representable steps between the row's extremes, counted in the case dtype
            steps = np.abs(case.logits[i]).view(uint).astype(np.int64)
            assert steps.max() - steps.min() <= 2 * TINY_SPREAD_ULPS, (case.case_id, row)
    elif regime == "masked":
        assert not np.isnan(z).any() and not np.isposinf(z).any()
        assert all(np.isfinite(row).any() for row in z), "a masked row must keep a finite entry"
        if k > MASK_TILE and n:
            assert longest_neg_inf_run(z[0]) >= MASK_TILE, case.case_id
    elif regime == "nonfinite":
        if n and k:
            assert not finite.all(), case.case_id
    elif regime == "single-class":
        assert k == 1 and finite.all()
    elif regime == "empty":
        assert n == 0 and k >= 1
    elif regime == "wide":
        assert k >= 1024 and not np.isnan(z).any() and not np.isposinf(z).any()
    elif regime == "near-zero":
        assert finite.all() and k >= 2
        top = z.max(axis=1)
        assert np.all(np.abs(top) <= 1e-3), (case.case_id, top)
        second = np.sort(z, axis=1)[:, -2]
        gap = 0.5 * fmt.precision * math.log(2.0)
        assert np.all(top - second >= 0.9 * gap), case.case_id
    elif regime == "long-rows":
        assert (n, k) in LONG_SHAPES and finite.all()
    elif regime == "ignored":
        assert case.target_kind == "indices" and "ignore_index" in case.options
        assert np.any(case.target == case.options["ignore_index"])
    elif regime == "no-classes":
        assert k == 0 and n >= 1 and not case.options
    elif regime == "known-defects":
        assert case.case_id.startswith("defect-")


# --------------------------------------------------------------------------- fixed-seed samples


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("regime", REGIMES)
def test_every_regime_sample_is_valid_in_every_dtype(regime: str, dtype: str) -> None:
    got = sample(regime, dtype=dtype)
    sizes = {"long-rows": len(LONG_SHAPES), "ignored": len(IGNORED_SETUPS)}
    if regime in sizes:
        assert len(got) == sizes[regime]
    elif regime not in ("wide", "known-defects"):
        assert 3 <= len(got) <= 6
    assert len({c.case_id for c in got}) == len(got)
    for case in got:
        assert (case.regime, case.dtype) == (regime, dtype)
        assert case.seed == (None if regime == "known-defects" else 0)
        check_structure(case)
        check_promises(case)
        assert case.num_rows <= 8 or regime in ("corpus", "long-rows", "known-defects")


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_samples_hold_long_runs_far_below_rows_and_targets_at_and_off_minus_inf(
    dtype: str,
) -> None:
    got = sample("masked", dtype=dtype)
    runs = [longest_neg_inf_run(row) for c in got for row in wide(c)]
    assert max(runs) >= MASK_TILE
    low = 2 * overflow_edge(dtype) - 5
    far_below = [row for c in got for row in wide(c) if np.all(row <= -low)]
    assert far_below, "no row entirely far below zero"
    at = off = 0
    for case in got:
        if case.target_kind not in ("indices", "one-hot", "soft", "unnormalized"):
            continue
        for i, row in enumerate(wide(case)):
            if case.target_kind == "indices":
                t = int(case.target[i])
                mass = np.zeros(case.num_classes, dtype=bool)
                if 0 <= t < case.num_classes:
                    mass[t] = True
            else:
                mass = case.target[i].astype(np.float64) > 0
            at += bool(np.any(mass & np.isneginf(row)))
            off += bool(np.any(~mass & np.isneginf(row)))
    assert at and off, (at, off)


@pytest.mark.parametrize("dtype", DTYPES)
def test_overflow_edge_samples_straddle_log_max(dtype: str) -> None:
    z = np.concatenate([wide(c).ravel() for c in sample("overflow-edge", dtype=dtype)])
    lm = overflow_edge(dtype)
    assert np.any(z <= lm) and np.any(z > lm)
    assert {"float64": 709.78, "float32": 88.72, "float16": 11.09, "bfloat16": 88.72}[
        dtype
    ] == round(lm, 2)


def test_wide_sample_reaches_vocabulary_sizes_when_asked() -> None:
    default = sample("wide", dtype="float32")
    assert [c.num_classes for c in default] == [1024, 4096]
    full = sample("wide", dtype="bfloat16", max_classes=MAX_CLASSES)
    assert [c.num_classes for c in full] == [1024, 4096, 32768, 131072]
    for case in full:
        check_structure(case)
        check_promises(case)
    assert full[1].digest() == sample("wide", dtype="bfloat16")[1].digest()


def test_default_samples_cross_every_option_with_every_target_kind() -> None:
    seen: set[tuple[str, str]] = set()
    kinds_per_regime: dict[tuple[str, str], set[str]] = {}
    gold = 0
    for regime in REGIMES:
        for dtype in DTYPES:
            for case in sample(regime, dtype=dtype):
                gold += case.logits.size if tier_for(case) == "gold" else 0
                kinds_per_regime.setdefault((regime, dtype), set()).add(case.target_kind)
                seen.add((case.target_kind, "(none)" if not case.options else "(some)"))
                seen.update((case.target_kind, name) for name in case.options)
    for kind in TARGET_KINDS:
        names = [o for o in OPTIONS if o != "ignore_index" or kind == "indices"]
        for name in [*names, "(none)"]:
            assert (kind, name) in seen, (kind, name)
    for (regime, _), kinds in kinds_per_regime.items():
        if regime in ("ignored", "no-classes", "known-defects"):
            continue  # their targets are their point: class indices, none, the reports'
        if regime not in ("wide", "empty"):
            assert kinds == set(TARGET_KINDS), regime
    # the gold tier's part of the default sample stays small (mpmath, ~25 us an element:
    # about 2 s per function for 80k elements)
    assert gold < 100_000, gold


@pytest.mark.parametrize("regime", SYNTHETIC + ("corpus",))
def test_samples_are_deterministic_and_differ_across_seeds(regime: str) -> None:
    a = sample(regime, dtype="float16", seed=3)
    b = sample(regime, dtype="float16", seed=3)
    assert all(x.same_as(y) for x, y in zip(a, b, strict=True))
    assert [c.to_json() for c in a] == [c.to_json() for c in b]
    # case i does not depend on how many cases are asked for
    first = sample(regime, dtype="float16", seed=3, size=2)
    assert [c.digest() for c in first] == [c.digest() for c in a[:2]]
    if regime != "empty":
        other = sample(regime, dtype="float16", seed=4)
        assert [c.digest() for c in a] != [c.digest() for c in other]


def test_samples_are_pinned() -> None:
    # Computed by this module's generators at the time the regimes were written. If a
    # generator changes on purpose, samples change and reports stop being comparable with
    # older ones: update these digests in the same commit and say so.
    got = {
        d: (
            [c.digest() for c in sample("moderate", dtype=d)][:2],
            sample("masked", dtype=d)[0].digest(),
        )
        for d in ("float64", "float32")
    }
    assert got == {
        "float64": (["1e1cc0f4c8c6e0ff", "c04b9a68f15763d4"], "06c57cb727c20faf"),
        "float32": (["837f8acdda8f1ef4", "e5a0e3f65403aad2"], "ce61f549b87fcd3f"),
    }


def test_regime_info_describes_every_regime() -> None:
    for regime in REGIMES:
        line = regime_info(regime)
        assert line.startswith(f"{regime}: ") and "\n" not in line
        for dtype in DTYPES:
            assert dtype in regime_info(regime, dtype)
    assert "log(max) = 11.09" in regime_info("overflow-edge", "float16")


# --------------------------------------------------------------------------- the Case record


def special_values(dtype: str) -> np.ndarray:
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    f = float_format(dtype)
    values = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            f.smallest_subnormal,
            -f.smallest_subnormal,
            f.smallest_normal,
            f.max,
            -f.max,
            1.0 / 3.0,
            -2.5,
        ],
    ).astype(dt)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    bits = values.view(uint).copy()
    # a negative NaN and one with a payload: both must keep their exact bits
    sign = uint(1) << uint(8 * dt.itemsize - 1)
    bits[4] = bits[4] | sign
    bits[-1] = values[4:5].view(uint)[0] | uint(1)
    return bits.view(dt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_json_round_trip_is_bit_exact_for_special_values(dtype: str) -> None:
    z = special_values(dtype).reshape(2, 6)
    y = np.zeros((2, 6), dtype=z.dtype)
    y[:, 1] = 0.75
    y[:, 5] = 0.25
    case = Case(
        logits=z,
        target=y,
        target_kind="soft",
        options={"weight": z[0].copy(), "label_smoothing": 0.1, "reduction": "mean"},
        dtype=dtype,
        regime="special",
        case_id=f"special-{dtype}",
        seed=7,
    )
    back = Case.from_json(case.to_json())
    assert back.same_as(case)
    assert back.logits.tobytes() == z.tobytes()
    assert back.options["weight"].tobytes() == z[0].tobytes()
    assert back.options["label_smoothing"] == 0.1
    assert back.to_json() == case.to_json()
    text = case.to_json()
    assert '"nan:0x' in text and '"-0x0.0p+0"' in text and '"-inf"' in text


@pytest.mark.parametrize("regime", REGIMES)
def test_every_sample_case_round_trips_through_json(regime: str) -> None:
    for dtype in DTYPES:
        for case in sample(regime, dtype=dtype):
            assert Case.from_json(case.to_json()).same_as(case), case.case_id


def test_reproducer_rebuilds_the_case_in_one_line() -> None:
    small = sample("nonfinite", dtype="bfloat16")[0].select_rows([0])
    big = sample("masked", dtype="float32")[0]
    for case in (small, big):
        line = case.reproducer()
        assert "\n" not in line
        scope: dict[str, object] = {}
        exec(line, scope)  # noqa: S102 - running the snippet is the point
        assert scope["case"].same_as(case), line  # type: ignore[attr-defined]
    assert "from_json" in small.reproducer() and len(big.reproducer()) < 200
    assert "from_json" in big.reproducer(max_chars=10**9)


def test_case_validates_structure_and_keeps_arrays_read_only() -> None:
    z = np.zeros((2, 3))
    ok = Case(z, np.array([0, 2]), "indices", {}, "float64", "moderate", "demo")
    with pytest.raises(ValueError):
        ok.logits[0, 0] = 1.0
    assert z.flags.writeable  # the caller's array is copied, not frozen
    bad = [
        dict(logits=z.astype(np.float32)),  # dtype mismatch
        dict(logits=np.zeros(3)),  # not 2-D
        dict(target=np.array([0.0, 1.0])),  # float indices
        dict(target_kind="probabilities"),
        dict(options={"smoothing": 0.1}),
        dict(options={"reduction": "avg"}),
        dict(options={"weight": np.ones(2)}),
        dict(options={"ignore_index": True}),
        dict(dtype="int8"),
    ]
    base = dict(
        logits=z,
        target=np.array([0, 2]),
        target_kind="indices",
        options={},
        dtype="float64",
        regime="moderate",
        case_id="demo",
    )
    for change in bad:
        with pytest.raises(ValueError):
            Case(**{**base, **change})
    # invalid targets are allowed (the invalid-input checks need them) and reported
    wrong = Case(**{**base, "target": np.array([0, 3])})
    assert wrong.target_problems() == ["row 1: class 3 out of [0, 3)"]
    negative = Case(**{**base, "target": np.array([[1.5, -0.5, 0.0]] * 2), "target_kind": "soft"})
    assert len(negative.target_problems()) == 2
    rows = sample("ties", dtype="float32")[0].select_rows([1])
    assert rows.num_rows == 1 and rows.case_id.endswith("[1]")


# --------------------------------------------------------------------------- corpora


def test_corpus_loader_reads_mnist_with_labels_as_index_targets() -> None:
    chunks = load_corpus(MNIST)
    assert sum(c.num_rows for c in chunks) == 2500
    assert [c.num_rows for c in chunks] == [256] * 9 + [196]
    with np.load(MNIST) as data:
        labels, raw = data["labels"], data["logits"]
    assert np.array_equal(np.concatenate([c.target for c in chunks]), labels)
    assert np.array_equal(np.concatenate([c.logits for c in chunks]), raw)
    for case in chunks:
        assert (case.regime, case.target_kind, case.dtype) == ("corpus", "indices", "float32")
        check_structure(case)
    halves = load_corpus(MNIST, dtype="bfloat16", rows_per_case=1000)
    assert [c.num_rows for c in halves] == [1000, 1000, 500] and halves[0].dtype == "bfloat16"
    assert Path(DEFAULT_CORPUS).read_bytes() == MNIST.read_bytes()


def test_long_rows_are_cut_into_blocks_of_the_budget(tmp_path: Path) -> None:
    """A corpus of long rows becomes cases of at most ``block_elements`` logits (at least
    one row each), in order, every row once; each case's origin rebuilds it."""
    path = tmp_path / "vocab.npy"
    z = np.random.default_rng(3).standard_normal((37, 5000)).astype(np.float32)
    np.save(path, z)
    blocks = load_corpus(path, block_elements=20_000)
    assert [c.num_rows for c in blocks] == [4] * 9 + [1]
    assert np.array_equal(np.concatenate([c.logits for c in blocks]), z)
    assert len(load_corpus(path, block_elements=1)) == 37  # one row per case at least
    assert len(load_corpus(path)) == 1  # the default budget, 2**21, holds all 37 rows
    rebuilt = load_case(blocks[4].origin)  # what a reproducer line does
    assert rebuilt.fingerprint() == blocks[4].fingerprint()
    with pytest.raises(InvalidArgument, match="block_elements must be >= 1"):
        load_corpus(path, block_elements=0)


def test_stored_corpus_blocks_map_the_file_and_give_their_pages_back(tmp_path: Path) -> None:
    """np.savez stores members uncompressed: the blocks are read-only views of a memory
    map (no copy), the same cases as the compressed file read whole and as the .npy; a
    block in another dtype is converted block by block; a released block reads the same."""
    rng = np.random.default_rng(11)
    z = (rng.standard_normal((40, 3000)) * 5).astype(np.float32)
    labels = rng.integers(0, 3000, 40)
    np.savez(tmp_path / "plain.npz", logits=z, labels=labels)
    np.savez_compressed(tmp_path / "packed.npz", logits=z, labels=labels)
    np.save(tmp_path / "plain.npy", z)
    mapped = load_corpus(tmp_path / "plain.npz", block_elements=30_000)
    read = load_corpus(tmp_path / "packed.npz", block_elements=30_000)
    assert [c.num_rows for c in mapped] == [10] * 4
    assert [c.fingerprint() for c in mapped] == [c.fingerprint() for c in read]
    assert all(_read_only_map(c.logits) and not c.logits.flags.writeable for c in mapped)
    assert not any(_read_only_map(c.logits) for c in read)
    from_npy = load_corpus(tmp_path / "plain.npy", block_elements=30_000)
    assert all(_read_only_map(c.logits) for c in from_npy)
    assert np.array_equal(np.concatenate([c.logits for c in from_npy]), z)
    halves = load_corpus(tmp_path / "plain.npz", dtype="bfloat16", block_elements=30_000)
    assert np.array_equal(np.concatenate([c.logits for c in halves]).view(np.uint16),
                          z.astype(ml_dtypes.bfloat16).view(np.uint16))
    kept = mapped[1].logits.copy()
    release(mapped[1].logits)
    release(read[1].logits)  # not mapped: nothing to give back
    assert np.array_equal(mapped[1].logits, kept) and np.array_equal(read[1].logits, kept)


def _file_pages_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_released_blocks_leave_the_resident_memory(tmp_path: Path) -> None:
    z = np.ones((64, 131072), np.float32)  # 32 MiB
    np.savez(tmp_path / "big.npz", logits=z)  # no labels: the argmax reads every row
    del z
    before = _file_pages_kb()
    (case,) = load_corpus(tmp_path / "big.npz", block_elements=2**23)
    assert _file_pages_kb() - before < 8_000  # the argmax's blocks were given back
    assert float(case.logits.sum(dtype=np.float64)) == 64 * 131072  # every page read
    touched = _file_pages_kb()
    release(case.logits)
    assert touched - before > 24_000 and touched - _file_pages_kb() > 24_000


def test_corpus_sample_rows_come_from_the_corpus_with_their_labels() -> None:
    with np.load(MNIST) as data:
        rows = {r.tobytes(): int(t) for r, t in zip(data["logits"], data["labels"], strict=True)}
    for case in sample("corpus", dtype="float32", corpus=MNIST):
        for i, row in enumerate(case.logits):
            assert row.tobytes() in rows
            if case.target_kind == "indices" and "ignore_index" not in case.options:
                assert case.target[i] == rows[row.tobytes()]


def test_corpus_without_labels_uses_the_argmax(tmp_path: Path) -> None:
    path = tmp_path / "mine.npy"
    np.save(path, np.array([[0.0, 3.0, 1.0], [np.nan, -1.0, 2.0]]))
    (case,) = load_corpus(path)
    assert case.dtype == "float64" and case.target.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.npz", None, "no such file"),
        ("logits.txt", "1 2 3", "must be a .npy file or a .npz"),
        (
            "nologits.npz",
            {"scores": np.zeros((2, 3))},
            "no 'logits' array in the .npz (found: scores)",
        ),
        ("flat.npy", np.zeros(5), "must be 2-D (N, K); got shape (5,)"),
        ("cube.npz", {"logits": np.zeros((2, 3, 4))}, "must be 2-D"),
        ("ints.npy", np.zeros((2, 3), dtype=np.int64), "must be floating point; got int64"),
        (
            "labels.npz",
            {"logits": np.zeros((2, 3)), "labels": np.array([0, 3])},
            "label 3 of row 1",
        ),
        ("short.npz", {"logits": np.zeros((2, 3)), "labels": np.array([0])}, "labels must be"),
        ("broken.npy", b"not a numpy file", "cannot be read"),
    ],
)
def test_corpus_loader_refuses_bad_files_in_one_line(
    tmp_path: Path, name: str, content: object, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_corpus(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


# --------------------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    "make",
    [
        lambda: logits(regime="gaussian"),
        lambda: logits(dtype="int8"),
        lambda: logits(min_classes=0),
        lambda: logits(max_rows=-1),
        lambda: logits(min_rows=3, max_rows=2),
        lambda: logits(min_classes=2.0),
        lambda: logits(max_classes=MAX_CLASSES + 1),
        lambda: logits(regime="single-class", min_classes=2),
        lambda: logits(regime="empty", min_rows=1),
        lambda: logits(regime="dominant", max_classes=1),
        lambda: logits(regime="corpus", corpus="missing.npz"),
        lambda: targets(np.zeros(3)),
        lambda: targets(np.zeros((2, 3), dtype=np.int32)),
        lambda: targets(np.zeros((2, 3)), kind="probabilities"),
        lambda: targets(np.zeros((2, 3)), kind="soft", ignore_index=-100),
        lambda: targets(np.zeros((2, 3)), ignore_index="x"),
        lambda: options(num_classes=0),
        lambda: options(num_classes=3, names=["smoothing"]),
        lambda: options(num_classes=3, target_kind="hard"),
        lambda: cases(target_kinds=[]),
        lambda: cases(target_kinds=["indices", "logits"]),
        lambda: cases(with_options=1),
        lambda: cases(dtype="float8"),
        lambda: dtypes(names=["float64", "complex64"]),
        lambda: sample("gaussian"),
        lambda: sample("moderate", dtype="float128"),
        lambda: sample("moderate", seed=-1),
        lambda: sample("moderate", size=1.5),
        lambda: sample("wide", max_classes=MAX_CLASSES * 2),
    ],
)
def test_arguments_are_validated_at_once(make) -> None:  # type: ignore[no-untyped-def]
    # the strategy is never drawn from: the call itself must raise
    with pytest.raises(ValueError) as info:
        make()
    assert isinstance(info.value, InvalidArgument) or "corpus" in str(info.value)


@pytest.mark.parametrize("regime", DRAWN)
@FAST
@given(data=st.data())
def test_drawn_cases_keep_their_regimes_promises(regime: str, data: st.DataObject) -> None:
    case = data.draw(cases(regime=regime))
    assert case.regime == regime and case.seed is None
    assert case.case_id == f"{regime}-{case.dtype}-h{case.digest()}"
    check_structure(case)
    check_promises(case)


@FAST
@given(data=st.data())
def test_logits_targets_and_options_compose(data: st.DataObject) -> None:
    dtype = data.draw(dtypes())
    z = data.draw(logits(dtype=dtype, max_rows=3, max_classes=300))
    assert z.dtype.name == dtype and z.ndim == 2 and z.shape[0] <= 3 and z.shape[1] <= 300
    kind = data.draw(st.sampled_from(TARGET_KINDS))
    opts = data.draw(options(num_classes=z.shape[1], dtype=dtype, target_kind=kind))
    drawn = data.draw(targets(z, kind=kind, ignore_index=opts.get("ignore_index")))
    assert drawn.kind == kind
    check_structure(Case(z, drawn.values, drawn.kind, opts, dtype, "mixed", "composed"))
    any_kind = data.draw(targets(z))
    assert any_kind.kind in TARGET_KINDS


def test_strategies_shrink_to_small_cases() -> None:
    quiet = settings(database=None, derandomize=True, max_examples=200)
    z = find(logits(regime="masked"), lambda a: a.shape[1] > MASK_TILE, settings=quiet)
    assert z.shape[0] == 1 and z.shape[1] % MASK_TILE == 0
    assert longest_neg_inf_run(z[0].astype(float)) >= MASK_TILE
    small = cases(regime="ties", dtype="float16", max_classes=2, target_kinds=["one-hot"])
    c = find(small, lambda c: c.num_rows >= 2, settings=quiet)
    assert c.shape == (2, 2) and not c.options


@FAST
@given(data=st.data())
def test_strategies_respect_explicit_bounds(data: st.DataObject) -> None:
    regime = data.draw(st.sampled_from(("moderate", "masked", "wide", "nonfinite")))
    z = data.draw(logits(regime=regime, min_classes=200, max_classes=300, min_rows=2, max_rows=3))
    assert 200 <= z.shape[1] <= 300 and 2 <= z.shape[0] <= 3
    case = data.draw(cases(regime="corpus", corpus=MNIST, max_rows=2))
    assert case.num_classes == 10 and 1 <= case.num_rows <= 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_patterns_cover_every_kind_of_value(dtype: str) -> None:
    """``bits`` draws sign, exponent and mantissa independently: a modest sample already
    holds zeros of both signs, subnormals, normals of both signs across the binades, and
    infinities and NaN (the all-ones exponent)."""
    z = np.concatenate([c.logits.astype(np.float64).ravel()
                        for c in sample("bits", dtype=dtype, size=120)])
    tiny = float_format(dtype).smallest_normal
    finite = z[np.isfinite(z)]
    assert np.any(z == 0) and np.any(np.signbit(z[z == 0])) and np.any(~np.signbit(z[z == 0]))
    assert np.any((finite != 0) & (np.abs(finite) < tiny))  # subnormals
    assert np.any(np.isinf(z)) and np.any(np.isnan(z))
    _, exponents = np.frexp(finite[finite != 0])
    assert np.ptp(exponents) > 0.9 * (np.log2(float_format(dtype).max) - np.log2(tiny))
    assert np.any(finite > 0) and np.any(finite < 0)
