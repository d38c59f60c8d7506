"""Where the ``auditcore`` console script is: the one installed beside this interpreter,
whatever PATH says."""

from __future__ import annotations

import sys
from pathlib import Path

AUDITCORE = str(Path(sys.executable).with_name("auditcore"))
