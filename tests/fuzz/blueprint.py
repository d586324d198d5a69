"""Random-model blueprints for differential fuzzing, and what the fuzzer knows about each model.

A ``Blueprint`` is plain data (a repr that is valid Python, so a failing example can be pasted into a
regression test): input shapes, a list of blocks applied to the current tensor, a head, a seed.
``build(blueprint)`` turns it into a Keras model and, *while building it*, records the model's
channel facts itself, without any prunec code:

* every channel a producer (Dense, Conv2D) or an input creates has an id ``(owner, j)``; the owner
  is the producer's layer path (``n4/d1`` inside a nested model) or ``input 'name'``;
* every tensor carries its *provenance*: per position of its last axis, the set of ids it carries
  (Add and Multiply unite two sets, Concatenate lays lists side by side, Flatten tiles the list
  once per spatial position, a depthwise multiplier ``m`` repeats each entry ``m`` times, a split or
  ``x[..., a:b]`` takes ranges of it, a channel shuffle interleaves its groups);
* *coupling* (a union-find over ids): ids that must go together because an elementwise merge
  combines them, because a shared layer's kernel row is read at several calls, or because a
  channel shuffle keeps index ``j`` of every group together;
* *sections* of splits and slices: none may lose every channel, equal ones must lose as many;
* *fixed* ids, that no removal may take: model inputs, anything reaching a model output, anything
  read or produced by a layer with no rule (a softmax over channels, an unknown custom layer), and
  the outputs of a Dense whose own activation is a softmax;
* every call of every channel-mixing layer with the provenance of its input (of each argument it
  reads, for a ``MultiHeadAttention``: query, value, key), which is where the correctness law
  zeroes removed channels;
* *units* other than output channels: a ``MultiHeadAttention``'s heads are fresh ids of their own
  (owner ``mha3:heads``), fixed when the call returns its attention scores (their head axis would
  shrink); a removed head's reference is the original with that head's value projection zeroed.

Sequence models (input ``(T, C)``) add attention blocks: self- and cross-attention (the value from
a branch of the stream or a second model input, a separate key, ``value_dim``, ``output_shape``,
``use_gate``, an attention mask computed by a Dense from the stream, a causal mask), an
``EinsumDense`` (its input channels contracted into the kernel, or summed without it: then fixed),
FFN pairs (``Dense(f, act) -> Dense(C)`` with a residual ``Add``) and LayerNormalization, which
fixes the channels through it (removal there is approximate, and the fuzzer's specs stay exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import keras

from compiler.api import register_rule
from models import randomize

L = keras.layers

__all__ = ["Blueprint", "Facts", "Built", "build", "owner", "Opaque", "Scale"]

OUTPUTS, HEADS = "outputs", "heads"


def owner(path: str, unit: str) -> str:
    """The owner of a unit's ids: the layer path for output channels, ``path:unit`` else."""
    return path if unit == OUTPUTS else f"{path}:{unit}"


@keras.saving.register_keras_serializable(package="prunec_fuzz")
class Opaque(keras.layers.Layer):
    """A user layer prunec has no rule for (it scales each channel, but prunec cannot know that)."""

    def call(self, x):
        return x * 1.5


@keras.saving.register_keras_serializable(package="prunec_fuzz")
class Scale(keras.layers.Layer):
    """A user layer with a rule from ``register_rule``: ``y[..., c] = x[..., c] * s[c] + t[c]``."""

    def build(self, input_shape):
        self.s = self.add_weight(name="s", shape=(input_shape[-1],))
        self.t = self.add_weight(name="t", shape=(input_shape[-1],))

    def call(self, x):
        return x * self.s + self.t


register_rule(Scale, "per_channel", weights={"s": -1, "t": -1})

_MERGES = {"add": L.Add, "subtract": L.Subtract, "maximum": L.Maximum, "minimum": L.Minimum,
           "average": L.Average, "multiply": L.Multiply}


@dataclass(frozen=True)
class Blueprint:
    """``inputs``: shapes without batch; ``blocks``: tuples ``(kind, *params)``; ``head``: tuple."""

    inputs: tuple
    blocks: tuple
    head: tuple
    seed: int = 0


class Facts:
    """What the fuzzer knows about a model it built; see the module docstring."""

    def __init__(self) -> None:
        self.parent: dict = {}
        self.fixed: dict = {}                        # id -> reason
        self.owners: dict[str, list] = {}            # producer/input/opaque owner -> its ids
        self.calls: dict[str, list] = {}             # path -> [(input provenance, output provenance)]
        self.kinds: dict[str, tuple[str, ...]] = {}  # path -> class names along the MRO
        self.mixing: set[str] = set()                # paths of channel-mixing layers
        # (call name, equal, sections): sections of a split or slice, as provenance lists; none
        # may lose every channel, and ``equal`` ones must lose as many each
        self.sections: list[tuple[str, bool, list]] = []
        self.units: dict[str, dict[str, list]] = {}  # path -> unit (heads) -> its provenance
        # path -> per call, {argument name: provenance} of a layer that reads several tensors
        self.arguments: dict[str, list[dict]] = {}

    # -- ids and coupling ---------------------------------------------------------------------
    def fresh(self, owner: str, size: int) -> list[frozenset]:
        ids = [(owner, j) for j in range(size)]
        self.owners.setdefault(owner, ids)
        for i in ids:
            self.parent.setdefault(i, i)
        return [frozenset([i]) for i in self.owners[owner]]

    def find(self, i):
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def unite(self, ids) -> None:
        ids = list(ids)
        for other in ids[1:]:
            a, b = self.find(ids[0]), self.find(other)
            if a != b:
                self.parent[max(a, b)] = min(a, b)

    def group(self, position: frozenset):
        return self.find(next(iter(position)))

    def fix(self, provenance, reason: str) -> None:
        for position in provenance:
            for i in position:
                self.fixed.setdefault(i, reason)

    # -- derived ------------------------------------------------------------------------------
    def groups(self) -> dict:
        """group root -> every id in it."""
        out: dict = {}
        for i in self.parent:
            out.setdefault(self.find(i), set()).add(i)
        return out

    def fixed_groups(self) -> set:
        return {self.find(i) for i in self.fixed}

    def output_layouts(self, path: str) -> list[list]:
        """The distinct output provenances of every call of ``path``, as lists of group roots."""
        seen = []
        for _, out in self.calls.get(path, ()):
            if out is None:
                continue
            roots = [self.group(p) for p in out]
            if roots not in seen:
                seen.append(roots)
        return seen

    def layouts(self, path: str, unit: str = OUTPUTS) -> list[list]:
        """``output_layouts`` for output channels; the unit's one layout (group roots) else."""
        if unit == OUTPUTS:
            return self.output_layouts(path)
        provenance = self.units.get(path, {}).get(unit)
        return [] if provenance is None else [[self.group(p) for p in provenance]]

    def components(self) -> dict:
        """group root -> number of its coupled set: owners joined when a group spans both."""
        owner_parent = {o: o for o in self.owners}

        def find(o):
            while owner_parent[o] != o:
                owner_parent[o] = owner_parent[owner_parent[o]]
                o = owner_parent[o]
            return o

        for members in self.groups().values():
            owners = sorted({owner for owner, _ in members})
            for other in owners[1:]:
                a, b = find(owners[0]), find(other)
                if a != b:
                    owner_parent[max(a, b)] = min(a, b)
        return {root: find(next(iter(members))[0]) for root, members in self.groups().items()}

    def zero_map(self, removed_groups: set) -> dict[str, list[int]]:
        """For each channel-mixing layer, the input positions that carry a removed channel."""
        zero = {}
        for path in sorted(self.mixing):
            if path in self.arguments:
                named = {tuple((name, tuple(j for j, p in enumerate(prov) if self.group(p) in
                                            removed_groups)) for name, prov in call.items())
                         for call in self.arguments[path]}
                if len(named) != 1:
                    raise AssertionError(f"{path}: calls would zero different inputs {named}")
                positions = {name: list(pos) for name, pos in next(iter(named)) if pos}
                if positions:
                    zero[path] = positions
                continue
            per_call = {tuple(j for j, p in enumerate(inp) if self.group(p) in removed_groups)
                        for inp, _ in self.calls[path]}
            if len(per_call) != 1:
                raise AssertionError(f"{path}: calls would zero different inputs {per_call}")
            (positions,) = per_call
            if positions:
                zero[path] = list(positions)
        return zero


    def zeroed_heads(self, removed_groups: set) -> dict:
        """For each attention layer losing heads: its value projection's entries of those heads
        (``reference.zero_weights`` form), which silence them."""
        zero = {}
        for path, units in sorted(self.units.items()):
            heads = [h for h, p in enumerate(units.get(HEADS, ())) if self.group(p) in removed_groups]
            if heads:
                zero[path] = {"value/kernel": (1, heads), "value/bias": (0, heads)}
        return zero


@dataclass
class Built:
    model: keras.Model
    facts: Facts
    blueprint: Blueprint
    widths: dict = field(default_factory=dict)   # owner (``owner()``) -> its width


class _Tensor:
    __slots__ = ("x", "prov")

    def __init__(self, x, prov):
        self.x, self.prov = x, list(prov)

    @property
    def shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    @property
    def image(self) -> bool:
        return len(self.x.shape) == 4

    @property
    def sequence(self) -> bool:
        return len(self.x.shape) == 3


class _Builder:
    def __init__(self, blueprint: Blueprint):
        self.bp = blueprint
        self.facts = Facts()
        self.count = 0
        self.widths: dict[str, int] = {}
        self.outputs: list[_Tensor] = []

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    # -- recording calls ----------------------------------------------------------------------
    def record(self, path: str, layer, inputs: list[_Tensor], out_prov) -> None:
        self.facts.kinds.setdefault(path, tuple(c.__name__ for c in type(layer).__mro__))
        self.facts.calls.setdefault(path, []).append(
            (inputs[0].prov if len(inputs) == 1 else None, out_prov))

    def producer(self, layer, t: _Tensor, path: str | None = None, prefix: str = "") -> _Tensor:
        """Call a Dense/Conv2D; the outputs are fresh ids (the same ids at every call)."""
        path = prefix + layer.name if path is None else path
        x = layer(t.x)
        width = int(x.shape[-1])
        prov = self.facts.fresh(path, width)
        if path in self.facts.calls:          # a shared layer: kernel row i is read at each call
            first_input = self.facts.calls[path][0][0]
            for mine, theirs in zip(t.prov, first_input):
                self.facts.unite([next(iter(mine)), next(iter(theirs))])
        self.facts.mixing.add(path)
        self.widths[path] = width
        self.record(path, layer, [t], prov)
        if getattr(layer, "activation", None) is keras.activations.softmax:
            self.facts.fix(prov, f"'{path}' has a softmax activation")
        return _Tensor(x, prov)

    def same(self, layer, t: _Tensor, prefix: str = "") -> _Tensor:
        """Call a layer whose output channel c is a function of input channel c alone."""
        x = layer(t.x)
        self.record(prefix + layer.name, layer, [t], t.prov)
        return _Tensor(x, t.prov)

    def merge(self, layer, a: _Tensor, b: _Tensor) -> _Tensor:
        x = layer([a.x, b.x])
        prov = [pa | pb for pa, pb in zip(a.prov, b.prov)]
        for position in prov:
            self.facts.unite(position)
        self.record(layer.name, layer, [a, b], prov)
        return _Tensor(x, prov)

    def opaque(self, layer, t: _Tensor, reason: str) -> _Tensor:
        x = layer(t.x)
        self.facts.fix(t.prov, reason)
        prov = self.facts.fresh(layer.name, int(x.shape[-1]))
        self.facts.fix(prov, reason)
        self.record(layer.name, layer, [t], prov)
        return _Tensor(x, prov)

    def new_producer(self, t: _Tensor, width: int, kind: str = "", activation=None, kernel: int = 1,
                     name: str | None = None):
        if t.image:
            return L.Conv2D(width, kernel, padding="same", activation=activation,
                            name=name or self.name(kind or "c"))
        return L.Dense(width, activation=activation, name=name or self.name(kind or "d"))

    # -- blocks -------------------------------------------------------------------------------
    def block(self, t: _Tensor, kind: str, *p) -> _Tensor:
        f = self.facts
        if kind == "dense":
            units, activation = p
            return self.producer(L.Dense(units, activation=activation, name=self.name("d")), t)
        if kind == "conv":
            filters, kernel, padding, activation, use_bias = p
            return self.producer(L.Conv2D(filters, kernel, padding=padding, activation=activation,
                                          use_bias=use_bias, name=self.name("c")), t)
        if kind == "depthwise":
            (multiplier,) = p
            layer = L.DepthwiseConv2D(3, padding="same", depth_multiplier=multiplier,
                                      name=self.name("dw"))
            x = layer(t.x)
            prov = [pos for pos in t.prov for _ in range(multiplier)]
            self.record(layer.name, layer, [t], prov)
            return _Tensor(x, prov)
        if kind == "merge":                     # a branch of the same width, merged elementwise
            how, left = p
            branch = self.producer(self.new_producer(t, t.shape[-1], activation="tanh"), t)
            a, b = (branch, t) if left else (t, branch)
            return self.merge(_MERGES[how](name=self.name(how[:3])), a, b)
        if kind == "prelu":
            (shared,) = p
            axes = ([1, 2] if t.image else [1] if t.sequence else None) if shared else None
            layer = L.PReLU(shared_axes=axes, name=self.name("pr"))
            return self.same(layer, t)
        if kind == "scale":
            return self.same(Scale(name=self.name("sc")), t)
        if kind == "spatial":
            (how,) = p
            layer = {"up": L.UpSampling2D(2, name=self.name("up")),
                     "pad": L.ZeroPadding2D(1, name=self.name("pad")),
                     "drop": L.Dropout(0.3, name=self.name("drop")),
                     "sdrop": L.SpatialDropout2D(0.3, name=self.name("drop"))}[how]
            return self.same(layer, t)
        if kind == "grouped":                   # Conv2D(groups == channels): depthwise in disguise
            (multiplier,) = p
            layer = L.Conv2D(t.shape[-1] * multiplier, 3, padding="same", groups=t.shape[-1],
                             name=self.name("g"))
            x = layer(t.x)
            prov = [pos for pos in t.prov for _ in range(multiplier)]
            self.record(layer.name, layer, [t], prov)
            return _Tensor(x, prov)
        if kind == "separable":
            filters, multiplier = p
            return self.producer(L.SeparableConv2D(filters, 3, padding="same",
                                                   depth_multiplier=multiplier, name=self.name("sep")), t)
        if kind == "transpose":
            (filters,) = p
            return self.producer(L.Conv2DTranspose(filters, 3, padding="same", name=self.name("tr")), t)
        if kind == "bn":
            center, scale = p
            return self.same(L.BatchNormalization(center=center, scale=scale, name=self.name("bn")), t)
        if kind == "relu":
            return self.same(L.ReLU(name=self.name("r")), t)
        if kind == "pool":
            (how,) = p
            cls = L.MaxPooling2D if how == "max" else L.AveragePooling2D
            return self.same(cls(2, padding="same", name=self.name("p")), t)
        if kind == "gap":
            pool = L.GlobalAveragePooling2D if t.image else L.GlobalAveragePooling1D
            return self.same(pool(name=self.name("gap")), t)
        if kind == "flatten":
            layer = L.Flatten(name=self.name("f"))
            x = layer(t.x)
            positions = prod(t.shape[:-1])
            prov = [pos for _ in range(positions) for pos in t.prov]   # index = position*C + c
            self.record(layer.name, layer, [t], prov)
            return _Tensor(x, prov)
        if kind == "residual":
            with_bn, left = p
            branch = self.producer(self.new_producer(t, t.shape[-1], kernel=3 if t.image else 1), t)
            if with_bn:
                branch = self.same(L.BatchNormalization(name=self.name("bn")), branch)
            a, b = (branch, t) if left else (t, branch)
            return self.merge(L.Add(name=self.name("add")), a, b)
        if kind == "concat":
            width, left = p
            branch = self.producer(self.new_producer(t, width, activation="relu"), t)
            a, b = (branch, t) if left else (t, branch)
            layer = L.Concatenate(name=self.name("cat"))
            x = layer([a.x, b.x])
            prov = a.prov + b.prov
            self.record(layer.name, layer, [a, b], prov)
            return _Tensor(x, prov)
        if kind == "se":
            (reduce,) = p
            channels = t.shape[-1]
            s = self.same(L.GlobalAveragePooling2D(name=self.name("sq")), t)
            s = self.same(L.Reshape((1, 1, channels), name=self.name("rs")), s)
            s = self.producer(L.Conv2D(reduce, 1, activation="relu", name=self.name("sr")), s)
            s = self.producer(L.Conv2D(channels, 1, activation="sigmoid", name=self.name("se")), s)
            return self.merge(L.Multiply(name=self.name("mul")), t, s)
        if kind == "ops":                       # raw keras.ops calls: x * 2 + 1
            x = t.x * 2.0
            self.record(x._keras_history.operation.name, x._keras_history.operation, [t], t.prov)
            y = x + 1.0
            self.record(y._keras_history.operation.name, y._keras_history.operation, [t], t.prov)
            return _Tensor(y, t.prov)
        if kind == "split":                     # ops.split in equal sections, concatenated back
            (n,) = p
            parts = keras.ops.split(t.x, n, axis=-1)
            op = parts[0]._keras_history.operation
            size = t.shape[-1] // n
            provs = [t.prov[i * size:(i + 1) * size] for i in range(n)]
            self.record(op.name, op, [t], provs[0])
            f.sections.append((op.name, True, provs))
            layer = L.Concatenate(name=self.name("cat"))
            x = layer(list(reversed(parts)))
            prov = [pos for part in reversed(provs) for pos in part]
            self.record(layer.name, layer, [t], prov)
            return _Tensor(x, prov)
        if kind == "slice":                     # x[..., a:b]
            a, b = p
            x = t.x[..., a:b]
            op = x._keras_history.operation
            self.record(op.name, op, [t], t.prov[a:b])
            f.sections.append((op.name, False, [t.prov[a:b]]))
            return _Tensor(x, t.prov[a:b])
        if kind == "rescaling":
            return self.same(L.Rescaling(0.5, offset=0.25, name=self.name("rsc")), t)
        if kind == "shuffle":                   # Reshape (g, C/g), swap, Reshape back
            g, *raw = p
            h, w, c = t.shape
            n = c // g
            if raw and raw[0]:                  # the same in raw ops
                y = keras.ops.swapaxes(keras.ops.reshape(t.x, (-1, h, w, g, n)), -1, -2)
                x = keras.ops.reshape(y, (-1, h, w, c))
                last = x._keras_history.operation
            else:
                y = L.Reshape((h, w, g, n), name=self.name("shs"))(t.x)
                y = L.Permute((1, 2, 4, 3), name=self.name("shp"))(y)
                last = L.Reshape((h, w, c), name=self.name("shm"))
                x = last(y)
            for j in range(n):                  # index j of every group goes together
                f.unite([next(iter(t.prov[i * n + j])) for i in range(g)])
            prov = [t.prov[i * n + j] for j in range(n) for i in range(g)]
            self.record(last.name, last, [t], prov)
            return _Tensor(x, prov)
        if kind == "nested":
            widths, functional = p
            return self.call_nested(self.nested(t, widths, functional), t)
        if kind == "nested_shared":             # one nested model called on two tensors
            width, widths = p
            a = self.producer(self.new_producer(t, width, activation="relu"), t)
            b = self.producer(self.new_producer(t, width, activation="tanh"), t)
            inner = self.nested(a, widths, functional=True)
            return self.merge(L.Add(name=self.name("add")), self.call_nested(inner, a),
                              self.call_nested(inner, b))
        if kind == "shared":
            width, units = p
            a = self.producer(self.new_producer(t, width, activation="relu"), t)
            b = self.producer(self.new_producer(t, width, activation="tanh"), t)
            shared = self.new_producer(t, units, kind="s")
            sa, sb = self.producer(shared, a), self.producer(shared, b)
            return self.merge(L.Add(name=self.name("add")), sa, sb)
        if kind == "side":                      # a second model output
            (with_head,) = p
            side = t
            if with_head:
                if side.image:
                    side = self.same(L.GlobalAveragePooling2D(name=self.name("gap")), side)
                side = self.producer(L.Dense(2, name=self.name("out")), side)
            self.outputs.append(side)
            return t
        if kind == "stop":
            (how,) = p
            if how == "softmax":
                return self.opaque(L.Softmax(name=self.name("sm")), t, "softmax over channels")
            return self.opaque(Opaque(name=self.name("opq")), t, "unknown layer")
        if kind == "input2":
            (width,) = p
            name = f"in{len(self.inputs)}"
            x = keras.Input(t.shape[:-1] + (width,), name=name)
            extra = _Tensor(x, f.fresh(f"input '{name}'", width))
            f.fix(extra.prov, "model input")
            self.inputs.append(x)
            extra = self.producer(L.Dense(width + 1, activation="relu", name=self.name("d")), extra)
            layer = L.Concatenate(name=self.name("cat"))
            out = layer([t.x, extra.x])
            prov = t.prov + extra.prov
            self.record(layer.name, layer, [t, extra], prov)
            return _Tensor(out, prov)
        if kind == "mha":
            return self.attention(t, *p)
        if kind == "einsum":                    # a Dense as an equation; "bd": c summed, no kernel
            form, units, bias, activation = p
            letters = "abc" if t.sequence else "ab"
            channel, out = letters[-1], "d" if t.sequence else "c"
            kernel = {"cd": channel + out, "dc": out + channel, "bd": "b" + out}[form]
            equation = f"{letters},{kernel}->{letters[:-1]}{out}"
            layer = L.EinsumDense(equation, output_shape=t.shape[:-1] + (units,),
                                  bias_axes=out if bias else None, activation=activation,
                                  name=self.name("e"))
            if form == "bd":
                f.fix(t.prov, f"'{layer.name}' sums its input channels outside its kernel")
            return self.producer(layer, t)
        if kind == "ffn":                       # Dense(f, act) -> Dense(C), + the stream
            width, activation, residual = p
            inner = self.producer(L.Dense(width, activation=activation, name=self.name("d")), t)
            out = self.producer(L.Dense(t.shape[-1], name=self.name("d")), inner)
            return self.merge(L.Add(name=self.name("add")), t, out) if residual else out
        if kind == "ln":
            f.fix(t.prov, "LayerNormalization mixes channels (approximate)")
            return self.same(L.LayerNormalization(name=self.name("ln")), t)
        raise ValueError(f"unknown block {kind!r}")

    def attention(self, t: _Tensor, heads, key_dim, value_dim, width, source, key, masked, causal,
                  gate, scores, residual) -> _Tensor:
        """A MultiHeadAttention on the query ``t``: ``source`` is ``("self",)``, ``("branch",
        w)`` (a Dense of ``t``) or ``("input", S, w)`` (a second model input); ``key`` a Dense
        width over the value (None: key = value); ``scores`` 0 (not returned), 1 (returned,
        unused) or 2 (a model output)."""
        f = self.facts
        if source[0] == "self":
            value = t
        elif source[0] == "branch":
            value = self.producer(L.Dense(source[1], activation="tanh", name=self.name("d")), t)
        else:
            name = f"in{len(self.inputs)}"
            x = keras.Input((source[1], source[2]), name=name)
            self.inputs.append(x)
            value = _Tensor(x, f.fresh(f"input '{name}'", source[2]))
            f.fix(value.prov, "model input")
        kwargs = {}
        read = {"query": t.prov, "value": value.prov}
        if key is not None:
            k = self.producer(L.Dense(key, name=self.name("d")), value)
            kwargs["key"], read["key"] = k.x, k.prov
        if masked:                              # a mask over (T, S) computed from the stream
            m = self.producer(L.Dense(value.shape[0], activation="relu", name=self.name("mk")), t)
            f.fix(m.prov, "attention mask")
            kwargs["attention_mask"] = m.x
        if causal:
            kwargs["use_causal_mask"] = True
        if scores:
            kwargs["return_attention_scores"] = True
        layer = L.MultiHeadAttention(heads, key_dim, value_dim=value_dim, output_shape=width,
                                     use_gate=gate, name=self.name("mha"))
        result = layer(t.x, value.x, **kwargs)
        x, s = result if scores else (result, None)
        path = layer.name
        out = f.fresh(path, int(x.shape[-1]))
        head_ids = f.fresh(owner(path, HEADS), heads)
        f.units[path] = {HEADS: head_ids}
        f.arguments[path] = [read]
        if scores:
            f.fix(head_ids, "attention scores returned (they have a head axis)")
        if scores == 2:
            self.outputs.append(_Tensor(s, []))
        f.mixing.add(path)
        self.widths[path] = int(x.shape[-1])
        self.widths[owner(path, HEADS)] = heads
        self.record(path, layer, [t], out)
        dense = layer._output_dense             # the sub-layer prunec exposes by path
        f.kinds[f"{path}/attention_output"] = tuple(c.__name__ for c in type(dense).__mro__)
        f.calls[f"{path}/attention_output"] = [(None, out)]
        y = _Tensor(x, out)
        if residual and y.shape[-1] == t.shape[-1]:
            return self.merge(L.Add(name=self.name("add")), t, y)
        return y

    def nested(self, t: _Tensor, widths: tuple, functional: bool):
        """A nested model: producer, relu, producer, ...; inner names may repeat outer ones."""
        outer = self.name("n")
        layers = []
        for i, width in enumerate(widths):
            layers.append(self.new_producer(t, width, name=f"{'c' if t.image else 'd'}{i + 1}"))
            if i < len(widths) - 1:
                layers.append(L.ReLU(name=f"r{i + 1}"))
        if not functional:
            return keras.Sequential([keras.Input(t.shape), *layers], name=outer), layers
        x = start = keras.Input(t.shape)
        for layer in layers:
            x = layer(x)
        return keras.Model(start, x, name=outer), layers

    def call_nested(self, nested, t: _Tensor) -> _Tensor:
        model, layers = nested
        x = model(t.x)
        prov = t.prov
        for layer in layers:
            path = f"{model.name}/{layer.name}"
            if isinstance(layer, L.ReLU):
                self.record(path, layer, [_Tensor(x, prov)], prov)
                continue
            width = layer.units if isinstance(layer, L.Dense) else layer.filters
            out = self.facts.fresh(path, width)
            if path in self.facts.calls:      # the nested model's second call
                for mine, theirs in zip(prov, self.facts.calls[path][0][0]):
                    self.facts.unite([next(iter(mine)), next(iter(theirs))])
            self.facts.mixing.add(path)
            self.widths[path] = width
            self.record(path, layer, [_Tensor(x, prov)], out)
            prov = out
        return _Tensor(x, prov)

    # -- the model ----------------------------------------------------------------------------
    def run(self) -> Built:
        self.inputs = []
        first = keras.Input(self.bp.inputs[0], name="in0")
        self.inputs.append(first)
        t = _Tensor(first, self.facts.fresh("input 'in0'", self.bp.inputs[0][-1]))
        self.facts.fix(t.prov, "model input")
        for block in self.bp.blocks:
            t = self.block(t, *block)
        kind, *p = self.bp.head
        if kind in ("gap_dense", "flatten_dense") and (t.image or t.sequence):
            t = self.block(t, "gap" if kind == "gap_dense" else "flatten")
        if kind != "none":
            t = self.producer(L.Dense(p[0], name=self.name("head")), t)
        outputs = [t] + self.outputs
        for out in outputs:
            self.facts.fix(out.prov, "model output")
        model = keras.Model(self.inputs if len(self.inputs) > 1 else self.inputs[0],
                            [o.x for o in outputs] if len(outputs) > 1 else outputs[0].x,
                            name="fuzz")
        randomize(model, self.bp.seed, kernels=True, roles={"s": "scale", "t": "offset"})
        return Built(model, self.facts, self.bp, self.widths)


def build(blueprint: Blueprint) -> Built:
    """The Keras model of ``blueprint`` and the facts recorded while building it."""
    return _Builder(blueprint).run()
