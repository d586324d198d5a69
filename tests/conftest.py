"""Shared pytest setup for prunec tests.

- Quiet TensorFlow logs and pin the Keras backend before anything imports
  Keras.
- Make ``tests/`` importable so test modules can ``import models`` and
  ``import reference`` (the model factories and the independent oracle).
- A hypothesis profile suited to slow-ish TF code (no deadline).
- Fixtures: ``factory_name`` / ``factory`` parametrized over every model
  factory in ``models.FACTORIES``; ``add_bn_file``, the residual model saved
  once (tests read it, never write it).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import pytest  # noqa: E402

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "prunec",
        deadline=None,
        max_examples=25,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "prunec"))
except ImportError:  # hypothesis is optional for the reference tests
    pass

from models import FACTORIES  # noqa: E402


@pytest.fixture(params=sorted(FACTORIES))
def factory_name(request):
    """Name of each model factory in ``models.FACTORIES``."""
    return request.param


@pytest.fixture
def factory(factory_name):
    """Each model factory in ``models.FACTORIES`` (call it to build)."""
    return FACTORIES[factory_name]


@pytest.fixture(scope="session")
def add_bn_file(tmp_path_factory):
    """``models.add_bn_model()`` saved as ``add.keras``, for tests of files (locks, diffs)."""
    path = tmp_path_factory.mktemp("add_bn") / "add.keras"
    FACTORIES["add_bn_model"]().save(path)
    return path
