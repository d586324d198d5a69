"""Run the ``prunec`` command line in-process, as the CLI tests do, or in a fresh process (for
what a process imports on its own: keras-hub, prunec's blocks)."""

import os
import subprocess
import sys
from pathlib import Path

from compiler.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    """``prunec ARGV...`` -> (exit code, stdout, stderr); arguments may be paths."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_fresh(*argv) -> subprocess.CompletedProcess:
    """``prunec ARGV...`` in a new Python process, from the repository root."""
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, argv)],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
