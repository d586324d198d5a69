"""Files and safety: safe loading, atomic output, the input never overwritten, kills survived."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import models
from compiler import emit as emit_module
from compiler import files, modelio
from compiler.errors import CompilerError, ModelError
from clirun import run

ROOT = Path(__file__).resolve().parents[1]
SPEC = "version: 1\nprune:\n  - layer: fc1\n    remove: [1, 2]\n"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "multi.keras"
    models.multi_output_model().save(path)     # trunk (16) -> out_a, out_b; small and quick
    return path


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("version: 1\nprune:\n  - layer: trunk\n    remove: [1, 2]\n")
    return path


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# -- safe mode -------------------------------------------------------------------------------------

LAMBDA_MESSAGE = ("the model contains serialized Python code (e.g. a Lambda layer), which is not "
                  "loaded by default because it could run anything (hint: if you trust this file, "
                  "pass --trust-model-code (trust=True in the Python API))")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_is_refused_in_safe_mode_and_loaded_when_trusted(suffix, tmp_path, capsys):
    path = tmp_path / f"lam{suffix}"
    models.lambda_elsewhere_model().save(path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert run(capsys, "plan", spec, path) == (1, "", f"error: {path}: {LAMBDA_MESSAGE}\n")
    with pytest.raises(ModelError) as caught:
        modelio.load_model(path)
    assert str(caught.value) == f"{path}: {LAMBDA_MESSAGE}"
    code, out, err = run(capsys, "plan", spec, path, "--trust-model-code")
    assert (code, err) == (0, "") and "fc1" in out
    assert modelio.load_model(path, trust=True).get_layer("lam") is not None


def test_an_unregistered_custom_class_is_named_not_taken_for_python_code(tmp_path):
    class UnsafeScale(keras.layers.Layer):   # 'unsafe' in the name once passed for a Lambda
        def call(self, x):
            return x

    x = keras.Input((4,))
    path = tmp_path / "custom.keras"
    keras.Model(x, keras.layers.Dense(2)(UnsafeScale(name="mine")(x))).save(path)
    with pytest.raises(ModelError) as caught:
        modelio.load_model(path)
    assert str(caught.value).startswith(f"{path}: the model uses 'UnsafeScale', which is not a "
                                        "Keras class and was not registered in this process")


# -- the input is never the output -----------------------------------------------------------------

def spellings(model_file: Path, tmp_path: Path):
    link = tmp_path / "link.keras"
    link.symlink_to(model_file)
    hard = model_file.parent / "hard.keras"
    if not hard.exists():
        os.link(model_file, hard)
    relative = os.path.relpath(model_file)
    dotted = model_file.parent / ".." / model_file.parent.name / model_file.name
    return {"same": model_file, "relative": Path(relative), "dotted": dotted, "symlink": link,
            "hard link": hard}


@pytest.mark.parametrize("spelling", ["same", "relative", "dotted", "symlink", "hard link"])
def test_the_input_model_is_never_overwritten(spelling, model_file, spec_file, tmp_path, capsys):
    out = spellings(model_file, tmp_path)[spelling]
    before = model_file.read_bytes()
    code, _, err = run(capsys, "apply", spec_file, model_file, "-o", out)
    assert code == 1
    assert err == f"error: {out}: refusing to overwrite the input model (hint: choose another output path with -o)\n"
    assert model_file.read_bytes() == before
    assert hidden(model_file.parent) == [] and hidden(tmp_path) == []


# -- nothing written on failure ---------------------------------------------------------------------

def test_a_failing_save_leaves_no_temporary_and_the_old_output(monkeypatch, model_file, spec_file,
                                                                tmp_path, capsys):
    out = tmp_path / "out.keras"
    out.write_bytes(b"old output")

    def broken(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", broken)
    code, _, err = run(capsys, "apply", spec_file, model_file, "-o", out)
    assert (code, err) == (1, f"error: {out}: cannot write model: [Errno 28] No space left on device\n")
    assert out.read_bytes() == b"old output" and hidden(tmp_path) == []


def test_an_interrupt_during_save_leaves_the_old_output(monkeypatch, model_file, spec_file,
                                                         tmp_path, capsys):
    out = tmp_path / "out.keras"
    out.write_bytes(b"old output")

    def interrupted(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", interrupted)
    code, _, err = run(capsys, "apply", spec_file, model_file, "-o", out)
    assert code == 130 and err.startswith("error: interrupted;") and err.count("\n") == 1
    assert out.read_bytes() == b"old output" and hidden(tmp_path) == []


def test_a_verification_failure_writes_nothing(monkeypatch, model_file, spec_file, tmp_path, capsys):
    out = tmp_path / "out.keras"
    out.write_bytes(b"old output")
    real = emit_module.sliced
    monkeypatch.setattr(emit_module, "sliced", lambda value, axes: real(value, axes) * 1.01)
    code, _, err = run(capsys, "apply", spec_file, model_file, "-o", out)
    assert code == 3 and err.count("\n") == 1       # a wrong model is prunec's bug, not the input's
    assert "the rebuilt model differs from the original with removed channels zeroed" in err
    assert "; first at 'trunk' (Dense), relative difference " in err       # its first layer
    assert out.read_bytes() == b"old output" and hidden(tmp_path) == []


def test_a_bad_spec_writes_nothing(model_file, tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("version: 1\nprune:\n  - layer: trunk\n    remove: [99]\n")
    out = tmp_path / "out.keras"
    out.write_bytes(b"old output")
    assert run(capsys, "apply", spec, model_file, "-o", out)[0] == 1
    assert out.read_bytes() == b"old output" and hidden(tmp_path) == []


def test_output_mode_follows_the_umask_or_the_replaced_file(model_file, tmp_path):
    model = keras.saving.load_model(model_file)
    fresh, existing = tmp_path / "fresh.keras", tmp_path / "existing.keras"
    existing.write_bytes(b"old")
    os.chmod(existing, 0o640)
    mask = os.umask(0o022)
    try:
        modelio.save_model(model, fresh)
        modelio.save_model(model, existing)
    finally:
        os.umask(mask)
    assert (fresh.stat().st_mode & 0o777, existing.stat().st_mode & 0o777) == (0o644, 0o640)
    assert keras.saving.load_model(existing).count_params() == model.count_params()


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(model_file, tmp_path):
    out = tmp_path / "out.keras"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".out.keras.prunec-{dead.pid}-abc123.keras"
        live = tmp_path / f".out.keras.prunec-{sleeper.pid}-def456.keras"
        other = tmp_path / f".other.keras.prunec-{dead.pid}-abc123.keras"
        for path in (stale, live, other):
            path.write_bytes(b"partial")
        assert files.temporary_files(out, alive=False) == [stale]
        modelio.save_model(keras.saving.load_model(model_file), out)
        assert hidden(tmp_path) == sorted([live.name, other.name])
    finally:
        sleeper.kill()
        sleeper.wait()


# -- killed at any moment ---------------------------------------------------------------------------

def test_a_killed_apply_leaves_the_old_file_or_the_new_one(tmp_path):
    """SIGKILL ``prunec apply`` while it writes, and at random earlier moments; then finish a run."""
    source = tmp_path / "mnist.keras"
    models.mnist_cnn().save(source)                     # 6.7 MB: saving takes a while
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\nprune:\n  - layer: fc1\n    remove: [0, 1, 2]\n")
    out = tmp_path / "out.keras"
    models.multi_output_model().save(out)               # the "old" output
    old = out.read_bytes()
    command = [sys.executable, "-m", "compiler.cli", "apply", str(spec), str(source), "-o", str(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    rng = np.random.default_rng(0)
    kills = int(os.environ.get("PRUNEC_KILLS", "2"))    # by hand: PRUNEC_KILLS=30

    def kill(delay):
        """Run apply over the old output; SIGKILL it once a temporary exists (``delay`` None) or
        after ``delay`` seconds; the old file or a complete new model must be left."""
        out.write_bytes(old)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        start = time.monotonic()
        while process.poll() is None:
            writing = any(p.name.startswith(".out.keras.prunec-") for p in tmp_path.iterdir())
            if (delay is None and writing) or (delay is not None and time.monotonic() - start > delay):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        process.wait()
        data = out.read_bytes()
        if data != old:                                 # only a complete model may replace it
            assert keras.saving.load_model(out).get_layer("fc1").units == 509
        return process.returncode, data

    # mid-write: a loaded machine may let a run write and rename before the poll sees the
    # temporary; such a run must still leave a complete model, and the next attempt tries again
    for _ in range(3):
        code, data = kill(None)
        if code == -signal.SIGKILL:
            break
    assert code == -signal.SIGKILL, "never saw the temporary in 3 runs: killed too late"
    assert data == old                                  # killed mid-write: the old file, intact
    assert files.temporary_files(out) != []             # a SIGKILL cannot clean up: left behind
    for delay in rng.uniform(0.3, 6.0, kills - 1):      # and at random earlier moments
        kill(float(delay))
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert keras.saving.load_model(out).get_layer("fc1").units == 509
    assert hidden(tmp_path) == []                       # the next run removed the leftover


# -- plans, locks and drawings are written the same way ---------------------------------------------

@pytest.mark.parametrize("command, target", [("plan", "model"), ("plan", "spec"), ("lock", "model"),
                                             ("lock", "spec")])
def test_plan_and_lock_never_overwrite_their_inputs(command, target, model_file, spec_file, capsys):
    out = {"model": model_file, "spec": spec_file}[target]
    before = out.read_bytes()
    code, _, err = run(capsys, command, spec_file, model_file, "-o", out)
    what = "the input model" if target == "model" else "the spec"
    assert (code, err) == (1, f"error: {out}: refusing to overwrite {what} (hint: choose another "
                              "output path with -o)\n")
    assert out.read_bytes() == before and hidden(out.parent) == []


def test_apply_and_graph_never_overwrite_the_spec(model_file, tmp_path, capsys):
    for name, command in (("s.keras", ["apply", "{spec}", model_file, "-o", "{spec}"]),
                          ("s.dot", ["graph", model_file, "{spec}", "-o", "{spec}"])):
        spec = tmp_path / name
        spec.write_text("version: 1\nprune:\n  - layer: trunk\n    remove: [1, 2]\n")
        before = spec.read_bytes()
        code, out, err = run(capsys, *[spec if a == "{spec}" else a for a in command])
        assert (code, out, err) == (1, "", f"error: {spec}: refusing to overwrite the spec (hint: "
                                           "choose another output path with -o)\n")
        assert spec.read_bytes() == before and hidden(tmp_path) == []


def test_apply_and_plan_never_overwrite_the_lock(model_file, spec_file, capsys):
    assert run(capsys, "lock", spec_file, model_file)[0] == 0
    lock = Path(f"{spec_file}.lock")
    before = lock.read_bytes()
    code, _, err = run(capsys, "plan", spec_file, model_file, "--locked", lock, "-o", lock)
    assert (code, err) == (1, f"error: {lock}: refusing to overwrite the lock file (hint: choose "
                              "another output path with -o)\n")
    assert lock.read_bytes() == before


def test_the_api_draw_never_overwrites_its_inputs(model_file, spec_file):
    from compiler import api
    link = spec_file.with_name("spec.dot")
    link.symlink_to(spec_file)                     # the spec, spelled as a drawing
    with pytest.raises(CompilerError) as caught:
        api.draw(model_file, spec_file, out=link)
    assert str(caught.value) == (f"{link}: refusing to overwrite the spec (hint: choose another "
                                 "output path with -o)")
    assert link.is_symlink()


def test_an_unwritable_output_is_a_one_line_error_not_a_crash(monkeypatch, model_file, spec_file,
                                                              tmp_path, capsys):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.tempfile, "mkstemp", no_space)
    out = tmp_path / "plan.txt"
    code, _, err = run(capsys, "plan", spec_file, model_file, "-o", out)
    assert (code, err) == (1, f"error: {out}: cannot write: No space left on device\n")
    assert not out.exists()


def test_a_spec_and_a_model_given_the_wrong_way_round(model_file, spec_file, tmp_path, capsys):
    code, _, err = run(capsys, "plan", model_file, spec_file)
    assert (code, err) == (1, f"error: {model_file}: this is a model file, not a spec (hint: "
                              "commands take SPEC first ('prunec plan SPEC MODEL'), but 'prunec "
                              "graph MODEL [SPEC]' takes the model first)\n")
    code, _, err = run(capsys, "graph", spec_file, model_file, "-o", tmp_path / "g.dot")
    assert code == 1 and err.startswith(f"error: {model_file}: this is a model file, not a spec")
    with pytest.raises(ModelError, match="this is not a model file"):
        modelio.load_model(spec_file)
    from compiler import api
    with pytest.raises(TypeError, match=r"apply\(\) and lock\(\) take \(spec, model\)"):
        api.apply(keras.saving.load_model(model_file), spec_file)


def test_the_api_loads_trusted_code_when_asked(tmp_path):
    from compiler import api
    path = tmp_path / "lam.keras"
    models.lambda_elsewhere_model().save(path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    with pytest.raises(ModelError, match="trust=True in the Python API"):
        api.plan(path, spec)
    assert api.plan(path, spec, trust=True).params[1] < api.plan(path, spec, trust=True).params[0]


# -- deep models ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deep_file(tmp_path_factory):
    """A 600-layer Dense/ReLU chain: deeper than Keras can load with a recursion limit of 400."""
    def build() -> keras.Model:                 # Keras itself recurses once per layer here
        x = keras.Input((4,))
        y = x
        for i in range(300):
            y = keras.layers.ReLU(name=f"r{i}")(keras.layers.Dense(4, name=f"d{i}")(y))
        return keras.Model(x, y)

    path = tmp_path_factory.mktemp("deep") / "deep.keras"
    modelio.deep_call(lambda: build().save(path))
    return path


def test_a_model_deeper_than_the_recursion_limit_plans_applies_and_locks(deep_file, tmp_path,
                                                                         capsys):
    # what a 5,000-layer chain does at Python's default limit of 1,000 (measured by hand: plan
    # 70 s, apply 3 min), here smaller and under a lower limit
    spec = tmp_path / "deep.yaml"
    spec.write_text("version: 1\nprune:\n  - layer: d7\n    remove: [1]\n")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        code, out, err = run(capsys, "plan", spec, deep_file)
        assert (code, err) == (0, "") and "d7  removes 1 of 4  1" in out
        code, out, err = run(capsys, "apply", spec, deep_file, "-o", tmp_path / "out.keras")
        assert (code, err) == (0, "") and "verified, max relative difference" in out
        assert run(capsys, "lock", spec, deep_file)[0] == 0
        assert sys.getrecursionlimit() == 400                   # restored after each deep step
    finally:
        sys.setrecursionlimit(limit)
    assert modelio.load_model(tmp_path / "out.keras").get_layer("d7").units == 3


# -- model files that are not what they claim -------------------------------------------------------

RESAVE = "(hint: is the file complete? save the model again with model.save('NAME.keras'))"


def test_an_empty_truncated_or_random_keras_file_is_not_a_valid_archive(model_file, spec_file,
                                                                        tmp_path, capsys):
    data = model_file.read_bytes()
    for name, content, what in (("empty", b"", "the file is empty"),
                                ("truncated", data[:len(data) // 2], "not a zip file (truncated, "
                                 "or another kind of file)"),
                                ("random", os.urandom(4096), "not a zip file (truncated, or "
                                 "another kind of file)")):
        path = tmp_path / f"{name}.keras"
        path.write_bytes(content)
        assert run(capsys, "plan", spec_file, path) == (
            1, "", f"error: {path}: not a valid .keras archive: {what} {RESAVE}\n")


def test_a_symlink_loop_and_a_broken_link_say_so(spec_file, tmp_path, capsys):
    (tmp_path / "a.keras").symlink_to(tmp_path / "b.keras")
    (tmp_path / "b.keras").symlink_to(tmp_path / "a.keras")
    (tmp_path / "dangling.keras").symlink_to(tmp_path / "gone.keras")
    assert run(capsys, "plan", spec_file, tmp_path / "a.keras") == (
        1, "", f"error: {tmp_path / 'a.keras'}: cannot read the model file: Too many levels of "
               "symbolic links\n")
    assert run(capsys, "plan", spec_file, tmp_path / "dangling.keras") == (
        1, "", f"error: {tmp_path / 'dangling.keras'}: the model file is a broken symbolic link "
               f"(to '{tmp_path / 'gone.keras'}')\n")


def _rezip(source: Path, target: Path, extra: dict[str, bytes]) -> None:
    """``source``'s members plus ``extra`` (name -> bytes), into ``target``."""
    import zipfile
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, old.read(info))
        for name, content in extra.items():
            new.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)


def test_members_that_escape_the_archive_are_refused(model_file, spec_file, tmp_path, capsys):
    for bad in ("../../evil.txt", "/etc/evil.txt", "assets/../../evil.txt"):
        path = tmp_path / "traversal.keras"
        _rezip(model_file, path, {bad: b"x"})
        assert run(capsys, "plan", spec_file, path) == (
            1, "", f"error: {path}: the archive holds a member named '{bad}', which points "
                   "outside the archive (hint: a file Keras wrote has no such member; do not "
                   "load this file)\n")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_archive_limits_are_checked_before_loading_and_overridable(model_file, spec_file, tmp_path,
                                                                   capsys, monkeypatch):
    padded = tmp_path / "padded.keras"                  # 70 MB of zeros deflate to 70 KB
    _rezip(model_file, padded, {"assets/pad.bin": bytes(70 << 20)})
    code, out, err = run(capsys, "plan", spec_file, padded)
    import zipfile
    total = sum(info.file_size for info in zipfile.ZipFile(padded).infolist())
    ratio = total // padded.stat().st_size
    assert (code, out) == (1, "")
    assert err == (f"error: {padded}: the archive declares {total} bytes uncompressed, {ratio} "
                   "times its size (a model stores its weights "
                   "uncompressed) (hint: raise it with PRUNEC_MAX_MODEL_EXPANSION if you "
                   "trust this file)\n")
    monkeypatch.setenv("PRUNEC_MAX_MODEL_EXPANSION", str(10 * ratio))
    assert run(capsys, "plan", spec_file, padded)[0] == 0
    monkeypatch.setenv("PRUNEC_MAX_CONFIG_BYTES", "100")
    code, _, err = run(capsys, "plan", spec_file, model_file)
    assert code == 1 and err.startswith(f"error: {model_file}: its config.json declares ")
    assert err.endswith("bytes, more than the 100 a model config may (hint: raise it with "
                        "PRUNEC_MAX_CONFIG_BYTES if you trust this file)\n")
    monkeypatch.setenv("PRUNEC_MAX_CONFIG_BYTES", "lots")
    assert run(capsys, "plan", spec_file, model_file) == (
        1, "", "error: environment: PRUNEC_MAX_CONFIG_BYTES must be a whole number, got 'lots' "
               "(hint: e.g. PRUNEC_MAX_CONFIG_BYTES=67108864)\n")
    monkeypatch.delenv("PRUNEC_MAX_CONFIG_BYTES")
    monkeypatch.setenv("PRUNEC_MAX_MODEL_MEMBERS", "2")
    code, _, err = run(capsys, "plan", spec_file, model_file)
    assert (code, err) == (1, f"error: {model_file}: the archive holds 3 members, more than the 2 "
                              "a model may (hint: raise it with PRUNEC_MAX_MODEL_MEMBERS if you "
                              "trust this file)\n")
    with pytest.raises(ModelError, match="more than the 1000 a model may"):
        modelio.load_model(padded, limits=modelio.Limits(total_bytes=1000))


def test_a_failed_load_leaves_nothing_in_tmpdir(model_file, spec_file, tmp_path, capsys,
                                                monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(modelio.tempfile, "tempdir", str(scratch))
    with_asset = tmp_path / "asset.keras"
    _rezip(model_file, with_asset, {"assets/vocabulary.txt": b"a\nb\n"})

    def full_disk(self, *args, **kwargs):
        import keras.src.saving.saving_lib as saving_lib   # extract, then fail as a full disk does
        saving_lib.get_temp_dir()
        Path(modelio.tempfile.mkdtemp(), "half").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.saving, "load_model", full_disk)
    assert run(capsys, "plan", spec_file, with_asset) == (
        1, "", f"error: {with_asset}: cannot load model: No space left on device\n")
    assert list(scratch.iterdir()) == []
