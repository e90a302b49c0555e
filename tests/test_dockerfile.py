"""The Dockerfile passes hadolint (installed with the test extra) and runs the harness under torchrun."""
import shutil
import subprocess
import sys
from pathlib import Path

from runner import REPO


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_launches_the_harness():
    text = (REPO / "Dockerfile").read_text()
    assert "torchrun --standalone" in text and "-m train" in text
    for folder in ("models", "train", "launch"):
        assert f"COPY {folder} ./{folder}" in text
