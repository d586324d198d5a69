"""The Python API, mirroring the CLI, for notebooks and scripts.

Each CLI command is one function here (``prunec plan`` -> ``plan``, ``apply`` -> ``apply``,
``lock`` -> ``lock``, ``diff`` -> ``diff``, ``graph`` -> ``draw``); specs and models may be given
as paths or as loaded values::

    from compiler.api import apply, format_plan, load_spec, lock, plan

    spec = load_spec("specs/mnist_shrink.yaml")
    the_plan = plan(model, spec)                   # review it: print(format_plan(the_plan))
    smaller, the_plan, difference = apply(spec, model)

    the_lock = lock(spec, model)                   # write_lock(the_lock, "specs/x.yaml.lock")
    smaller, the_plan, _ = apply(spec, model, lock=the_lock)   # exactly the locked channels

A stale lock (another spec, or a model whose architecture or weights changed) raises
``ArtifactError``, as on the command line.
"""

from __future__ import annotations

import os

import keras

from .custom import register_rule  # the custom-layer API, docs/custom-layers.md
from .diff import Difference, diff_files
from .draw import to_dot, write_graph
from .emit import emit
from .files import write_text
from .graph import ModelGraph, build_graph
from .lock import Lock, check_lock, format_lock, locked_plan, make_lock, read_lock
from .modelio import deep_call, load_model, save_model
from .plan import Plan
from .plan import plan as _plan
from .report import format_plan, plan_to_dict
from .spec import Spec, load_spec, parse_spec
from .verify import verify

__all__ = ["load_spec", "parse_spec", "build_graph", "plan", "emit", "verify", "apply", "rebuild", "resolve", "scorer", "lock",
           "write_lock", "read_lock", "diff", "draw", "format_plan", "plan_to_dict", "load_model",
           "save_model", "register_rule", "drawing", "ModelGraph", "Plan", "Spec", "Lock", "Difference"]

_IN_MEMORY = "<lock>"


_ORDER = "plan() and draw() take (model, spec); apply() and lock() take (spec, model)"


def _spec(spec: Spec | str | os.PathLike) -> Spec:
    if isinstance(spec, (keras.Model, ModelGraph)):
        raise TypeError(f"expected a spec (a Spec or a YAML file), got a model: {_ORDER}")
    return spec if isinstance(spec, Spec) else load_spec(spec)


def _model(model: keras.Model | str | os.PathLike, trust: bool = False) -> keras.Model:
    return _load(model, trust)[0]


def _load(model, trust: bool = False) -> tuple[keras.Model, str | None]:
    """The model, and the file it came from (None for a model given loaded)."""
    if isinstance(model, Spec):
        raise TypeError(f"expected a model (a keras.Model or a .keras file), got a spec: {_ORDER}")
    if isinstance(model, keras.Model):
        return model, None
    return load_model(model, trust=trust), os.fsdecode(model)


def _lock(lock: Lock | str | os.PathLike, lock_path: str | None = None) -> tuple[Lock, str]:
    if isinstance(lock, Lock):
        return lock, lock_path or _IN_MEMORY
    return read_lock(lock), os.fsdecode(lock)


def scorer(spec: Spec, data=None, batch_size: int | None = None):
    """The ``criteria.Scorer`` a plan of ``spec`` ranks with: ``data`` (a path, arrays, a
    dataset, any iterable of batches), else the spec's ``data:``; read only by data criteria."""
    from .criteria import Scorer
    from .data import DEFAULT_BATCH_SIZE, as_data
    source = data if data is not None else spec.data
    loaded = None if source is None else as_data(source, batch_size or DEFAULT_BATCH_SIZE)
    return Scorer(loaded, spec.loss, spec.locations.get("loss", spec.path))


def resolve(model, spec: Spec, lock=None, trust: bool = False,
            lock_path: str | None = None, data=None,
            batch_size: int | None = None) -> tuple[keras.Model, Plan]:
    """The pipeline's front half, used by every command: model (loaded if a path) -> graph ->
    plan, or exactly the plan of ``lock`` (whose messages name ``lock_path``; it needs no data).
    ``data`` feeds data criteria (``scorer``)."""
    if isinstance(model, ModelGraph):
        graph, model_path = model, None
    else:
        loaded, model_path = _load(model, trust)
        graph = build_graph(loaded)
    if lock is None:
        return graph.model, _plan(graph, spec, scorer(spec, data, batch_size))
    lock, lock_path = _lock(lock, lock_path)
    check_lock(lock, lock_path, spec, graph.model, model_path)
    return graph.model, locked_plan(graph, spec, lock, lock_path)


def plan(model: keras.Model | ModelGraph | str | os.PathLike, spec: Spec | str | os.PathLike,
         lock: Lock | str | os.PathLike | None = None, trust: bool = False, data=None,
         batch_size: int | None = None) -> Plan:
    """Resolve ``spec`` on a model (or its ``build_graph``); with ``lock``, exactly its channels.
    ``data`` (a .npz/.npy path, arrays, ``(x, y)``, a ``tf.data.Dataset``, batches) feeds the
    data criteria (activation, apoz, taylor); by default the spec's ``data:``.

    ``trust=True`` loads a model file that carries Python code (``--trust-model-code``).

    >>> the_plan = plan(model, "specs/mnist_fc1.yaml")        # doctest: +SKIP
    >>> the_plan.params                                       # doctest: +SKIP
    (1663370, 1348670)
    """
    return resolve(model, _spec(spec), lock, trust, data=data, batch_size=batch_size)[1]


def apply(spec: Spec | str | os.PathLike, model: keras.Model | str | os.PathLike,
          mode: str = "slice", check: bool = True,
          lock: Lock | str | os.PathLike | None = None,
          trust: bool = False, data=None,
          batch_size: int | None = None) -> tuple[keras.Model, Plan, float | None]:
    """Plan ``spec`` on ``model``, rebuild it, and (unless ``check=False``) verify the law.

    Returns the rebuilt model, the plan, and the verified relative difference (None when not
    checked, or when the plan holds approximate groups, which the law does not cover). With
    ``lock`` (a ``Lock`` or a lock file), the locked channels are removed, or ``ArtifactError``.
    """
    model, resolved = resolve(model, _spec(spec), lock, trust, data=data, batch_size=batch_size)
    return rebuild(model, resolved, mode=mode, check=check)


def rebuild(model: keras.Model, resolved: Plan, mode: str = "slice",
            check: bool = True) -> tuple[keras.Model, Plan, float | None]:
    """``emit`` a plan already made for ``model``, then ``verify`` it as ``apply`` does.

    Both run in ``deep_call``: Keras recurses once per layer when it clones and calls a model.
    """
    rebuilt = deep_call(emit, model, resolved, mode=mode)
    difference = None
    if check and not resolved.approximate:
        difference = deep_call(verify, model, rebuilt, resolved, mode=mode)
    return rebuilt, resolved, difference


def lock(spec: Spec | str | os.PathLike, model: keras.Model | str | os.PathLike,
         lock_path: str | None = None, trust: bool = False, data=None,
         batch_size: int | None = None) -> Lock:
    """Resolve ``spec`` on ``model`` and return its lock (``write_lock`` writes it).

    A model given as a path is recorded in the lock, relative to ``lock_path`` (by default
    ``SPEC.lock``), so that ``prunec lock --check`` can find it; so is a data file a data
    criterion ranked on.
    """
    spec = _spec(spec)
    model, model_path = _load(model, trust)
    resolved = _plan(build_graph(model), spec, scorer(spec, data, batch_size))
    source = data if data is not None else spec.data
    data_path = os.fsdecode(source) if isinstance(source, (str, os.PathLike)) else None
    return make_lock(spec, model, resolved, model_path, lock_path, data_path)


def write_lock(the_lock: Lock, path: str | os.PathLike) -> None:
    """Write a lock file atomically (deterministic text: commit it, diff it)."""
    write_text(path, format_lock(the_lock))


def diff(old: str | os.PathLike, new: str | os.PathLike) -> Difference:
    """Compare two lock files or JSON plans: ``.equal`` and ``.text()``, as ``prunec diff``."""
    return diff_files(os.fsdecode(old), os.fsdecode(new))


def draw(model: keras.Model | str | os.PathLike, spec: Spec | str | os.PathLike | None = None,
         out: str | os.PathLike | None = None, trust: bool = False) -> str:
    """The dependency graph as DOT text (and written to ``out``: .dot, .svg, .png, .pdf)."""
    return drawing(model, spec, out, trust)[0]


def drawing(model, spec=None, out=None, trust: bool = False) -> tuple[str, ModelGraph, Plan | None]:
    """``draw``, also returning the graph and the plan drawn (``prunec graph`` reports both)."""
    inputs = {"the input model": None if isinstance(model, keras.Model) else model,
              "the spec": spec.path if isinstance(spec, Spec) else
              spec if isinstance(spec, (str, os.PathLike)) else None}
    graph = build_graph(_model(model, trust))
    resolved = None if spec is None else _plan(graph, _spec(spec))
    text = to_dot(graph, resolved)
    if out is not None:
        write_graph(text, out, protect=inputs)
    return text, graph, resolved

