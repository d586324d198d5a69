"""``prunec`` for models that use ``my_layers``: import them (Keras class + prunec rule), then run
the ordinary command line. Usage is the same as ``prunec``:

    python examples/custom_layer/prunec_with_my_layers.py apply SPEC MODEL -o OUT.keras
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import my_layers  # noqa: E402,F401  (registers ChannelScale with Keras and with prunec)
from compiler.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
