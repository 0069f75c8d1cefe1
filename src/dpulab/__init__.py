"""dpulab: simulated DPU labs for OVN-Kubernetes DPU offload."""

import os as _os
import signal as _signal
import sys as _sys


def _interrupted_while_starting(signum, frame):  # pragma: no cover - a signal during imports
    _os.write(2, b"dpulab: interrupted\n")
    _os._exit(130)


# Run as the `dpulab` command (or `python -m dpulab`), a Ctrl-C during the third of a second
# of imports ends it with one line, as one later does (cli.main takes over from there), not
# with a traceback. Importing dpulab as a library leaves SIGINT alone.
if _os.path.basename(_sys.argv[0] if _sys.argv else "") in ("dpulab", "-m") and (
    _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler
):
    _signal.signal(_signal.SIGINT, _interrupted_while_starting)
