"""Run the ``prunec`` command line in-process, as the CLI tests do."""

from compiler.cli import main


def run(capsys, *argv):
    """``prunec ARGV...`` -> (exit code, stdout, stderr); arguments may be paths."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
