"""Loading adapters: every spec form, what an adapter provides, bad specs, the listing.

Spec forms (DESIGN.md §3): a built-in name, ``pkg.module[:attr]``, ``path/to/file.py[:attr]``,
an entry point of the group ``xentcheck.adapters`` (simulated with a dist-info directory on
``sys.path``), and ``c:path``. Bad specs must raise ``AdapterSpecError`` with a one-line
message the CLI prints as is.
"""

from __future__ import annotations

import types
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from xentcheck.harness.adapters import (
    BUILTINS,
    FUNCTIONS,
    OPTIONS,
    AdapterSpecError,
    describe,
    format_adapter_list,
    list_adapters,
    load_adapter,
    open_adapter,
)
from xentcheck.harness.adapters.contract import DTYPES, call_options, dtype_name
from xentcheck.harness.adapters.registry import accepted_options, is_c_spec

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PLAIN = FIXTURES / "plain_adapters.py"
LOGITS = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
TARGET = np.array([2, 0])


@pytest.fixture
def fixtures_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))


# --------------------------------------------------------------------------- spec forms


def test_builtin_name_in_process_and_in_a_worker() -> None:
    adapter, source = load_adapter("numpy")
    info = describe(adapter, spec="numpy", source=source)
    assert (info.name, info.source, info.version) == ("numpy", "built-in", np.__version__)
    assert set(info.provides) == set(FUNCTIONS)
    assert info.provides["cross_entropy"] == OPTIONS
    assert info.provides["softmax"] == ()
    assert info.dtypes == DTYPES
    with open_adapter("numpy") as handle:
        assert handle.isolated
        assert handle.info == info
        outcome = handle.call("softmax", LOGITS)
    assert outcome.ok, outcome.faults
    np.testing.assert_allclose(outcome.value.sum(axis=1), 1.0)


def test_module_spec_without_attribute_is_the_module(fixtures_on_path: None) -> None:
    adapter, source = load_adapter("plain_adapters")
    info = describe(adapter, spec="plain_adapters", source=source)
    assert isinstance(adapter, types.ModuleType)
    assert info.name == "plain-module"
    assert info.version == "1.2.3"
    assert info.dtypes == ("float64", "bfloat16")  # declared as dtype objects
    assert info.provides == {"softmax": (), "cross_entropy": ("reduction",)}


@pytest.mark.parametrize("attr", ["INSTANCE", "Instance", "make_adapter"])
def test_module_attr_spec_instance_class_or_factory(fixtures_on_path: None, attr: str) -> None:
    adapter, _ = load_adapter(f"plain_adapters:{attr}")
    info = describe(adapter, spec=f"plain_adapters:{attr}")
    assert type(adapter).__name__ == "Instance"  # a class is instantiated, a factory called
    assert info.provides == {"logsumexp": (), "cross_entropy": OPTIONS}  # **options: all
    assert info.dtypes == ("float32",)
    assert info.name == attr


def test_file_spec_relative_absolute_with_and_without_attr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    module, _ = load_adapter("tests/harness/fixtures/plain_adapters.py")
    assert describe(module, spec="x").name == "plain-module"
    instance, _ = load_adapter(f"{PLAIN}:INSTANCE")
    assert type(instance).__name__ == "Instance"
    again, _ = load_adapter(str(PLAIN))
    assert again is module  # the same file is imported once


def _write_entry_point(root: Path, name: str, value: str) -> None:
    dist_info = root / "xentcheck_plugin_demo-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: xentcheck-plugin-demo\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[xentcheck.adapters]\n{name} = {value}\n")


PLUGIN_MODULE = """
import numpy as np

class PluginAdapter:
    name = "plugin-adapter"
    dtypes = ("float64",)

    def softmax(self, logits):
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

ADAPTER = PluginAdapter()
"""


def test_entry_point_spec_listing_and_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "xentcheck_plugin_demo.py").write_text(PLUGIN_MODULE)
    _write_entry_point(tmp_path, "plugin-adapter", "xentcheck_plugin_demo:ADAPTER")
    monkeypatch.syspath_prepend(str(tmp_path))

    adapter, source = load_adapter("plugin-adapter")
    assert source == "entry point"
    assert describe(adapter, spec="plugin-adapter").provides == {"softmax": ()}

    listed = {info.name: info for info in list_adapters()}
    assert listed["plugin-adapter"].source == "entry point"
    assert listed["plugin-adapter"].unavailable is None
    assert "plugin-adapter" in format_adapter_list(listed.values())

    with open_adapter("plugin-adapter") as handle:  # the worker gets this sys.path
        outcome = handle.call("softmax", LOGITS)
    assert outcome.ok, outcome.faults


def test_entry_point_cannot_shadow_a_builtin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "xentcheck_plugin_demo.py").write_text(PLUGIN_MODULE)
    _write_entry_point(tmp_path, "numpy", "xentcheck_plugin_demo:ADAPTER")
    monkeypatch.syspath_prepend(str(tmp_path))
    adapter, source = load_adapter("numpy")
    assert source == "built-in" and adapter.name == "numpy"
    shadows = [i for i in list_adapters() if i.name == "numpy" and i.source == "entry point"]
    assert shadows and "taken by a built-in" in shadows[0].unavailable


# --------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nump", "unknown adapter 'nump': not a built-in (numpy-seed, numpy"),
        ("", "empty adapter spec"),
        ("no/such/adapter.py", "no such adapter file: no/such/adapter.py"),
        ("no_such_adapter.py:thing", "no such adapter file: no_such_adapter.py"),
        ("no_such_module_xyz:thing", "no module named 'no_such_module_xyz'"),
        (f"{PLAIN}:no_such_attr", "has no attribute 'no_such_attr'"),
        (f"{PLAIN}:", "names no attribute after ':'"),
        (f"{PLAIN}:NothingProvided", "provides none of the contract's functions"),
        (f"{PLAIN}:BadDtypes", "declares unsupported dtypes ['int8']"),
        ("c:no/such/file.c", "no such C file or library: no/such/file.c"),
        ("not a spec!", "unknown adapter 'not a spec!'"),
    ],
)
def test_bad_spec_raises_one_line_error(spec: str, message: str) -> None:
    with pytest.raises(AdapterSpecError) as caught:
        adapter, _ = load_adapter(spec)
        describe(adapter, spec=spec)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_spec_found_in_the_worker_raises_from_wait() -> None:
    handle = open_adapter(f"{PLAIN}:no_such_attr")  # the file exists: the worker finds out
    with handle:
        with pytest.raises(AdapterSpecError, match="has no attribute 'no_such_attr'"):
            handle.wait()
        outcome = handle.call("softmax", LOGITS)
    assert outcome.fault.kind == "unavailable"


def test_bad_spec_for_a_worker_raises_at_once() -> None:
    with pytest.raises(AdapterSpecError, match="unknown adapter"):
        open_adapter("nump")


def test_import_error_in_a_user_file_is_a_spec_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken_adapter.py"
    broken.write_text("import numpy\nraise RuntimeError('oops at import')\n")
    with pytest.raises(AdapterSpecError, match="could not import .*RuntimeError: oops at import"):
        load_adapter(str(broken))


def test_unavailable_builtin_says_why(
    fixtures_on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BUILTINS, "frobnitz", "unavailable_adapter")
    monkeypatch.setitem(BUILTINS, "ghost", "xentcheck.harness.adapters.no_such_module")
    with open_adapter("ghost", isolated=False) as handle:
        assert "xentcheck.harness.adapters.no_such_module is missing" in handle.unavailable
    with open_adapter("frobnitz", isolated=False) as handle:
        table = format_adapter_list([handle.info])
    assert "unavailable: frobnitz is not installed" in table

    # in-process by built-in name; in a worker by file (the worker has the real BUILTINS)
    for spec, isolated in (("frobnitz", False), (str(FIXTURES / "unavailable_adapter.py"), True)):
        with open_adapter(spec, isolated=isolated) as handle:
            assert handle.unavailable == "frobnitz is not installed (pip install frobnitz)"
            outcome = handle.call("softmax", LOGITS)
        assert outcome.fault.kind == "unavailable"


# --------------------------------------------------------------------------- options


def test_accepted_options_come_from_the_signature() -> None:
    def plain(logits, target): ...
    def some(logits, target, *, weight=None, reduction="none"): ...
    def everything(logits, target, **options): ...
    def positional_only(logits, target, reduction, /): ...

    assert accepted_options(plain) == ()
    assert accepted_options(some) == ("weight", "reduction")
    assert accepted_options(everything) == OPTIONS
    assert accepted_options(positional_only) == ()
    assert accepted_options(len) == ()  # a builtin: no options


def test_options_are_passed_only_when_accepted() -> None:
    received: list[dict] = []

    class Recorder:
        def cross_entropy(self, logits, target, reduction="none", label_smoothing=0.0):
            received.append({"reduction": reduction, "label_smoothing": label_smoothing})
            return np.zeros((), logits.dtype) if reduction != "none" else np.zeros(len(logits))

    with open_adapter(Recorder()) as handle:
        assert not handle.isolated  # an object runs in-process unless isolated=True
        defaults = {"weight": None, "ignore_index": None, "label_smoothing": 0.0}
        assert handle.call("cross_entropy", LOGITS, TARGET, **defaults).ok
        assert handle.call("cross_entropy", LOGITS, TARGET, reduction="sum").ok
        with_weight = handle.call("cross_entropy", LOGITS, TARGET, weight=np.ones(3))
        ignoring = handle.call("cross_entropy", LOGITS, TARGET, ignore_index=-100)
        jacobian = handle.call("softmax_jacobian", LOGITS)
    assert received == [
        {"reduction": "none", "label_smoothing": 0.0},
        {"reduction": "sum", "label_smoothing": 0.0},
    ]
    assert str(with_weight.fault) == "not-provided: cross_entropy does not accept option 'weight'"
    assert ignoring.fault.kind == "not-provided"
    assert jacobian.fault.kind == "not-provided"


def test_call_options_rejects_unknown_option_names() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        call_options("cross_entropy", OPTIONS, {"smoothing": 0.1})


def test_dtype_names() -> None:
    assert dtype_name(np.float32) == "float32"
    assert dtype_name(ml_dtypes.bfloat16) == "bfloat16"
    assert dtype_name("bfloat16") == "bfloat16"
    assert dtype_name(np.dtype("float16")) == "float16"


# --------------------------------------------------------------------------- objects, C, list


def test_objects_through_the_api(fixtures_on_path: None) -> None:
    import plain_adapters

    with open_adapter(plain_adapters) as in_process:
        assert not in_process.isolated and in_process.name == "plain-module"
    with open_adapter(plain_adapters, isolated=True) as by_module_name:
        assert by_module_name.isolated
        assert by_module_name.call("softmax", LOGITS).ok
    with open_adapter(plain_adapters.Instance(), isolated=True) as pickled:
        assert pickled.call("logsumexp", LOGITS.astype(np.float32)).ok

    unpicklable = types.SimpleNamespace(softmax=lambda logits: logits)
    with pytest.raises(AdapterSpecError, match="cannot send SimpleNamespace to a worker"):
        open_adapter(unpicklable, isolated=True)


def test_c_adapters_always_run_in_a_worker() -> None:
    assert is_c_spec("c") and is_c_spec("c-seed") and is_c_spec("c:my.c")
    assert not is_c_spec("numpy")
    with pytest.raises(AdapterSpecError, match="always run in a worker"):
        open_adapter("c", isolated=False)


def test_list_adapters_covers_every_builtin() -> None:
    infos = list_adapters()
    by_name = {info.name: info for info in infos if info.source == "built-in"}
    assert set(by_name) == set(BUILTINS)
    for name in ("numpy-seed", "numpy", "scipy"):
        assert by_name[name].unavailable is None
        assert by_name[name].version
    for info in by_name.values():  # usable, or says why not
        assert (info.unavailable is None) == bool(info.provides)
    table = format_adapter_list(infos)
    header = table.splitlines()[0].split()
    assert header == [
        "adapter",
        "source",
        "version",
        "dtypes",
        "provides",
        "CE",
        "options",
        "dialect",
        "status",
    ]
    for name in BUILTINS:
        assert name in table
    assert by_name["numpy"].dialect == "pytorch"
    if by_name["sklearn"].unavailable is None:  # a dialect declared in a worker arrives
        assert by_name["sklearn"].dialect == "sklearn"
