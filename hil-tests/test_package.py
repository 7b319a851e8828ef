"""The Debian package: build it, install it on this machine, check it, remove it.

Slow (a release build) and it installs a package as root, so it runs only when asked:
`METERD_PACKAGE_TEST=1`. The work is done by `hil-tests/package.sh`, which can also be run
by hand; this test only runs it and shows its output.
"""
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(
    os.environ.get("METERD_PACKAGE_TEST") != "1",
    reason="builds a release .deb and installs it as root: set METERD_PACKAGE_TEST=1",
)
@pytest.mark.timeout(3600)
def test_the_deb_installs_verifies_and_removes():
    result = subprocess.run(
        ["bash", str(HERE / "package.sh")],
        cwd=HERE.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "package.sh: all checks passed" in result.stdout
