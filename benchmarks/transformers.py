"""keras-hub backbones: compile time against the rebuild floor, peak memory against the weights,
and CPU latency before/after (a script, not a test).

    python benchmarks/transformers.py                 # bert and mistral
    python benchmarks/transformers.py llama1b         # one (llama1b: ~4 GB of weights; run it alone)

* ``bert``: BertBackbone, 12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30522: 50% of
  the FFN neurons of every layer (the backbone keeps its class).
* ``mistral``: a MistralBackbone of the same size (12 query heads = 12 key/value heads, head_dim
  64, FFN 3072 gated): 25% of the heads and 50% of the FFN neurons of every layer.
* ``llama1b``: a LlamaBackbone of 1.10B parameters in float32 (Llama 3.2 1B's blocks with a
  32,000 vocabulary: 16 layers, hidden 2048, 32 query heads, 8 key/value heads, FFN 8192 gated;
  embeddings untied, the class's default, since ``LlamaBackbone.get_config`` drops
  ``tie_word_embeddings`` and the floor's ``from_config`` would untie them): 25% of the FFN
  neurons and 2 of the 8 key/value heads (with their query groups: 32 -> 24 query heads) of every
  layer. LlamaBackbone derives its blocks' head size from hidden / num_query_heads, so the result
  is a functional model of prunec's head-sized Llama blocks, not a LlamaBackbone.

Every model is built from config with random weights (nothing is downloaded). Compile = plan +
emit (the model rebuilt with sliced weights, no verification); the floor = the backbone class's
``from_config`` + copying every weight (variable to variable), in the same process, medians of
``repeat`` alternating runs. Peak memory is the rise of the process's resident-set high-water mark
during one compile (or one floor), each in a fresh process that holds nothing but the model, run
before this process builds its own. Latency: ``predict_on_batch`` at sequence length 128, after a
warm-up, median of ``latency_repeat`` calls of each model, the two called in turn. The load
average is printed before and after (a shared machine: timings carry its noise).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401  (sets the environment, puts the repository first on sys.path)
import keras
import numpy as np

from compiler.api import build_graph, emit, parse_spec, plan

SIZE = dict(vocabulary_size=30522, num_layers=12, hidden_dim=768, intermediate_dim=3072)
LLAMA_1B = dict(vocabulary_size=32000, num_layers=16, hidden_dim=2048, intermediate_dim=8192,
                num_query_heads=32, num_key_value_heads=8)
FFN = "  - layer: 'transformer_layer_*/feedforward_intermediate_dense'\n    fraction: {}\n"
HEADS = "  - layer: 'transformer_layer_*/self_attention'\n    unit: heads\n    fraction: 0.25\n"
KV_HEADS = "  - layer: 'transformer_layer_*/self_attention'\n    unit: kv_heads\n    count: 2\n"

#: name -> (spec rules, timing repeats, latency batches, latency repeats)
CASES = {
    "bert": (FFN.format(0.5), 3, (1, 8), 10),
    "mistral": (FFN.format(0.5) + HEADS, 3, (1, 8), 10),
    "llama1b": (FFN.format(0.25) + KV_HEADS, 1, (1,), 5),
}


def build(name: str):
    import keras_hub
    keras.utils.set_random_seed(0)
    if name == "bert":
        return keras_hub.models.BertBackbone(num_heads=12, max_sequence_length=512, **SIZE)
    if name == "mistral":
        return keras_hub.models.MistralBackbone(num_query_heads=12, num_key_value_heads=12,
                                                head_dim=64, **SIZE)
    return keras_hub.models.LlamaBackbone(**LLAMA_1B)


def shrink(name: str):
    return parse_spec("version: 1\nprune:\n" + CASES[name][0], "benchmark.yaml")


def floor(model):
    """What any rebuild pays: the class from its config, then every weight copied, one variable at
    a time (``set_weights(get_weights())`` would first copy them all to NumPy: 2x the weights)."""
    rebuilt = type(model).from_config(model.get_config())
    for target, source in zip(rebuilt.weights, model.weights, strict=True):
        assert target.path == source.path and tuple(target.shape) == tuple(source.shape)
        target.assign(source.value)
    return rebuilt


def compile_once(model, spec):
    return emit(model, plan(build_graph(model), spec))


def timed(function, *args, repeat=3):
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
        if len(times) < repeat:
            del result
    return float(np.median(times)), result


def latency(models: list, batch: int, length: int = 128, repeat: int = 10) -> list[float]:
    """Median seconds of one ``predict_on_batch`` of each model, the models called in turn (so
    that the machine's drift hits them alike), after a warm-up call each."""
    feed = {"token_ids": np.random.default_rng(0).integers(0, 30000, (batch, length)).astype("int32"),
            "padding_mask": np.ones((batch, length), "int32")}
    if "segment_ids" in {t.name for t in models[0].inputs}:
        feed["segment_ids"] = np.zeros((batch, length), "int32")
    times = [[] for _ in models]
    for model in models:
        model.predict_on_batch(feed)        # warm-up and tracing
    for _ in range(repeat):
        for model, seconds in zip(models, times):
            start = time.perf_counter()
            model.predict_on_batch(feed)
            seconds.append(time.perf_counter() - start)
    return [float(np.median(seconds)) for seconds in times]


def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def memory_child(name: str, what: str) -> dict:
    model = build(name)
    spec = shrink(name)
    weights = sum(v.numpy().nbytes for v in model.weights)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    floor(model) if what == "floor" else compile_once(model, spec)
    return {"weights": weights, "peak": status("VmHWM") - before}


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(memory_child(argv[1], argv[2])))
        return
    names = argv or ["bert", "mistral"]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    print(common.machine())
    for name in names:
        _, repeat, batches, latency_repeat = CASES[name]
        print(f"\n{name}: {load()} at the start")
        memory = {}
        for what in ("floor", "compile"):   # first: one at a time, nothing else of ours resident
            out = subprocess.run([sys.executable, __file__, "--child", name, what], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            memory[what] = json.loads(out)
        weights = memory["compile"]["weights"]
        memory_line = (f"  peak memory: compile {memory['compile']['peak'] / weights:.2f}x the "
                       f"weights ({weights / 2**20:,.0f} MB), floor "
                       f"{memory['floor']['peak'] / weights:.2f}x")
        start = time.perf_counter()
        model = build(name)
        print(f"  built in {time.perf_counter() - start:.0f} s")
        spec = shrink(name)
        resolved = plan(build_graph(model), spec)
        (p0, p1), (f0, f1) = resolved.params, resolved.flops
        floor_times, compile_times = [], []
        for _ in range(repeat):             # alternate, so that drift hits both
            floor_times.append(timed(floor, model, repeat=1)[0])
            gc.collect()
            seconds, rebuilt = timed(compile_once, model, spec, repeat=1)
            compile_times.append(seconds)
            if len(compile_times) < repeat:
                del rebuilt
            gc.collect()
        floor_time, compile_time = float(np.median(floor_times)), float(np.median(compile_times))
        assert rebuilt.count_params() == p1, (rebuilt.count_params(), p1)
        print(f"{name}: {type(model).__name__} -> {type(rebuilt).__name__}, params {p0:,} -> "
              f"{p1:,}, FLOPs per token {f0:,} -> {f1:,} ({f0 / f1:.2f}x fewer)")
        print(f"  compile {compile_time:.2f} s, floor {floor_time:.2f} s: "
              f"{compile_time / floor_time:.2f}x the floor (median of {repeat})")
        for batch in batches:
            before, after = latency([model, rebuilt], batch, repeat=latency_repeat)
            print(f"  latency seq 128 batch {batch}: {before * 1000:.1f} ms -> {after * 1000:.1f} ms "
                  f"({before / after:.2f}x)")
        print(memory_line)
        del model, rebuilt, resolved
        gc.collect()
        print(f"  {load()} at the end")


if __name__ == "__main__":
    main(sys.argv[1:])
