"""Hostile and mistaken input across the entry points: exit 2, one line, nothing lost.

Every train case points --run-dir at a folder that already holds a finished run; the folder
must come out of each case byte for byte as it went in.
"""
import hashlib

import pytest

from runner import python_m, torchrun


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    """A finished run of the mlp debug flavor: config, summary, events, a checkpoint."""
    folder = tmp_path_factory.mktemp("existing")
    done = python_m(["train", "--recipe", "mlp", "--run-dir", str(folder), "model.flavor=debug",
                     "data.num_samples=256", "train.batch_size=32", "train.steps=2", "train.eval_every=0"])
    assert done.returncode == 0, done.stderr
    return folder


TRAIN_CASES = [
    (["--recipe", "gpt"], "--recipe='gpt' is not allowed (choose from lstm, mlp, transformer"),
    (["--recipe", "mlp", "model.name=mpl"], "did you mean 'mlp'"),
    (["--recipe", "mlp", "model.flavor=huge"], "model.flavor='huge' is not allowed for mlp"),
    (["--recipe", "mlp", "model.hiden=[8]"], "did you mean 'hidden'"),
    (["--recipe", "mlp", "optim.lrr=0.1"], "did you mean 'optim.lr'"),
    (["--recipe", "mlp", "optm.lr=0.1"], "unknown section 'optm'; did you mean 'optim'"),
    (["--recipe", "mlp", "optim.lr=-1"], "optim.lr=-1.0 is out of range (must be > 0)"),
    (["--recipe", "mlp", "optim.lr=nan"], "optim.lr=nan is not a finite number (must be finite and > 0)"),
    (["--recipe", "mlp", "optim.lr=inf"], "optim.lr=inf is not a finite number"),
    (["--recipe", "mlp", "train.steps=ten"], "train.steps='ten' has the wrong type (must be an integer)"),
    (["--recipe", "mlp", "train.steps=0"], "train.steps=0 is out of range (must be >= 1)"),
    (["--recipe", "mlp", "train.batch_size=32", "train.grad_accum=3"], "train.batch_size=32 must divide by"),
    (["--recipe", "mlp", "train.batch_size=100000"], "larger than the dataset"),
    (["--recipe", "lstm", "data.root=/nonexistent/corpus"], "data.root='/nonexistent/corpus' does not exist"),
    (["--recipe", "lstm", "data.name=synthetic"], "does not fit the model's task 'text'"),
    (["--recipe", "mlp", "data.name=mnist", "data.root=/nonexistent/mnist"], "has no MNIST (set data.download=true"),
    (["--recipe", "mlp", "comm.hook=fp8"], "comm.hook='fp8' is not allowed"),
    (["--recipe", "mlp", "dist.backend=nccl"], "dist.backend='nccl' needs CUDA"),
    (["--recipe", "mlp", "train.resume=/nonexistent/step.pt"], "train.resume='/nonexistent/step.pt' does not exist"),
    (["--recipe", "mlp", "lr=3"], "must look like section.key=value"),
]


@pytest.mark.parametrize("args, fragment", TRAIN_CASES)
def test_train_refuses_bad_input_and_keeps_the_old_run(existing, args, fragment):
    before = snapshot(existing)
    done = python_m(["train", "--run-dir", str(existing), *args])
    assert done.returncode == 2, done.stderr
    assert fragment in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert snapshot(existing) == before


def test_a_folder_holding_a_run_is_refused_unless_asked(existing):
    before = snapshot(existing)
    done = python_m(["train", "--recipe", "mlp", "--run-dir", str(existing), "model.flavor=debug"])
    assert done.returncode == 2 and "already holds a run (set train.resume=auto" in done.stderr
    assert snapshot(existing) == before


def test_a_checkpoint_of_another_model_is_refused(existing):
    before = snapshot(existing)
    done = python_m(["train", "--recipe", "mlp", "--run-dir", str(existing), "model.flavor=small", "train.resume=auto"])
    assert done.returncode == 2 and "does not fit model mlp/small" in done.stderr
    assert snapshot(existing) == before


def test_bad_toml_and_unwritable_folders(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\n")
    for args, fragment in [(["--config", str(bad)], "is not valid TOML"),
                           (["--config", str(tmp_path / "none.toml")], "cannot be read"),
                           (["--recipe", "mlp", "--run-dir", "/proc/gradwire-run"], "is not writable")]:
        done = python_m(["train", *args])
        assert done.returncode == 2 and fragment in done.stderr, (args, done.stderr)


def test_debug_shows_the_traceback():
    done = python_m(["train", "--recipe", "mlp", "optim.lr=-1", "--debug"])
    assert done.returncode != 0 and "Traceback" in done.stderr


@pytest.mark.parametrize("args, fragment", [
    (["train.comm.sweep", "--ops", "allreduce"], "did you mean 'all_reduce'"),
    (["train.comm.sweep", "--max-bytes", "huge"], "--max-bytes 'huge' is not understood"),
    (["train.comm.sweep", "--max-bytes", "inf"], "--max-bytes 'inf' is not understood"),
    (["train.comm.sweep", "--factor", "nan"], "--factor nan must be a finite number > 1"),
    (["train.comm.plan", "--params", "7e9", "--link", "fast"], "link rate 'fast' is not understood"),
    (["train.comm.plan", "/nonexistent/summary.json"], "does not exist"),
    (["launch.testbed", "--nodes", "1", "--", "-m", "train"], "--nodes 1 must be >= 2"),
    (["launch.testbed", "--rate", "quick", "--", "-m", "train"], "is not a tc rate"),
    (["launch.testbed", "--timeout", "nan", "--", "-m", "train"], "--timeout nan must be a finite number"),
])
def test_other_entry_points_refuse_bad_input(args, fragment):
    done = python_m(args)
    assert done.returncode == 2 and fragment in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1



def test_an_unreadable_file_in_a_text_folder_fails_every_rank_before_any_group(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text to learn from\n" * 2000)
    (corpus / "b.txt").symlink_to("/proc/self/mem")  # a regular file whose read fails (EIO), even for root
    done = torchrun(["-m", "train", "--recipe", "lstm", "--run-dir", str(tmp_path / "run"), "model.flavor=debug",
                     f"data.root={corpus}", "train.steps=2"], timeout=120)
    assert done.returncode != 0
    lines = [l for l in done.stderr.splitlines() if l.startswith("gradwire: error:")]
    assert lines and all(f"file '{corpus / 'b.txt'}' cannot be read" in l for l in lines), done.stderr[-3000:]
    assert "exitcode  : 2" in done.stderr  # the usage-error exit, not a crash
    assert "ConfigError" not in done.stderr and "load_text" not in done.stderr  # no worker traceback
    assert not (tmp_path / "run").exists()  # failed before any rank wrote anything
