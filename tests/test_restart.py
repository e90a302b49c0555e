"""Which run a worker restarted by torchrun continues (issue 12): this job's, never another's."""
import pytest

from runner import python_m
from tiny import tiny
from train.build import JOB_MARK, prepare
from train.config import load_config
from train.errors import UsageError

ARGS = tiny("mlp", steps=2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run launched by torchrun job 'job-a' (the mark a real launch leaves)."""
    folder = tmp_path_factory.mktemp("run")
    done = python_m(["train", "--recipe", "mlp", "--run-dir", str(folder), *ARGS])
    assert done.returncode == 0, done.stderr
    (folder / JOB_MARK).write_text("job-a\n")
    return folder


def as_worker(monkeypatch, job: str, restart: int) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", job)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))
    monkeypatch.setenv("RANK", "1")  # not rank 0: prepare writes no mark


def test_a_restarted_worker_of_the_same_job_continues_from_the_newest_checkpoint(finished, monkeypatch):
    as_worker(monkeypatch, "job-a", 1)
    prepared = prepare(load_config("mlp", None, ARGS), str(finished))
    assert prepared.resume is not None and prepared.resume["step"] == 2
    assert prepared.cfg.train.resume == "auto"


def test_without_a_good_checkpoint_it_starts_afresh(finished, monkeypatch, tmp_path):
    as_worker(monkeypatch, "job-a", 2)
    folder = tmp_path / "early"  # the dead attempt wrote its config, no checkpoint yet
    folder.mkdir()
    (folder / "config.toml").write_text("")
    (folder / JOB_MARK).write_text("job-a\n")
    prepared = prepare(load_config("mlp", None, ARGS), str(folder))
    assert prepared.resume is None and prepared.cfg.train.overwrite  # its old outputs get cleared


@pytest.mark.parametrize("job, restart", [("job-b", 1), ("job-a", 0)])
def test_another_jobs_run_or_a_fresh_launch_is_still_refused(finished, monkeypatch, job, restart):
    as_worker(monkeypatch, job, restart)
    with pytest.raises(UsageError, match="already holds a run"):
        prepare(load_config("mlp", None, ARGS), str(finished))
