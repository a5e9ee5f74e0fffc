"""Outputs are checked before the work and failures name the file (issue 26): a folder holding one kind of run is
not written by the other kind; the run lock comes before any file; an output that cannot be written is said before
the bound is computed or any sample drawn; a full disk names the file and leaves the old one whole; nll says it does
not cover latent models."""
from __future__ import annotations

import errno
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion_studio import cli
from diffusion_studio.core.errors import CheckpointError
from diffusion_studio.core.io.safeio import write_atomic
from diffusion_studio.jobs.likelihood import unsupported

MODELS = Path(__file__).parent / "fixtures" / "release2" / "models"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("fixture, command, other", [
    ("cli_run", ["train-autoencoder", "--data", "builtin:shapes", "--steps", "1"], "a diffusion run (checkpoint.json)"),
    ("autoencoder", ["train", "--data", "builtin:digits", "--steps", "1"], "an autoencoder (autoencoder.json)"),
    ("autoencoder", ["train", "--data", "builtin:digits", "--steps", "1", "--overwrite"],
     "an autoencoder (autoencoder.json)"),
])
def test_one_kind_of_run_never_writes_into_the_others_folder(fixture, command, other, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(MODELS / fixture, run)
    before = _digest(run)
    code = cli.main([*command, "--out", str(run)])
    lines = _one_line(capsys)
    assert code == 2 and len(lines) == 1 and f"argument --out: {run} holds {other}" in lines[0], lines
    assert _digest(run) == before  # every file as it was, and no new one (not even a lock file)


def test_the_app_cannot_save_an_autoencoder_over_a_diffusion_run(tmp_path):
    from diffusion_studio.core.io.autoencoder_io import load_autoencoder, save_autoencoder

    run = tmp_path / "run"
    shutil.copytree(MODELS / "cli_run", run)
    ae = load_autoencoder(MODELS / "autoencoder")
    with pytest.raises(CheckpointError, match=r"^run: holds a diffusion run \(checkpoint.json\)"):
        save_autoencoder(run, ae.model, ae.scale_factor)
    assert not (run / "autoencoder.json").exists()


def test_train_autoencoder_takes_the_lock_before_writing_anything(tmp_path, capsys):
    """A train-autoencoder started while another process holds the folder writes nothing there."""
    run = tmp_path / "ae"
    shutil.copytree(MODELS / "autoencoder", run)
    before = _digest(run)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from diffusion_studio.core.io import runlock; runlock.acquire(sys.argv[1], 'train'); "
        "print('held', flush=True); time.sleep(60)"), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = cli.main(["train-autoencoder", "--data", "builtin:shapes", "--steps", "2", "--size", "16",
                         "--overwrite", "--out", str(run)])
    finally:
        holder.kill()
        holder.wait()
    lines = _one_line(capsys)
    assert code == 1 and len(lines) == 1 and "in use by process" in lines[0], lines
    after = _digest(run)
    after.pop(".lock", None), before.pop(".lock", None)
    assert after == before


def test_nll_checks_its_csv_before_computing_the_bound(tmp_path, capsys, monkeypatch):
    from diffusion_studio.cli import nll

    monkeypatch.setattr(nll, "_run", lambda *a, **k: pytest.fail("the bound was computed"))
    code = cli.main(["nll", "--model", "builtin:digits", "--data", "builtin:digits", "--n", "4",
                     "--csv", "/proc/version"])
    lines = _one_line(capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("diffusion-studio: error: argument --csv: cannot "
                                                                 "write /proc/version ("), lines
    (tmp_path / "dev").symlink_to("/dev/null")
    code = cli.main(["nll", "--model", "builtin:digits", "--data", "builtin:digits", "--n", "4",
                     "--csv", str(tmp_path / "dev")])
    lines = _one_line(capsys)
    assert code == 2 and "argument --csv:" in lines[0] and "not a regular file" in lines[0], lines


@pytest.mark.parametrize("flag", ["--grid", "--gif"])
def test_sample_checks_its_grid_and_gif_before_sampling(flag, tmp_path, capsys):
    out = tmp_path / "samples"
    code = cli.main(["sample", "--model", "builtin:digits", "--n", "4", "--steps", "5", "--out", str(out),
                     flag, "/proc/diffusion-studio-cannot-be-here.png"])
    lines = _one_line(capsys)
    assert code == 2 and len(lines) == 1 and f"argument {flag}: cannot write /proc/" in lines[0], lines
    assert not out.exists() or not any(out.iterdir())


def test_sample_checks_its_folder_before_sampling(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["sample", "--model", "builtin:digits", "--n", "2", "--steps", "2", "--out",
                     str(blocker / "under")])
    lines = _one_line(capsys)
    assert code == 2 and len(lines) == 1 and f"argument --out: cannot write into {blocker / 'under'}" in lines[0]


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "metrics.csv"
    target.write_bytes(b"old")

    def full(f):
        f.write(b"new, partly")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        write_atomic(target, full)
    assert e.value.filename == str(target) and e.value.errno == errno.ENOSPC
    assert "No space left on device" in e.value.strerror and "metrics.csv is unchanged" in e.value.strerror
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_a_full_disk_on_the_command_line_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    from diffusion_studio.core.io import safeio

    real = safeio.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, _data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safeio.os, "fdopen", lambda fd, mode="r", *a, **k: Full(real(fd, mode)) if mode == "wb"
                        else real(fd, mode, *a, **k))
    csv = tmp_path / "terms.csv"
    code = cli.main(["nll", "--model", "builtin:digits", "--data", "builtin:digits", "--n", "2", "--every", "50",
                     "--csv", str(csv)])
    monkeypatch.setattr(safeio.os, "fdopen", real)
    lines = _one_line(capsys)
    assert code == 1 and lines[-1] == (f"diffusion-studio: {csv}: No space left on device (nothing written; any "
                                       f"earlier terms.csv is unchanged)"), lines
    assert not csv.exists() and not list(tmp_path.iterdir())


def test_nll_refuses_a_latent_model_in_one_line(capsys):
    code = cli.main(["nll", "--model", str(MODELS / "latent_run"), "--data", "builtin:shapes", "--n", "2"])
    lines = _one_line(capsys)
    assert code == 2 and len(lines) == 1 and "is a latent model" in lines[0] and "does not cover latent models" in \
        lines[0], lines
    assert unsupported({"latent": {}}) is not None and unsupported({"model": {}}) is None
    assert torch.get_num_threads() >= 1
