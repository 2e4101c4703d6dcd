"""The fast tier as a package: ``xentcheck.references.fast`` re-exports its public API.

The tier was one module (``references/fast.py``); its code now lives in modules that
follow the sections of its docstring. Importers keep writing
``from xentcheck.references import fast`` and ``fast.Reference``; these tests pin that
API and the layout. Private names live in their own modules: ``fast.kernels._BLOCK``,
``fast.api.TIER`` (to monkeypatch: setting ``fast.TIER`` does not reach ``work_for``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil

import numpy as np
import pytest

from xentcheck.references import fast

#: The public API, as the single module had it.
PUBLIC = (
    "TIER",
    "WORKS",
    "Reference",
    "cross_entropy",
    "cross_entropy_grad",
    "log_softmax",
    "log_dd",
    "logsumexp",
    "softmax",
    "undefined_rows",
    "work_for",
)
#: The modules of the package: the docstring's sections.
MODULES = ("api", "doubledouble", "effective", "extended", "fallback", "inputs", "jit",
           "_jit_kernels", "_numba_options", "kernels", "plain")


def _submodules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(fast.__path__))


def test_all_is_the_public_api() -> None:
    assert tuple(fast.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(fast, name), f"xentcheck.references.fast.{name} is missing"


def test_public_names_are_the_defining_objects() -> None:
    """Each re-exported function or class is the one of its module (not a copy)."""
    for name in PUBLIC:
        obj = getattr(fast, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            module = importlib.import_module(obj.__module__)
            assert obj.__module__.startswith("xentcheck.references.fast.")
            assert getattr(module, name) is obj
    assert fast.TIER == fast.api.TIER and fast.WORKS == fast.api.WORKS


def test_no_other_public_names() -> None:
    """Besides __all__, the package holds only its modules (no stray public names)."""
    extra = sorted(n for n in vars(fast) if not n.startswith("_") and n not in PUBLIC
                   and not inspect.ismodule(getattr(fast, n)) and n != "annotations")
    assert not extra


def test_layout() -> None:
    assert _submodules() == sorted(MODULES)
    for name in MODULES:
        if name == "_jit_kernels" and importlib.util.find_spec("numba") is None:
            continue  # the compiled engine's kernels import numba
        module = importlib.import_module(f"xentcheck.references.fast.{name}")
        assert module.__doc__ and module.__doc__.strip(), f"fast.{name} has no docstring"
        lines = len(inspect.getsource(module).splitlines())
        assert lines <= 600, f"fast.{name} has {lines} lines: split it"


def test_package_docstring_keeps_the_overview() -> None:
    doc = fast.__doc__ or ""
    for heading in ("Working precisions", "How the longdouble work stays accurate",
                    "Modules", "Status"):
        assert heading in doc, heading


@pytest.mark.parametrize("work", ["float64", None])
def test_module_functions_match_reference(work: str | None) -> None:
    """The thin wrappers and a shared Reference give the same bits, through the package."""
    z = np.array([[1.0, 2.0, 3.0], [40.0, 0.0, -np.inf]])
    t = np.array([2, 0])
    ref = fast.Reference(z, work=work)
    assert np.array_equal(fast.softmax(z, work=work), ref.softmax())
    assert np.array_equal(fast.log_softmax(z, work=work), ref.log_softmax())
    assert np.array_equal(fast.logsumexp(z, work=work), ref.logsumexp())
    assert np.array_equal(fast.cross_entropy(z, t, work=work), ref.cross_entropy(t))
    assert np.array_equal(fast.cross_entropy_grad(z, t, work=work), ref.cross_entropy_grad(t))


def test_tier_is_patched_where_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """``work_for`` reads ``TIER`` in ``fast.api``: that is where a test patches it."""
    monkeypatch.setattr(fast.api, "TIER", "gold")
    assert fast.work_for("float64") == "gold"
    assert fast.Reference(np.zeros((1, 2))).work == "gold"
