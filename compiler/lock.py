"""Lock files: the exact channels of a reviewed plan, bound to the spec and model they came from.

``prunec lock SPEC`` resolves the spec (criteria included) and writes ``SPEC.lock``: every removed
group with, per member (producer layer), the channel indices it loses, plus three fingerprints:

* the spec: SHA-256 of its parsed content with defaults applied (canonical JSON of every rule),
  so comments, formatting, key order, spelling out a default and the ``model:`` path do not
  invalidate a lock, while any change to what the rules say does;
* the model's architecture: SHA-256 of the canonical JSON of its class and ``get_config()``;
* the model's weights: SHA-256 over every weight's path, dtype, shape and bytes, in order of
  variable path (optimizer and random-seed state are not weights and do not count);

and a digest of its own decisions (``decisions_sha256``, over its totals and groups), so that a
hand edit which keeps every count (``[1, 10, 12]`` -> ``[1, 10, 13]``) is refused on reading.
When a data criterion ranked the channels, the lock also records that data (``data``: its file
relative to the lock, and the SHA-256 the criterion read), so that ``lock --check`` can re-rank on
the same data, and says so when the data changed.

``prunec apply --locked`` never re-runs a criterion: after both fingerprints match, each locked
member becomes an explicit rule (``layer: <member>, remove: <indices>``), that spec is planned on
the model, and the result must resolve to exactly the locked groups and totals (the numbers a
reviewer read), and agree with every explicit ``remove``/``keep`` rule of the spec, or nothing is
written.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import (ARTIFACT_VERSION, DIGEST_KEY, LOCK_FORMAT, decisions_digest, read_artifact,
                        render_json)
from .errors import ArtifactError, ConstraintError
from .layout import OUTPUTS
from .plan import GroupChange, Member, Plan, plan as make_plan
from .report import compress_indices, group_to_dict
from .spec import Spec, SpecRule

__all__ = ["Lock", "make_lock", "format_lock", "read_lock", "lock_to_dict", "lock_from_dict",
           "default_lock_path", "spec_fingerprint", "model_fingerprint", "check_lock",
           "locked_spec", "locked_plan", "lock_spec_path", "lock_model_path", "lock_data_path"]

_NOT_CONTENT = {"number", "where", "locations"}  # SpecRule fields that say where, not what
_DEFAULTS = {"unit": "outputs"}   # fields added later: at their default, old locks stay current
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class Lock:
    """A lock file's content. ``groups`` are the plan's groups, exactly."""

    spec_file: str
    spec_sha256: str
    model_file: str | None          # relative to the lock file's directory, '/' separated
    model_name: str
    architecture_sha256: str
    weights_sha256: str
    params: tuple[int, int]
    flops: tuple[int, int]
    groups: tuple[GroupChange, ...]
    # the data a data criterion ranked on: {"file": relative path or None, "sha256": ...}
    data: dict | None = None


def default_lock_path(spec_path: str) -> str:
    """``specs/x.yaml`` -> ``specs/x.yaml.lock``: the lock sits next to its spec, name and all."""
    return os.fsdecode(spec_path) + ".lock"


def spec_fingerprint(spec: Spec) -> str:
    """SHA-256 of what the spec says: its version and every rule field, defaults applied."""
    rules = [{f.name: getattr(rule, f.name) for f in dataclasses.fields(SpecRule)
              if f.name not in _NOT_CONTENT and getattr(rule, f.name) != _DEFAULTS.get(f.name)}
             for rule in spec.rules]
    text = json.dumps({"version": spec.version, "rules": rules}, sort_keys=True,
                      separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_fingerprint(model) -> tuple[str, str]:
    """``(architecture sha256, weights sha256)`` of a Keras model."""
    config = {"class": type(model).__name__, "config": model.get_config()}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_plain)
    architecture = hashlib.sha256(text.encode("utf-8")).hexdigest()
    weights = hashlib.sha256()
    for variable in sorted(model.weights, key=lambda v: v.path):
        value = np.ascontiguousarray(variable.numpy())
        header = json.dumps([variable.path, str(value.dtype), list(value.shape)])
        weights.update(header.encode("utf-8") + b"\n")
        weights.update(value.tobytes())
    return architecture, weights.hexdigest()


def _plain(value):
    """JSON for the odd value inside a config: numpy scalars and arrays, bytes, anything else."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    return _ADDRESS.sub("", f"{type(value).__qualname__}:{value!r}")  # no memory addresses


def make_lock(spec: Spec, model, plan: Plan, model_path: str | None = None,
              lock_path: str | None = None, data_path: str | None = None) -> Lock:
    """The lock of ``plan`` (resolved from ``spec`` on ``model``, loaded from ``model_path``;
    a data criterion read ``data_path``, if the data was a file)."""
    architecture, weights = model_fingerprint(model)
    base = os.path.dirname(os.path.abspath(lock_path or default_lock_path(spec.path)))

    def relative(path):
        return None if path is None else \
            Path(os.path.relpath(os.path.abspath(path), base)).as_posix()

    data = None
    if plan.data_sha256:
        data = {"file": relative(data_path), "sha256": plan.data_sha256}
    return Lock(relative(spec.path), spec_fingerprint(spec), relative(model_path), model.name,
                architecture, weights, plan.params, plan.flops, plan.groups, data)


def lock_to_dict(lock: Lock) -> dict:
    """The JSON form, keys in the order of ``schemas/lock.schema.json``."""
    data = {
        "format": LOCK_FORMAT,
        "version": ARTIFACT_VERSION,
        "spec": {"file": lock.spec_file, "sha256": lock.spec_sha256},
        "model": {"file": lock.model_file, "name": lock.model_name,
                  "architecture_sha256": lock.architecture_sha256,
                  "weights_sha256": lock.weights_sha256},
        **({"data": dict(lock.data)} if lock.data else {}),
        "totals": {"params": {"before": lock.params[0], "after": lock.params[1]},
                   "flops": {"before": lock.flops[0], "after": lock.flops[1]}},
        "groups": [group_to_dict(group) for group in lock.groups],
    }
    data[DIGEST_KEY] = decisions_digest(data)
    return data


def format_lock(lock: Lock) -> str:
    """Deterministic text: the same lock gives the same bytes, one group member a line."""
    return render_json(lock_to_dict(lock), rows=("members",), lines=("spec", "model"))


def lock_from_dict(data: dict, where: str) -> Lock:
    """A ``Lock`` from schema-checked JSON; indices must be ascending, each given once."""
    groups = []
    for group in data["groups"]:
        members = []
        for member in group["members"]:
            removed = member["removed"]
            if any(b <= a for a, b in zip(removed, removed[1:])):
                raise ArtifactError(
                    f"group {group['group']}, layer '{member['layer']}': removed indices must be "
                    "ascending and unique", where, "was it edited by hand? write it again with "
                    "'prunec lock'")
            members.append(Member(member["layer"], tuple(removed), member.get("unit", OUTPUTS)))
        groups.append(GroupChange(group["group"], tuple(group["rules"]), tuple(members),
                                  tuple(group["coupled_by"]), group["approximate"]))
    totals = data["totals"]
    return Lock(data["spec"]["file"], data["spec"]["sha256"], data["model"]["file"],
                data["model"]["name"], data["model"]["architecture_sha256"],
                data["model"]["weights_sha256"],
                (totals["params"]["before"], totals["params"]["after"]),
                (totals["flops"]["before"], totals["flops"]["after"]), tuple(groups),
                data.get("data"))


def read_lock(path: str | os.PathLike) -> Lock:
    """Read and check a lock file; any problem is an ``ArtifactError`` naming the file."""
    where = os.fsdecode(path)
    _, data = read_artifact(where, expect="lock")
    return lock_from_dict(data, where)


def lock_spec_path(lock: Lock, lock_path: str) -> str:
    """The spec the lock was made from, as a path usable from the current directory."""
    return os.path.normpath(os.path.join(os.path.dirname(lock_path), lock.spec_file))


def lock_model_path(lock: Lock, lock_path: str) -> str | None:
    """The model file the lock was made from, as a path usable from the current directory."""
    if lock.model_file is None:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(lock_path), lock.model_file))


def lock_data_path(lock: Lock, lock_path: str) -> str | None:
    """The data file a data criterion ranked on, as a path usable from the current directory."""
    if not lock.data or lock.data.get("file") is None:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(lock_path), lock.data["file"]))


def check_lock(lock: Lock, lock_path: str, spec: Spec, model=None, model_path: str | None = None) -> None:
    """Raise ``ArtifactError`` unless ``spec`` (and ``model``, if given) are the locked ones."""
    again = f"review 'prunec plan {spec.path}', then run 'prunec lock {spec.path}' again"
    if spec_fingerprint(spec) != lock.spec_sha256:
        raise ArtifactError(f"the spec '{spec.path}' changed since this lock was written",
                            lock_path, again)
    if model is None:
        return
    architecture, weights = model_fingerprint(model)
    name = f"the model '{model_path}'" if model_path else f"the model '{model.name}'"
    if architecture != lock.architecture_sha256:
        raise ArtifactError(f"{name} is not the locked model: its architecture changed since "
                            "this lock was written", lock_path, again)
    if weights != lock.weights_sha256:
        raise ArtifactError(f"{name} is not the locked model: its weights changed since this "
                            "lock was written, so the locked channels were chosen for other "
                            "weights", lock_path, again)


def locked_spec(lock: Lock, lock_path: str) -> Spec:
    """The explicit spec a lock stands for: one ``remove`` rule per group member."""
    rules = []
    for group in lock.groups:
        for layer, removed, unit in group.members:
            rules.append(SpecRule(
                number=len(rules) + 1, where=f"{lock_path}: group {group.number}",
                layer=glob.escape(layer), type=None, exclude=(), remove=tuple(removed), keep=None,
                fraction=None, count=None, criterion="l1", round_to=None, min_keep=None,
                optional=False, exact=not group.approximate, unit=unit))
    return Spec(path=lock_path, version=1, model=None, rules=tuple(rules))


def _check_explicit_rules(graph, spec: Spec, lock: Lock, lock_path: str, again: str) -> None:
    """Raise unless the lock removes what the spec's ``remove``/``keep`` rules decide.

    Those rules need no criterion, so planning them alone is cheap. A layer such a rule names
    must lose exactly those channels in the lock; a layer coupled to it at least those (another
    rule may remove more of a coupled set). A forged lock can carry a matching digest, not this.
    """
    explicit = tuple(r for r in spec.rules if r.remove is not None or r.keep is not None)
    if not explicit:
        return
    try:
        wanted = make_plan(graph, dataclasses.replace(spec, rules=explicit)).groups
    except ConstraintError as error:
        raise ArtifactError(f"the spec's explicit rules cannot be planned on this model: "
                            f"{error.message}", lock_path, again) from None
    locked = {(m.layer, m.unit): m.removed for g in lock.groups for m in g.members}
    for group in wanted:
        for layer, removed, unit in group.members:
            has = locked.get((layer, unit), ())
            named = [r for r in explicit if r.number in group.rules and _names(r, layer)]
            if has == removed or (not named and set(removed) <= set(has)):
                continue
            rule = (named or [r for r in explicit if r.number in group.rules])[0]
            raise ArtifactError(f"the lock disagrees with {rule.label()} of the spec: the rule "
                                f"removes [{compress_indices(removed)}] of '{layer}', the lock "
                                f"{f'[{compress_indices(has)}]' if has else 'nothing'}",
                                lock_path, again)


def _names(rule: SpecRule, layer: str) -> bool:
    """Whether ``rule`` selects ``layer`` by name (so decides every one of its channels)."""
    return (rule.layer is not None and rule.type is None
            and (layer == rule.layer or fnmatch.fnmatchcase(layer, rule.layer))
            and not any(fnmatch.fnmatchcase(layer, pattern) for pattern in rule.exclude))


def locked_plan(graph, spec: Spec, lock: Lock, lock_path: str) -> Plan:
    """Plan exactly the locked channels on ``graph``; ``spec`` only names the plan.

    Check the fingerprints first (``check_lock``); this then refuses a lock whose indices no
    longer resolve to its groups (a hand-edited lock, or a prunec whose rules changed).
    """
    again = f"run 'prunec lock {spec.path}' again and review the change with 'prunec diff'"
    _check_explicit_rules(graph, spec, lock, lock_path, again)
    try:
        resolved = make_plan(graph, locked_spec(lock, lock_path))
    except ConstraintError as error:
        raise ArtifactError(f"the locked channels cannot be removed from this model: "
                            f"{error.message}", lock_path, again) from None
    got = {frozenset(g.members) for g in resolved.groups}
    want = {frozenset(g.members) for g in lock.groups}
    if got != want:
        extra = sorted(owner for g in got - want for owner, _ in g)
        missing = sorted(owner for g in want - got for owner, _ in g)
        detail = "; ".join(filter(None, (
            f"also removes channels of {', '.join(dict.fromkeys(extra))}" if extra else "",
            f"no longer matches the locked groups of {', '.join(dict.fromkeys(missing))}"
            if missing else "")))
        raise ArtifactError(f"the locked channels do not resolve to the locked groups on this "
                            f"model ({detail})", lock_path, again)
    if (resolved.params, resolved.flops) != (lock.params, lock.flops):
        raise ArtifactError(f"the lock's totals (params {lock.params[0]} -> {lock.params[1]}, FLOPs "
                            f"{lock.flops[0]} -> {lock.flops[1]}) are not what its groups remove "
                            f"(params {resolved.params[0]} -> {resolved.params[1]}, FLOPs "
                            f"{resolved.flops[0]} -> {resolved.flops[1]}): was it edited by hand?",
                            lock_path, again)
    by_members = {frozenset(g.members): g for g in lock.groups}
    groups = tuple(dataclasses.replace(by_members[frozenset(g.members)], number=g.number,
                                       sizes=g.sizes)
                   for g in resolved.groups)
    return dataclasses.replace(resolved, spec_path=spec.path, groups=groups, notes=())
