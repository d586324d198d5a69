"""The executors of ``apply --out-dir``: local processes and Ray give the same rows for the same
jobs — a worker killed mid-job (retried, then an internal error), a model over its timeout, a
bad input (never retried), recycled workers — and the CLI's summary, JSON summary and exit codes.

Ray starts once for this module (a local instance, 2 CPUs); the stand-in jobs of
``executor_workers`` make the crash and timeout cases take seconds, not minutes.
"""

import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import executor_workers
import models
from clirun import run
from compiler.batch import Job, format_summary
from compiler.executors import Options, execute, parse_size

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "family_quarter.yaml"
NAMES = ("a", "crash", "once", "slow", "bad", "b")


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    import os
    import sys
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error",
             object_store_memory=128 * 1024 ** 2,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(ROOT), str(ROOT / "tests")] + [p for p in sys.path if p and "site-packages" not in p]),
                 "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
                 "TF_CPP_MIN_LOG_LEVEL": "3"}})
    yield ray
    ray.shutdown()


def stand_in_jobs(tmp_path, names=NAMES):
    (tmp_path / "out").mkdir(exist_ok=True)
    return [Job("spec.yaml", str(tmp_path / f"{n}.keras"), str(tmp_path / "out" / f"{n}.keras"))
            for n in names]


def check_rows(results, jobs):
    """crash: died twice (one retry), internal; once: retried, written; slow: timed out (exit
    1, not internal); bad: its own error, not retried; a and b written."""
    by_name = {Path(r.model).stem: r for r in results}
    assert [r.model for r in results] == [j.model for j in jobs]
    assert by_name["crash"].internal and "running this model died 2 times" in by_name["crash"].error
    assert by_name["once"].ok and by_name["a"].ok and by_name["b"].ok
    assert by_name["slow"].error == (f"{jobs[3].model}: timed out after 4 s; its worker was "
                                     "stopped and nothing was written (hint: raise --timeout)")
    assert not by_name["slow"].internal
    assert by_name["bad"].error == f"{jobs[4].model}: cannot load model: bad"
    assert not by_name["bad"].internal
    # one model per worker: every model ran in a process of its own
    pids = [r.difference for r in results if r.ok]
    assert len(set(pids)) == len(pids) == 3


def test_local_processes_retry_crashes_stop_timeouts_and_recycle(tmp_path):
    jobs = stand_in_jobs(tmp_path)
    results = execute(jobs, Options(jobs=2, timeout=4), run=executor_workers.by_name, prepare=None)
    check_rows(results, jobs)


def test_local_workers_run_several_models_when_asked(tmp_path):
    jobs = stand_in_jobs(tmp_path, ("a", "b", "c", "d"))
    results = execute(jobs, Options(jobs=1, timeout=30, per_worker=4),
                      run=executor_workers.by_name, prepare=None)
    assert len({r.difference for r in results}) == 1


def test_ray_tasks_retry_crashes_stop_timeouts_and_recycle(ray_instance, tmp_path):
    jobs = stand_in_jobs(tmp_path)
    results = execute(jobs, Options(executor="ray", jobs=2, timeout=4),
                      run=executor_workers.by_name, prepare=None)
    check_rows(results, jobs)
    assert "Ray worker running this model died 2 times" in results[1].error


def test_ray_ctrl_c_keeps_what_finished_and_lets_running_models_finish(ray_instance, tmp_path):
    """Ctrl-C (delivered twice at once, as a terminal does): the model that finished before it
    and those running count as written; the rest are interrupted, and each row says honestly
    whether its output exists."""
    jobs = stand_in_jobs(tmp_path, ("a", "slow", "interrupt", "b", "c", "d", "e", "f"))
    (tmp_path / "out" / "driver.pid").write_text(str(os.getpid()))
    results = execute(jobs, Options(executor="ray", jobs=2),
                      run=executor_workers.interrupts_the_driver, prepare=None)
    by_name = {Path(r.model).stem: r for r in results}
    assert by_name["a"].ok and by_name["slow"].ok and by_name["interrupt"].ok
    assert by_name["e"].interrupted and by_name["f"].interrupted    # never submitted
    for result in results:
        assert result.ok != result.interrupted
        assert result.ok == os.path.exists(result.output), result
    summary = format_summary(results, "out")
    written = sum(r.ok for r in results)
    assert summary.splitlines()[-1] == (f"{written} of 8 models written to out; "
                                        f"{8 - written} interrupted")


def test_ray_and_local_cli_give_one_summary_with_exports(ray_instance, tmp_path, capsys):
    """--export onnx: each model's ONNX file beside its .keras, checked, in the table and JSON."""
    folder = tmp_path / "models"
    folder.mkdir()
    models.mnist_cnn().save(folder / "mnist.keras")
    (folder / "broken.keras").write_bytes(b"not a zip file")
    outputs = {}
    for executor in ("local", "ray"):
        out_dir = tmp_path / executor
        code, out, err = run(capsys, "apply", SPEC, folder / "*.keras", "--out-dir", out_dir,
                             "--executor", executor, "--jobs", "2", "--timeout", "300",
                             "--summary", tmp_path / f"{executor}.json", "--export", "onnx")
        outputs[executor] = (code, re.sub(r"verified \([0-9.e-]+\)", "verified (D)",
                                          out.replace(str(out_dir), "DIR")), err)
        assert sorted(p.name for p in out_dir.iterdir()) == ["mnist.keras", "mnist.onnx"]
    assert outputs["local"] == outputs["ray"]
    code, out, err = outputs["ray"]
    assert code == 1 and err.startswith(f"error: {folder / 'broken.keras'}: not a valid .keras archive")
    assert err.count("\n") == 1
    lines = out.splitlines()
    assert lines[0].split() == ["model", "params", "FLOPs", "export", "result"]
    assert " onnx, verified (D) " in lines[2] and lines[1].split()[1:4] == ["-", "-", "-"]
    assert lines[-1] == "1 of 2 models written to DIR; 1 failed"
    summary = json.loads((tmp_path / "ray.json").read_text())
    assert (summary["executor"], summary["written"], summary["failed"], summary["exit_code"]) == \
        ("ray", 1, 1, 1)
    mnist = summary["models"][1]
    assert mnist["ok"] and mnist["output"] == str(tmp_path / "ray" / "mnist.keras")
    assert mnist["params"]["before"] > mnist["params"]["after"] and mnist["seconds"] > 0
    exported = mnist["export"]
    assert (exported["format"], exported["path"]) == ("onnx", str(tmp_path / "ray" / "mnist.onnx"))
    assert 0 <= exported["verified_difference"] <= 1e-4
    assert summary["models"][0]["error"].startswith(f"{folder / 'broken.keras'}: not a valid .keras archive")
    assert summary["models"][0]["export"] is None
    import onnxruntime
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype("float32")
    (y,) = onnxruntime.InferenceSession(exported["path"]).run(None, {"image": x})
    pruned = keras.saving.load_model(tmp_path / "ray" / "mnist.keras")
    np.testing.assert_allclose(y, np.asarray(pruned(x)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--out-dir", "d", "--address", "x:1"], "--address, --cpus-per-model and --memory-per-model need --executor ray"),
    (["-o", "x.keras", "--timeout", "3"], "--timeout needs --out-dir"),
    (["-o", "x.keras", "--executor", "ray"], "--executor needs --out-dir"),
    (["--out-dir", "d", "--timeout", "0"], "argument --timeout: must be > 0: '0'"),
    (["--out-dir", "d", "--executor", "ray", "--memory-per-model", "lots"],
     "argument --memory-per-model: not a size: 'lots' (e.g. 2G, 512M)"),
])
def test_executor_usage_errors_exit_2(argv, message, capsys):
    code, out, err = run(capsys, "apply", SPEC, "m.keras", *argv)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == f"prunec apply: error: {message}"


def test_sizes():
    assert parse_size("2G") == 2 * 1024 ** 3 and parse_size("512MiB") == 512 * 1024 ** 2
    assert parse_size("1000") == 1000 and parse_size("1.5k") == 1536
    with pytest.raises(ValueError):
        parse_size("-1G")


def test_summary_table_is_the_same_whatever_the_seconds(tmp_path):
    jobs = stand_in_jobs(tmp_path, ("a",))
    one = execute(jobs, Options(), run=executor_workers.by_name, prepare=None)
    assert one[0].seconds is not None
    assert "1 of 1 models written to o" in format_summary(one, "o")
