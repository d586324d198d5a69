"""``prunec apply SPEC MODEL... --out-dir DIR``: one spec over a family, one broken model among
good ones, in one process and in several."""

import io
from pathlib import Path

import keras
import pytest

import batch_workers
import models
from compiler.batch import Job, Progress, Result, expand_models, format_summary
from compiler.executors import Options, execute
from compiler.errors import ModelError
from clirun import run

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "family_quarter.yaml"


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A directory of models: a small keras.applications MobileNet, two factory models, and a
    file that is not a model at all."""
    folder = tmp_path_factory.mktemp("family")
    keras.applications.MobileNet(weights=None, alpha=0.25, input_shape=(32, 32, 3),
                                 classes=10).save(folder / "mobilenet.keras")
    models.mnist_cnn().save(folder / "mnist.keras")
    models.se_model().save(folder / "se.keras")
    (folder / "broken.keras").write_bytes(b"not a zip file")
    return folder


def rows(out: str) -> dict[str, list[str]]:
    """The summary table: model -> [params, FLOPs, result]."""
    lines = out.splitlines()
    header = lines[0]
    starts = [header.index(name) for name in ("params", "FLOPs", "result")]
    table = {}
    for line in lines[1:-1]:
        cells = [line[:starts[0]], line[starts[0]:starts[1]], line[starts[1]:starts[2]], line[starts[2]:]]
        table[cells[0].strip()] = [c.strip() for c in cells[1:]]
    return table


def test_one_broken_model_fails_alone(family, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "apply", SPEC, family / "*.keras", "--out-dir", out_dir)
    assert code == 1
    broken = family / "broken.keras"
    (line,) = err.splitlines()
    assert line.startswith(f"error: {broken}: not a valid .keras archive: not a zip file")
    table = rows(out)
    assert list(table) == [str(family / n) for n in ("broken.keras", "mnist.keras", "mobilenet.keras", "se.keras")]
    assert table[str(broken)][:2] == ["-", "-"] and table[str(broken)][2].startswith("FAILED: not a valid .keras archive")
    assert out.splitlines()[-1] == f"3 of 4 models written to {out_dir}; 1 failed"
    assert sorted(p.name for p in out_dir.iterdir()) == ["mnist.keras", "mobilenet.keras", "se.keras"]
    for name in ("mnist", "mobilenet", "se"):
        original = keras.saving.load_model(family / f"{name}.keras")
        written = keras.saving.load_model(out_dir / f"{name}.keras")
        params, _, result = table[str(family / f"{name}.keras")]
        assert params == f"{original.count_params()} -> {written.count_params()}"
        assert result.startswith("written, verified (max relative difference")
    mobilenet = keras.saving.load_model(out_dir / "mobilenet.keras")
    assert mobilenet.get_layer("conv_pw_13").filters == 192   # 256 -> 192: multiples of 8


def test_parallel_jobs_give_the_same_summary(family, tmp_path, capsys):
    inputs = [family / "broken.keras", family / "mnist.keras", family / "se.keras"]
    one = run(capsys, "apply", SPEC, *inputs, "--out-dir", tmp_path / "one")
    two = run(capsys, "apply", SPEC, *inputs, "--out-dir", tmp_path / "two", "--jobs", "2")
    assert one[0] == two[0] == 1
    assert one[1].replace(str(tmp_path / "one"), "DIR") == two[1].replace(str(tmp_path / "two"), "DIR")
    assert one[2] == two[2] and one[2].count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["mnist.keras", "se.keras"]


def test_all_good_exits_0(family, tmp_path, capsys):
    code, out, err = run(capsys, "apply", SPEC, family / "se.keras", family / "mnist.keras",
                         "--out-dir", tmp_path / "new" / "dir")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == f"2 of 2 models written to {tmp_path / 'new' / 'dir'}"


def test_a_dead_worker_fails_only_its_own_model(tmp_path):
    jobs = [Job("spec.yaml", str(tmp_path / f"{name}.keras"), str(tmp_path / "out" / f"{name}.keras"))
            for name in ("a", "crash", "b", "c")]
    results = execute(jobs, Options(jobs=2), run=batch_workers.crash_on_crash, prepare=None)
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].internal and "the worker process running this model died" in results[1].error
    assert results[0] == Result(jobs[0].model, jobs[0].output, (10, 5), (20, 10), 0.0,
                                seconds=results[0].seconds)


def test_ctrl_c_prints_what_was_written_and_exits_130(family, tmp_path, capsys, monkeypatch):
    from compiler import api
    real_apply = api.apply

    def interrupted_on_se(spec, model, **options):   # Ctrl-C while the second model runs
        if model.name == "se_model":
            raise KeyboardInterrupt
        return real_apply(spec, model, **options)

    monkeypatch.setattr(api, "apply", interrupted_on_se)
    out_dir = tmp_path / "out"
    inputs = [family / "mnist.keras", family / "se.keras", family / "mobilenet.keras"]
    code, out, err = run(capsys, "apply", SPEC, *inputs, "--out-dir", out_dir)
    assert code == 130
    assert err == ("error: interrupted; 2 of 3 models not written (the summary lists those that "
                   "were); no file was left half-written\n")
    table = rows(out)
    assert table[str(inputs[0])][2].startswith("written, verified")
    assert table[str(inputs[1])] == table[str(inputs[2])] == ["-", "-", "interrupted, not written"]
    assert out.splitlines()[-1] == f"1 of 3 models written to {out_dir}; 2 interrupted"
    assert sorted(p.name for p in out_dir.iterdir()) == ["mnist.keras"]


def test_ctrl_c_lets_running_workers_finish_and_counts_them(tmp_path):
    jobs = [Job("spec.yaml", str(tmp_path / f"{name}.keras"), str(tmp_path / "out" / f"{name}.keras"))
            for name in ("slow", "interrupt", "a", "b", "c", "d", "e", "f")]
    results = execute(jobs, Options(jobs=2), run=batch_workers.interrupt_parent_on_interrupt,
                      prepare=None)
    assert results[0].ok and not results[0].interrupted    # finished after the Ctrl-C: counted
    assert results[1].ok
    assert all(r.ok != r.interrupted for r in results)      # each written whole, or not at all
    assert all(r.interrupted for r in results[2:])         # never given to a worker


def test_two_models_with_one_file_name_are_refused_up_front(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "net.keras").write_bytes(b"x")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "apply", SPEC, tmp_path / "a" / "net.keras",
                         tmp_path / "b" / "net.keras", "--out-dir", out_dir)
    assert (code, out) == (1, "")
    assert err == (f"error: {tmp_path / 'b' / 'net.keras'}: '{tmp_path / 'a' / 'net.keras'}' and "
                   f"'{tmp_path / 'b' / 'net.keras'}' would both be written to "
                   f"'{out_dir / 'net.keras'}' (hint: give the models different file names, or "
                   "run them with separate --out-dir)\n")
    assert not out_dir.exists()


def test_out_dir_beside_the_inputs_would_overwrite_them(family, capsys):
    model = family / "se.keras"
    before = model.read_bytes()
    code, out, err = run(capsys, "apply", SPEC, model, "--out-dir", family)
    assert (code, out) == (1, "")
    assert err == (f"error: {model}: refusing to overwrite the input model (hint: choose an "
                   "--out-dir other than the models' own directory)\n")
    assert model.read_bytes() == before


def test_out_dir_holding_the_spec_or_another_model_would_overwrite_it(family, tmp_path, capsys):
    spec = tmp_path / "se.keras"                    # a spec named like se.keras's output
    spec.write_text(SPEC.read_text())
    code, out, err = run(capsys, "apply", spec, family / "se.keras", "--out-dir", tmp_path)
    assert (code, out) == (1, "")
    assert err == (f"error: {family / 'se.keras'}: refusing to overwrite the spec: its output "
                   f"would be '{spec}' (hint: choose an --out-dir other than the spec's "
                   "directory)\n")
    assert spec.read_text() == SPEC.read_text()
    other = tmp_path / "net.keras"
    other.write_bytes(b"an input model")
    code, out, err = run(capsys, "apply", SPEC, tmp_path / "sub" / "net.h5", other,
                         "--out-dir", tmp_path)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {tmp_path / 'sub' / 'net.h5'}: refusing to overwrite the input "
                          f"model '{other}'")
    assert other.read_bytes() == b"an input model"


def test_globs_expand_once_per_file_and_must_match(tmp_path):
    for name in ("b", "a"):
        (tmp_path / f"{name}.keras").write_bytes(b"x")
    a, b = str(tmp_path / "a.keras"), str(tmp_path / "b.keras")
    assert expand_models([str(tmp_path / "*.keras"), a]) == [a, b]
    with pytest.raises(ModelError, match="no model file matches this pattern"):
        expand_models([str(tmp_path / "*.h5")])


@pytest.mark.parametrize("argv, message", [
    (["m1.keras", "m2.keras", "-o", "x.keras"], "2 models need --out-dir DIR, not -o"),
    (["m1.keras"], "give -o OUT.keras (one model) or --out-dir DIR (several)"),
    (["m1.keras", "--out-dir", "d", "--locked"], "--locked applies one lock to one model: use -o OUT.keras"),
    (["m1.keras", "-o", "x.keras", "--jobs", "2"], "--jobs N needs N >= 1, and --out-dir"),
    (["m1.keras", "--out-dir", "d", "--jobs", "0"], "--jobs N needs N >= 1, and --out-dir"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    code, out, err = run(capsys, "apply", SPEC, *argv)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == f"prunec apply: error: {message}"


def test_progress_bar_draws_only_when_asked():
    stream = io.StringIO()
    progress = Progress(2, stream=stream, enabled=True)
    progress.start("a.keras")
    progress.done(Result("a.keras", "o/a.keras", error="boom"))
    assert progress.line().startswith("[############------------] 1/2 models, 1 failed, ")
    progress.close()
    assert stream.getvalue().startswith("\r\033[K[------------------------] 0/2 models, ")
    quiet = io.StringIO()
    Progress(2, stream=quiet).done(Result("a", "b"))     # StringIO is not a terminal
    assert quiet.getvalue() == ""


def test_summary_table_lines_up():
    results = [Result("m/long_name.keras", "o/long_name.keras", (100, 50), (1000, 400), 1e-7),
               Result("m/x.keras", "o/x.keras", error="m/x.keras: cannot load model: bad")]
    assert format_summary(results, "o") == (
        "model              params     FLOPs        result\n"
        "m/long_name.keras  100 -> 50  1000 -> 400  written, verified (max relative difference 1e-07)\n"
        "m/x.keras          -          -            FAILED: cannot load model: bad\n"
        "1 of 2 models written to o; 1 failed\n")


ACTIVATION_SPEC = "version: 1\nprune:\n  - layer: fc1\n    fraction: 0.5\n    criterion: activation\n"


def test_data_criteria_in_a_batch_rank_by_the_data(tmp_path, capsys):
    """--data reaches every model's plan, in worker processes too (--jobs 2): each output is
    what a single-model apply with that data writes, not what an L1 ranking would."""
    import numpy as np
    from compiler import api
    spec = tmp_path / "activation.yaml"
    spec.write_text(ACTIVATION_SPEC)
    inputs = [tmp_path / "one.keras", tmp_path / "two.keras"]
    for seed, path in enumerate(inputs, start=1):
        models.mnist_cnn(seed=seed).save(path)
    data = tmp_path / "calib.npz"
    np.savez(data, image=np.random.default_rng(0).random((24, 28, 28, 1), dtype=np.float32))
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "apply", spec, *inputs, "--out-dir", out_dir, "--data", data,
                         "--batch-size", "8", "--jobs", "2")
    assert (code, err) == (0, ""), err
    assert out.splitlines()[-1] == f"2 of 2 models written to {out_dir}"
    by_l1 = spec.with_name("l1.yaml")
    by_l1.write_text(ACTIVATION_SPEC.replace("activation", "l1"))
    for path in inputs:
        written = keras.saving.load_model(out_dir / path.name).get_layer("fc1").get_weights()[1]
        single, _, _ = api.apply(str(spec), str(path), data=str(data), batch_size=8)
        assert written.shape == (256,)
        np.testing.assert_array_equal(written, single.get_layer("fc1").get_weights()[1])
    l1, _, _ = api.apply(str(by_l1), str(inputs[-1]))
    assert not np.array_equal(written, l1.get_layer("fc1").get_weights()[1])


def test_a_batch_without_the_data_it_needs_fails_once(tmp_path, capsys):
    spec = tmp_path / "activation.yaml"
    spec.write_text(ACTIVATION_SPEC)
    inputs = [tmp_path / "one.keras", tmp_path / "two.keras"]   # never read
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "apply", spec, *inputs, "--out-dir", out_dir)
    assert (code, out) == (1, "")
    assert err == (f"error: {spec}:5:16: rule 1 (layer 'fc1'): criterion 'activation' needs data "
                   "(hint: pass --data FILE.npz (or add 'data:' to the spec; data= in the Python "
                   "API))\n")
    code, out, err = run(capsys, "apply", spec, *inputs, "--out-dir", out_dir,
                         "--data", tmp_path / "missing.npz")
    assert (code, out) == (1, "")
    assert err == (f"error: {tmp_path / 'missing.npz'}: data file not found (hint: check the path "
                   "(a spec's 'data:' is relative to the spec file))\n")
    assert not out_dir.exists()
