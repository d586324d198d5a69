"""BERT-base-sized keras-hub backbones: compile time against the rebuild floor, peak memory
against the weights, and CPU latency before/after (a script, not a test).

    python benchmarks/transformers.py            # both models
    python benchmarks/transformers.py bert       # one

* ``bert``: BertBackbone, 12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30522.
  TransformerEncoder sizes its heads as hidden / num_heads, so heads cannot be removed from it
  (prunec refuses); the spec removes 50% of the FFN neurons of every layer.
* ``mistral``: a MistralBackbone of the same size (12 query heads = 12 key/value heads, head_dim
  64, FFN 3072 gated): 25% of the heads and 50% of the FFN neurons of every layer.

Compile = plan + emit (the backbone rebuilt as its own class with sliced weights); the floor =
the backbone class's ``from_config`` + copying every weight, in the same process. Peak memory is
the rise of the process's resident-set high-water mark during one compile, in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401  (sets the environment, puts the repository first on sys.path)
import keras
import numpy as np

from compiler.api import build_graph, emit, parse_spec, plan

SIZE = dict(vocabulary_size=30522, num_layers=12, hidden_dim=768, intermediate_dim=3072)
FFN = "    fraction: 0.5\n"


def build(name: str):
    import keras_hub
    keras.utils.set_random_seed(0)
    if name == "bert":
        return keras_hub.models.BertBackbone(num_heads=12, max_sequence_length=512, **SIZE)
    return keras_hub.models.MistralBackbone(num_query_heads=12, num_key_value_heads=12, head_dim=64,
                                            **SIZE)


def shrink(name: str):
    text = f"  - layer: 'transformer_layer_*/feedforward_intermediate_dense'\n{FFN}"
    if name == "mistral":
        text += "  - layer: 'transformer_layer_*/self_attention'\n    unit: heads\n    fraction: 0.25\n"
    return parse_spec("version: 1\nprune:\n" + text, "benchmark.yaml")


def floor(model):
    rebuilt = type(model).from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def compile_once(model, spec):
    return emit(model, plan(build_graph(model), spec))


def timed(function, *args, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def latency(model, batch: int, length: int = 128, repeat: int = 10) -> float:
    feed = {"token_ids": np.random.default_rng(0).integers(0, 30000, (batch, length)).astype("int32"),
            "padding_mask": np.ones((batch, length), "int32")}
    if "segment_ids" in {t.name for t in model.inputs}:
        feed["segment_ids"] = np.zeros((batch, length), "int32")
    model.predict_on_batch(feed)            # warm-up and tracing
    return timed(lambda: model.predict_on_batch(feed), repeat=repeat)[0]


def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def memory_child(name: str, what: str) -> dict:
    model = build(name)
    spec = shrink(name)
    weights = sum(v.numpy().nbytes for v in model.weights)
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    floor(model) if what == "floor" else compile_once(model, spec)
    return {"weights": weights, "peak": status("VmHWM") - before}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(memory_child(argv[1], argv[2])))
        return
    names = argv or ["bert", "mistral"]
    print(common.machine())
    for name in names:
        model = build(name)
        spec = shrink(name)
        floor_time, _ = timed(floor, model)
        compile_time, rebuilt = timed(compile_once, model, spec)
        resolved = plan(build_graph(model), spec)
        (p0, p1), (f0, f1) = resolved.params, resolved.flops
        memory = {}
        for what in ("floor", "compile"):
            out = subprocess.run([sys.executable, __file__, "--child", name, what], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            memory[what] = json.loads(out)
        weights = memory["compile"]["weights"]
        print(f"\n{name}: {type(model).__name__} -> {type(rebuilt).__name__}, params {p0:,} -> "
              f"{p1:,}, FLOPs per token {f0:,} -> {f1:,} ({f0 / f1:.2f}x fewer)")
        print(f"  compile {compile_time:.2f} s, floor {floor_time:.2f} s: "
              f"{compile_time / floor_time:.2f}x the floor")
        print(f"  peak memory: compile {memory['compile']['peak'] / weights:.2f}x the weights "
              f"({weights / 2**20:.0f} MB), floor {memory['floor']['peak'] / weights:.2f}x")
        for batch in (1, 8):
            before, after = latency(model, batch), latency(rebuilt, batch)
            print(f"  latency seq 128 batch {batch}: {before * 1000:.1f} ms -> {after * 1000:.1f} ms "
                  f"({before / after:.2f}x)")


if __name__ == "__main__":
    main(sys.argv[1:])
