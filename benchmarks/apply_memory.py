"""Peak memory of a whole ``prunec apply`` against loading and saving the same model.

    python benchmarks/apply_memory.py [FAMILY ...]

Each family is saved once to a temporary ``.keras`` file; then, each in a fresh process, peak RSS
(``VmHWM``, the whole process) is measured for:

* load + save: ``keras.saving.load_model`` and ``model.save`` of that file (what any tool that
  rewrites the file pays);
* apply: what ``prunec apply SPEC MODEL -o OUT`` does (load, graph, plan by
  ``specs/family_50.yaml``, emit, verify, save);
* apply, no verify: the same with ``--no-verify``.

Reported: apply / (load + save), and what verification adds to apply (target: at most 10%).
Linux only (``/proc``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, build, machine, selected

MB = 1024 * 1024


def peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not in /proc/self/status")


def measure(what: str, model_file: str, out: str) -> int:
    import keras

    from compiler.api import apply, load_spec
    if what == "load+save":
        keras.saving.load_model(model_file, compile=False).save(out)
    else:
        model = keras.saving.load_model(model_file, compile=False)
        rebuilt, _, _ = apply(load_spec(ROOT / "specs" / "family_50.yaml"), model,
                              check=(what == "apply"))
        rebuilt.save(out)
    return peak()


def child(what: str, model_file: str, out: str) -> int:
    result = subprocess.run([sys.executable, __file__, "--child", what, model_file, out],
                            check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(measure(*argv[1:4]))
        return
    print(machine())
    print("spec: specs/family_50.yaml; peak RSS of one fresh process each; MB\n")
    header = ("family", "load+save", "apply", "apply --no-verify", "apply / load+save",
              "verification adds")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        for name in selected(argv):
            model_file, out = str(Path(folder) / f"{name}.keras"), str(Path(folder) / "out.keras")
            build(name).save(model_file)
            base = child("load+save", model_file, out)
            full = child("apply", model_file, out)
            bare = child("apply-no-verify", model_file, out)
            row = (name, f"{base / MB:.0f}", f"{full / MB:.0f}", f"{bare / MB:.0f}",
                   f"{full / base:.2f}x", f"{(full - bare) / bare:+.1%}")
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
