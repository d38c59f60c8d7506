"""Attack on "one owner, many clients": stop ``auditcore serve`` the way systemd, Docker and
``kill`` do (SIGTERM), not with Ctrl-C. Its ``owner.json`` — the credential clients present —
stayed behind: uvicorn, having shut down, raised SIGTERM again and its default action ended
the process before anything could remove the file."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.cli_run import AUDITCORE
from tests.test_one_owner import OWNER, _env, _free_port, owner


def test_an_owner_stopped_with_sigterm_takes_its_credential_file_along(tmp_path: Path) -> None:
    subprocess.run([AUDITCORE, "workspaces", "create", "acme"], cwd=tmp_path, env=_env(),
                   capture_output=True, check=True)  # fmt: skip
    with owner(tmp_path, "serve", "--port", str(_free_port())) as process:
        assert (tmp_path / OWNER).exists()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert not (tmp_path / OWNER).exists()
