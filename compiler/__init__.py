"""prunec: remove neurons, filters and channels from Keras 3 models, exactly.

Four stages, four values, one direction (the Python API lives in ``compiler.api``)::

    from compiler.api import load_spec, build_graph, plan, emit, apply
    spec  = load_spec("specs/mnist_fc1.yaml")     # Spec        (spec.py)
    graph = build_graph(model)                    # ModelGraph  (graph.py)
    plan_ = plan(graph, spec)                     # Plan        (plan.py)
    model = emit(model, plan_)                    # keras.Model (emit.py)

Around them, the review workflow (docs/workflow.md): ``report.py`` formats plans, ``lock.py``
pins a plan's channels to fingerprints of its spec and model, ``diff.py`` compares plans and
locks, ``batch.py`` runs one spec over many models, ``draw.py`` draws the dependency graph;
``cli.py`` parses the command line and ``commands.py`` runs each command.

Importing this package does not import Keras, so ``prunec validate`` stays fast.
"""

from .errors import (ArtifactError, CompilerError, ConstraintError, InternalError, ModelError,
                     SpecError, VerificationError)

__all__ = ["CompilerError", "SpecError", "ModelError", "ConstraintError", "InternalError",
           "VerificationError",
           "ArtifactError"]
