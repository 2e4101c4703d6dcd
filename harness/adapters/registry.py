"""Finding adapters: built-in names, specs, entry points; what each provides; the listing.

A spec is one of

* a built-in name (``numpy-seed``, ``numpy``, ``scipy``, ``torch``, ``jax``, ``c``, and the
  rest of :data:`BUILTINS`),
* ``c:path/to/file.c`` or ``c:path/to/lib.so`` (a user's C code, see ``c_ctypes``),
* the name of an entry point in the group ``xentcheck.adapters``,
* ``path/to/file.py`` or ``path/to/file.py:attr``,
* ``pkg.module`` or ``pkg.module:attr`` (``attr`` may be dotted).

What a spec names becomes the adapter as follows: a class is instantiated with no
arguments; a module that provides none of the contract's functions but has ``load()`` is
replaced by ``load()``'s result (the built-ins' convention); any other callable that
provides none of them is called with no arguments (a factory). Bad specs raise
:class:`~xentcheck.harness.adapters.contract.AdapterSpecError` with a one-line message; a missing
framework or compiler raises :class:`~xentcheck.harness.adapters.contract.AdapterUnavailable`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xentcheck.harness.adapters.contract import (
    DTYPES,
    FUNCTIONS,
    FUNCTIONS_WITH_OPTIONS,
    OPTIONS,
    AdapterInfo,
    AdapterSpecError,
    AdapterUnavailable,
    dtype_name,
    one_line,
)
from xentcheck.harness.adapters.isolation import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_START_TIMEOUT,
    DEFAULT_TIMEOUT,
    AdapterHandle,
    InProcessHandle,
    WorkerHandle,
)
from xentcheck.references import dialects

#: Built-in adapter name -> ``module`` (whose ``load()`` gives the adapter) or
#: ``module:function`` (another loader of that module).
BUILTINS: dict[str, str] = {
    "numpy-seed": "xentcheck.harness.adapters.numpy_seed",
    "numpy": "xentcheck.harness.adapters.numpy_stable",
    "scipy": "xentcheck.harness.adapters.scipy_special",
    "torch": "xentcheck.harness.adapters.torch_nn",
    "torch-cuda": "xentcheck.harness.adapters.torch_nn:load_cuda",
    "jax": "xentcheck.harness.adapters.jax_nn",
    "c": "xentcheck.harness.adapters.c_ctypes",
    "c-seed": "xentcheck.harness.adapters.c_ctypes:load_seed",
    "tensorflow": "xentcheck.harness.adapters.tensorflow_nn",
    "optax": "xentcheck.harness.adapters.optax_losses",
    "optax-safe": "xentcheck.harness.adapters.optax_losses:load_safe",
    "onnxruntime": "xentcheck.harness.adapters.onnxruntime_graphs",
    "paddle": "xentcheck.harness.adapters.paddle_nn",
    "sklearn": "xentcheck.harness.adapters.sklearn_metrics",
    "tinygrad": "xentcheck.harness.adapters.tinygrad_tensor",
}

#: Built-ins a default run leaves out (they run with ``--adapter NAME``), and why.
OPT_IN: dict[str, str] = {
    "tinygrad": "opt-in (--adapter tinygrad): its CPU device compiles every kernel with "
                "clang, and a run of every regime takes about 40 minutes on 2 cores",
}

#: The entry-point group third-party packages register adapters under.
ENTRY_POINT_GROUP = "xentcheck.adapters"

_C_MODULE = "xentcheck.harness.adapters.c_ctypes"


def is_c_spec(spec: str) -> bool:
    """Whether ``spec`` names C code (a C built-in or ``c:path``): always in a worker."""
    spec = spec.strip()
    return spec.startswith("c:") or BUILTINS.get(spec, "").startswith(_C_MODULE)


# --------------------------------------------------------------------------- resolving specs


def load_adapter(spec: str) -> tuple[Any, str]:
    """The adapter object a spec names, and its source (``built-in``, ``entry point``, ``spec``).

    Runs the adapter's import code in this process; :func:`open_adapter` runs it in a
    worker instead.
    """
    spec = spec.strip()
    if not spec:
        raise AdapterSpecError("empty adapter spec")
    if spec.startswith("c:"):
        return _load_user_c(spec[2:]), "spec"
    if spec in BUILTINS:
        return _load_builtin(spec), "built-in"
    entry = _entry_points().get(spec)
    if entry is not None:
        try:
            obj = entry.load()
        except AdapterUnavailable:
            raise
        except Exception as exc:
            raise AdapterSpecError(
                one_line(f"entry point {spec!r} ({entry.value}) failed to load: {_exc(exc)}")
            ) from exc
        return _materialize(obj, spec), "entry point"
    target, attr = _split(spec)
    if _looks_like_file(target):
        obj: Any = _import_file(target)
    elif _looks_like_module(target):
        obj = _import_module(target, spec)
    else:
        raise AdapterSpecError(_unknown(spec))
    if attr:
        obj = _attribute(obj, attr, target)
    return _materialize(obj, spec), "spec"


def check_spec(spec: str) -> None:
    """Raise :class:`AdapterSpecError` for a spec that cannot name anything, cheaply.

    Imports nothing of the adapter itself (a worker does that): the built-in name, the
    file, the entry point or the module must exist.
    """
    spec = spec.strip()
    if not spec:
        raise AdapterSpecError("empty adapter spec")
    if spec.startswith("c:"):
        if not Path(spec[2:]).expanduser().is_file():
            raise AdapterSpecError(f"no such C file or library: {spec[2:]}")
        return
    if spec in BUILTINS or spec in _entry_points():
        return
    target, _ = _split(spec)
    if _looks_like_file(target):
        if not Path(target).expanduser().is_file():
            raise AdapterSpecError(f"no such adapter file: {target}")
        return
    if _looks_like_module(target):
        _ensure_cwd_on_path()
        try:
            found = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            found = None
        if found is None:
            if target == spec:  # a bare word: most likely a mistyped built-in
                raise AdapterSpecError(_unknown(spec))
            raise AdapterSpecError(f"no module named {target!r} (adapter spec {spec!r})")
        return
    raise AdapterSpecError(_unknown(spec))


def _unknown(spec: str) -> str:
    return (
        f"unknown adapter {spec!r}: not a built-in ({', '.join(BUILTINS)}), an entry point "
        f"in {ENTRY_POINT_GROUP!r}, a path/to/file.py[:attr] or a pkg.module[:attr]"
    )


def _exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _split(spec: str) -> tuple[str, str]:
    target, sep, attr = spec.rpartition(":")
    if not sep:
        return spec, ""
    if not attr:
        raise AdapterSpecError(f"adapter spec {spec!r} names no attribute after ':'")
    return target, attr


def _looks_like_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _looks_like_module(target: str) -> bool:
    return re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", target) is not None


def _load_builtin(name: str) -> Any:
    module_name, _, loader = BUILTINS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise AdapterUnavailable(f"built-in adapter module {module_name} is missing") from exc
        raise AdapterUnavailable(one_line(f"{name}: {_exc(exc)}")) from exc
    except ImportError as exc:
        raise AdapterUnavailable(one_line(f"{name}: {_exc(exc)}")) from exc
    return getattr(module, loader or "load")()


def _load_user_c(path: str) -> Any:
    if not Path(path).expanduser().is_file():
        raise AdapterSpecError(f"no such C file or library: {path}")
    try:
        module = importlib.import_module(_C_MODULE)
    except ImportError as exc:
        raise AdapterUnavailable(one_line(f"C adapters: {_exc(exc)}")) from exc
    return module.load_user(path)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _ensure_cwd_on_path() -> None:
    # Like `python -m`: modules next to where the user runs xentcheck are importable.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _import_module(target: str, spec: str) -> types.ModuleType:
    _ensure_cwd_on_path()
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and target.startswith(exc.name):
            if target == spec:  # a bare word: most likely a mistyped built-in
                raise AdapterSpecError(_unknown(spec)) from exc
            raise AdapterSpecError(f"no module named {exc.name!r} (adapter spec {spec!r})") from exc
        raise AdapterSpecError(one_line(f"could not import {target}: {_exc(exc)}")) from exc
    except AdapterUnavailable:
        raise
    except Exception as exc:
        raise AdapterSpecError(one_line(f"could not import {target}: {_exc(exc)}")) from exc


def _import_file(target: str) -> types.ModuleType:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise AdapterSpecError(f"no such adapter file: {target}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"_xentcheck_adapter_{stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise AdapterSpecError(f"cannot import {target} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # before exec: dataclasses and pickling look it up
    try:
        module_spec.loader.exec_module(module)
    except AdapterUnavailable:
        del sys.modules[module_name]
        raise
    except BaseException as exc:
        del sys.modules[module_name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AdapterSpecError(one_line(f"could not import {target}: {_exc(exc)}")) from exc
    return module


def _attribute(obj: Any, attr: str, target: str) -> Any:
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise AdapterSpecError(f"{target} has no attribute {attr!r}") from exc
    return obj


def _provided(obj: Any) -> list[str]:
    found = []
    for function in FUNCTIONS:
        try:
            if callable(getattr(obj, function, None)):
                found.append(function)
        except Exception:  # a property that raises: not provided
            pass
    return found


def _materialize(obj: Any, spec: str) -> Any:
    """Turn what a spec names into the adapter object (see the module docstring)."""
    try:
        if inspect.isclass(obj):
            obj = obj()
        elif not _provided(obj):
            if isinstance(obj, types.ModuleType) and callable(getattr(obj, "load", None)):
                obj = obj.load()
            elif callable(obj):
                obj = obj()
    except (AdapterUnavailable, AdapterSpecError):
        raise
    except Exception as exc:
        raise AdapterSpecError(one_line(f"creating adapter {spec!r} failed: {_exc(exc)}")) from exc
    if not _provided(obj):
        raise AdapterSpecError(
            f"adapter {spec!r} provides none of the contract's functions ({', '.join(FUNCTIONS)})"
        )
    return obj


# --------------------------------------------------------------------------- describing


def accepted_options(function: Any) -> tuple[str, ...]:
    """The options of ``OPTIONS`` that ``function``'s signature accepts (all with ``**kw``)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some C callables have no signature: no options
        return ()
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return OPTIONS
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(o for o in OPTIONS if o in parameters and parameters[o].kind in keyword)


def describe(adapter: Any, *, spec: str, source: str = "spec") -> AdapterInfo:
    """What ``adapter`` provides (function -> accepted options), its name, dtypes, version."""
    provides: dict[str, tuple[str, ...]] = {}
    for function in _provided(adapter):
        options = accepted_options(getattr(adapter, function))
        provides[function] = options if function in FUNCTIONS_WITH_OPTIONS else ()
    return AdapterInfo(
        name=_name(adapter, spec),
        spec=spec,
        provides=provides,
        dtypes=_dtypes(adapter, spec),
        version=_version(adapter),
        source=source,
        dialect=_dialect(adapter),
    )


def _dialect(adapter: Any) -> str:
    """The adapter's declared ``dialect`` (PyTorch's when it declares none); an unknown one
    is a spec error naming the known dialects."""
    declared = _safe_getattr(adapter, "dialect")
    if declared is None:
        return dialects.DEFAULT.name
    try:
        return dialects.dialect(str.__str__(declared) if isinstance(declared, str)
                                else declared).name
    except ValueError as exc:
        raise AdapterSpecError(one_line(f"adapter 'dialect': {exc}")) from None


def _safe_getattr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _name(adapter: Any, spec: str) -> str:
    name = _safe_getattr(adapter, "name")
    if isinstance(name, str) and name:
        return str.__str__(name)  # a plain str: a subclass could run code where it is used
    if spec.startswith("<") and spec.endswith(">"):  # an object passed through the API
        return spec[1:-1]
    if spec.startswith("c:"):
        return Path(spec[2:]).stem
    target, _, attr = spec.rpartition(":")
    if target and attr:
        return attr
    return Path(spec).stem if _looks_like_file(spec) else spec


def _dtypes(adapter: Any, spec: str) -> tuple[str, ...]:
    declared = _safe_getattr(adapter, "dtypes")
    if declared is None:
        return DTYPES
    if isinstance(declared, str):
        declared = (declared,)
    try:
        names = tuple(dtype_name(d) for d in declared)
    except TypeError as exc:
        raise AdapterSpecError(f"adapter {spec!r} declares dtypes {declared!r}: {exc}") from exc
    unknown = [n for n in names if n not in DTYPES]
    if unknown:
        raise AdapterSpecError(
            f"adapter {spec!r} declares unsupported dtypes {unknown}; the dtypes are {DTYPES}"
        )
    return names


def _version(adapter: Any) -> str | None:
    for attribute in ("version", "__version__"):
        value = _safe_getattr(adapter, attribute)
        if isinstance(value, str) and value:
            # a plain str: torch's version is a str subclass whose unpickling in the
            # parent would import torch there
            return str.__str__(value)
    module_name = adapter.__name__ if isinstance(adapter, types.ModuleType) else None
    module_name = module_name or getattr(type(adapter), "__module__", None)
    if not module_name:
        return None
    top = module_name.split(".")[0]
    value = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(value, str):
        return str.__str__(value)
    try:
        return importlib.metadata.version(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


# --------------------------------------------------------------------------- listing


def _unavailable(name: str, spec: str, source: str, reason: str) -> AdapterInfo:
    return AdapterInfo(
        name=name, spec=spec, provides={}, dtypes=(), unavailable=reason, source=source
    )


#: Seconds ``list`` waits for one adapter to load in its worker (importing torch or jax
#: on a cold machine takes several): a slower one is listed as unavailable.
LIST_TIMEOUT = 60.0


def _info_in_worker(handle: AdapterHandle, name: str, source: str) -> AdapterInfo:
    try:
        info = handle.wait()
    except AdapterSpecError as exc:
        return _unavailable(name, name, source, one_line(str(exc)))
    if info.unavailable is not None:
        return _unavailable(name, name, source, info.unavailable)
    return AdapterInfo(name=info.name, spec=name, provides=info.provides, dtypes=info.dtypes,
                       version=info.version, source=source, dialect=info.dialect)


def list_adapters(*, timeout: float = LIST_TIMEOUT) -> list[AdapterInfo]:
    """Every built-in and every entry-point adapter, each loaded in a worker process of its
    own (all at once), with what it provides.

    An adapter that cannot be used says why in ``unavailable``: framework not installed, no
    C compiler, an entry point that fails to import, exits or crashes while loading, or
    takes longer than ``timeout`` seconds to load. Nothing of an adapter runs here.
    """
    names = [(name, "built-in") for name in BUILTINS]
    infos: dict[str, AdapterInfo] = {}
    for name in sorted(_entry_points()):
        if name in BUILTINS:
            reason = f"entry point name {name!r} is taken by a built-in adapter"
            infos[f"entry point:{name}"] = _unavailable(name, name, "entry point", reason)
        else:
            names.append((name, "entry point"))
    handles = [(name, source, WorkerHandle(spec=name, start_timeout=timeout))
               for name, source in names]
    try:
        for name, source, handle in handles:
            infos[f"{source}:{name}"] = _info_in_worker(handle, name, source)
    finally:
        for _, _, handle in handles:
            handle.close()
    order = [f"{source}:{name}" for name, source in names]
    order += [key for key in infos if key not in order]
    return [infos[key] for key in order]


_OPTION_ABBREVIATIONS = {
    "label_smoothing": "smoothing",
    "weight": "weight",
    "ignore_index": "ignore_index",
    "reduction": "reduction",
}


def format_adapter_list(infos: Iterable[AdapterInfo]) -> str:
    """A plain-text table of adapters (tabulate): provides, options, dtypes, version, status.
    Names, versions and reasons come from the adapters: shown terminal-safe."""
    from tabulate import tabulate

    from xentcheck.harness.text import terminal

    rows = []
    for info in infos:
        functions = [f for f in FUNCTIONS if f in info.provides]
        options = sorted(
            {o for f in FUNCTIONS_WITH_OPTIONS for o in info.provides.get(f, ())},
            key=OPTIONS.index,
        )
        rows.append(
            [
                terminal(info.name),
                info.source,
                terminal(info.version or "-"),
                " ".join(info.dtypes) or "-",
                "all" if len(functions) == len(FUNCTIONS) else " ".join(functions) or "-",
                " ".join(_OPTION_ABBREVIATIONS[o] for o in options) or "-",
                info.dialect,
                (OPT_IN.get(info.name, "ok") if info.source == "built-in" else "ok")
                if info.unavailable is None else terminal(f"unavailable: {info.unavailable}"),
            ]
        )
    headers = ["adapter", "source", "version", "dtypes", "provides", "CE options", "dialect",
               "status"]
    widths = [None, None, 24, None, 36, 24, None, 40]
    return tabulate(rows, headers=headers, tablefmt="simple", maxcolwidths=widths)


# --------------------------------------------------------------------------- handles


def open_adapter(
    adapter: str | Any,
    *,
    isolated: bool | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    start_timeout: float | None = DEFAULT_START_TIMEOUT,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
) -> AdapterHandle:
    """A handle to call an adapter through, from a spec or an adapter object.

    Specs run in a persistent worker process by default (``isolated=None``); C adapters
    always do (a spec, or an object from ``c_ctypes``). Any other object runs in this
    process unless ``isolated=True``, which sends it to a worker (a module by its name or
    file, anything else pickled). ``timeout`` is the default per-call limit in seconds
    (``None``: none); it is enforced in workers only. The worker starts in the background:
    open several adapters, then use them. Raises :class:`AdapterSpecError` at once for a
    spec that names nothing; one that fails later in its worker raises it from
    :meth:`AdapterHandle.wait`.
    """
    worker_options = {
        "timeout": timeout,
        "start_timeout": start_timeout,
        "max_restarts": max_restarts,
    }
    if isinstance(adapter, str):
        spec = adapter.strip()
        check_spec(spec)
        if isolated is False and is_c_spec(spec):
            raise AdapterSpecError("C adapters always run in a worker process (isolated=False)")
        if isolated is not False:
            return WorkerHandle(spec=spec, **worker_options)
        source = "built-in" if spec in BUILTINS else "spec"
        try:
            obj, source = load_adapter(spec)
        except AdapterUnavailable as exc:
            info = _unavailable(spec, spec, source, one_line(str(exc)))
            return InProcessHandle(None, info, timeout=timeout)
        return InProcessHandle(obj, describe(obj, spec=spec, source=source), timeout=timeout)
    if isolated is None:
        isolated = type(adapter).__module__.startswith(_C_MODULE)
    if isolated:
        return WorkerHandle(adapter_object=adapter, **worker_options)
    spec = _object_spec(adapter)
    obj = _materialize(adapter, spec)
    return InProcessHandle(obj, describe(obj, spec=spec, source="object"), timeout=timeout)


def _object_spec(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"<{name}>"
