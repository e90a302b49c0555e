"""launch/*.sh: syntax, required variables, and a real local launch."""
import subprocess
import sys

import pytest

from runner import REPO, env


@pytest.mark.parametrize("script", ["launch/local.sh", "launch/multinode.sh", "launch/slurm.sbatch"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(REPO / script)]).returncode == 0


def test_multinode_names_missing_variables():
    e = {k: v for k, v in env().items() if k not in ("NNODES", "NODE_RANK", "MASTER_ADDR")}
    done = subprocess.run(["bash", str(REPO / "launch/multinode.sh"), "-m", "train"], capture_output=True,
                          text=True, env={**e, "NNODES": "2"}, timeout=30)
    assert done.returncode == 2 and "NODE_RANK MASTER_ADDR" in done.stderr


def test_multinode_gives_up_on_an_unreachable_rendezvous():
    # Port 9 (discard) on loopback has no listener here: a bounded wait, then one clear line.
    e = {**env(), "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "9",
         "RDZV_WAIT": "1", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "launch/multinode.sh"), "-m", "train"], capture_output=True,
                          text=True, env=e, timeout=60)
    assert done.returncode == 2 and "rendezvous endpoint 127.0.0.1:9 cannot be reached after 1 s" in done.stderr


def test_local_launch_starts_every_rank(tmp_path):
    script = tmp_path / "hello.py"
    script.write_text("import os\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])\n")
    done = subprocess.run(["bash", str(REPO / "launch/local.sh"), "2", str(script)], capture_output=True, text=True,
                          env={**env(), "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rank 0 of 2" in done.stdout and "rank 1 of 2" in done.stdout
