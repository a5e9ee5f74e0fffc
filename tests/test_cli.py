"""The command line through the real `diffusion-studio` console script: train, resume, sample, errors, Ctrl+C."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_studio import cli, resources

REPO = Path(__file__).resolve().parents[1]
SCRIPT = shutil.which("diffusion-studio")
TINY = ["--data", "builtin:digits", "--size", "16", "--model", "tiny", "--T", "20"]


def _command() -> list[str]:
    if SCRIPT:
        return [SCRIPT]
    return [sys.executable, "-m", "diffusion_studio"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # This checkout's package first, whichever checkout the editable install points at.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    # One thread per process: these tiny models gain nothing from more, and the suite shares a small machine.
    env["OMP_NUM_THREADS"] = "1"
    return env


def ds(*args, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def main_in(cwd: Path, *args: str) -> tuple[int, str]:
    """cli.main in this process, from ``cwd``: (exit code, stderr), checking stderr is one line."""
    import contextlib
    import io

    err = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(list(args))
    finally:
        os.chdir(old)
    text = err.getvalue()
    assert len([line for line in text.splitlines() if line.strip()]) == 1, text
    return code, text.strip()


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def write_png(path: Path, seed: int, size: int = 20) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


# ---- the console script ---------------------------------------------------------------------------------------------
def test_console_script_is_installed():
    if SCRIPT is None:
        if os.environ.get("CI"):
            pytest.fail("the diffusion-studio console script is missing; run pip install -c constraints.txt -e .")
        pytest.skip("diffusion-studio is not on PATH (pip install -c constraints.txt -e . --no-deps); "
                    "the tests use python -m diffusion_studio instead")
    proc = ds("--version", cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "diffusion-studio 0.1.0"


def test_python_m_and_main_py_forward_arguments(tmp_path):
    for cmd in ([sys.executable, "-m", "diffusion_studio", "--version"],
                [sys.executable, str(REPO / "main.py"), "--version"]):
        proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "diffusion-studio 0.1.0"


@pytest.mark.parametrize("command, flags", [
    ("train", ["--data", "--out", "--size", "--model", "--steps", "--minutes", "--batch", "--lr", "--schedule", "--T",
               "--beta-start", "--beta-end", "--device", "--seed", "--resume", "--precision", "--log-every",
               "--checkpoint-every", "--preview-every", "--warmup", "--ema-decay", "--flip", "--class-conditional",
               "--channels", "--quiet", "--debug", "--threads", "--lr-schedule", "(default: 1000)"]),
    ("sample", ["--model", "--n", "--out", "--sampler", "--steps", "--eta", "--variance", "--seed", "--batch",
                "--grid", "--gif", "--device", "--clip-x0", "--label", "--guidance", "--threads", "(default: 64)"]),
])
def test_help_lists_the_flags_with_defaults(command, flags):
    proc = ds(command, "--help", cwd=REPO)
    assert proc.returncode == 0 and proc.stderr == ""
    text = " ".join(proc.stdout.split())
    for flag in flags:
        assert flag in text, flag


def test_help_and_argument_errors_answer_without_importing_torch():
    code = ("import sys, contextlib, io\n"
            "from diffusion_studio.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "    codes = [main(['--help']), main(['train', '--help']), main(['train', '--out', 'x', '--T', '1'])]\n"
            "assert codes == [0, 0, 2], codes\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_sample_and_info_help_and_usage_errors_answer_without_importing_torch():
    # The package imports every command module to build the parser: none of them may import torch at the top.
    code = ("import sys, contextlib, io\n"
            "from diffusion_studio.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "    codes = [main(['sample', '--help']), main(['info', '--help']), main(['info']), main(['bogus']),\n"
            "             main(['sample', '--model', 'm', '--out', 'o', '--n', '0'])]\n"
            "assert codes == [0, 0, 2, 2, 2], codes\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---- train and sample -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    proc = ds("train", *TINY, "--unconditional", "--steps", "6", "--batch", "8", "--log-every", "1", "--out", "run",
              cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work / "run"


def test_train_writes_checkpoint_metrics_and_run_json(trained):
    from diffusion_studio.core.io.checkpoint import load_checkpoint

    manifest = json.loads((trained / "checkpoint.json").read_text())
    assert (trained / manifest["weights"]).is_file() and manifest["weights"].endswith(".safetensors")
    ckpt = load_checkpoint(trained)
    assert ckpt.step == 6 and ckpt.model_config.preset == "tiny" and ckpt.model_config.image_size == 16
    assert ckpt.schedule.T == 20 and ckpt.meta["data"]["spec"] == "builtin:digits"
    lines = metrics(trained)
    assert [m["step"] for m in lines] == [1, 2, 3, 4, 5, 6]
    for m in lines:
        assert {"step", "loss", "images_per_s", "lr", "eta_s", "elapsed_s", "grad_norm"} <= set(m)
        assert np.isfinite(m["loss"]) and m["images_per_s"] > 0
    run = json.loads((trained / "run.json").read_text())
    assert run["argv"][0] == "train" and "--steps 6" in run["command"]


def test_sample_writes_pngs_grid_and_gif(trained, tmp_path):
    proc = ds("sample", "--model", trained, "--n", 5, "--sampler", "ddim", "--steps", 5, "--out", "out",
              "--grid", "g.png", "--gif", "a.gif", "--seed", 3, "--batch", 4, "--precision", "fp32", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    files = sorted((tmp_path / "out").glob("*.png"))
    assert [f.name for f in files] == [f"sample_{i:05d}.png" for i in range(5)]
    for f in files:
        with Image.open(f) as im:
            assert im.size == (16, 16) and im.mode == "L"
    with Image.open(tmp_path / "g.png") as grid:
        assert grid.size[0] > 16 * 2 and grid.size[1] > 16
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames > 1 and gif.size[0] >= 2 * 16

    again = ds("sample", "--model", trained / "checkpoint.json", "--n", 5, "--steps", 5, "--out", "again",
               "--seed", 3, "--batch", 4, "--quiet", "--precision", "fp32", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for f in files:
        assert (tmp_path / "again" / f.name).read_bytes() == f.read_bytes()
    pixels = [png_pixels(f) for f in files]
    assert all(not np.array_equal(pixels[0], p) for p in pixels[1:]), "every sample has its own noise"


def test_sample_ddpm_over_all_steps(trained, tmp_path):
    proc = ds("sample", "--model", trained, "--n", 2, "--sampler", "ddpm", "--variance", "beta", "--out", "o",
              cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "20 steps" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["sample_00000.png", "sample_00001.png"]


def test_info_summarises_the_checkpoint(trained):
    proc = ds("info", trained, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for text in ("tiny", "parameters", "16x16x1", "linear (T=20", "step       6", "builtin:digits"):
        assert text in proc.stdout, text


def test_export_keeps_only_the_sampling_weights(trained, tmp_path):
    from diffusion_studio.core.io.checkpoint import load_checkpoint

    proc = ds("export", trained, "--out", "shipped", "--note", "a test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    full, slim = load_checkpoint(trained), load_checkpoint(tmp_path / "shipped")
    assert set(slim.tensors) == {"ema"} and {"optim", "rng"} <= set(full.tensors)
    for k, v in full.tensors["ema"].items():
        assert torch_equal(slim.tensors["ema"][k], v), k
    assert slim.step == 6 and slim.meta["exported"]["note"] == "a test"
    weights = lambda run: sum(f.stat().st_size for f in run.glob("*.safetensors"))  # noqa: E731
    assert weights(tmp_path / "shipped") < weights(trained) / 2
    # It samples exactly like the run it came from, but cannot be resumed.
    # fp32 in both: "auto" is decided by timing each process's kernels, which a busy machine can tip either way
    a = ds("sample", "--model", tmp_path / "shipped", "--n", 2, "--steps", 3, "--out", "a", "--quiet",
           "--precision", "fp32", cwd=tmp_path)
    b = ds("sample", "--model", trained, "--n", 2, "--steps", 3, "--out", "b", "--quiet", "--precision", "fp32",
           cwd=tmp_path)
    assert a.returncode == b.returncode == 0
    assert (tmp_path / "a" / "sample_00001.png").read_bytes() == (tmp_path / "b" / "sample_00001.png").read_bytes()
    shutil.copytree(tmp_path / "shipped", tmp_path / "r")
    resumed = ds("train", "--out", "r", "--resume", "--steps", 8, cwd=tmp_path)
    assert resumed.returncode != 0 and len(stderr_lines(resumed)) == 1


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_resume_continues_the_step_count(tmp_path):
    from diffusion_studio.core.io.checkpoint import load_checkpoint

    first = ds("train", *TINY, "--steps", 4, "--batch", 8, "--log-every", 1, "--out", "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # No --data: the run's own data is reloaded from the checkpoint.
    second = ds("train", "--out", "run", "--resume", "--steps", 8, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    run = tmp_path / "run"
    assert [m["step"] for m in metrics(run)] == list(range(1, 9))
    assert load_checkpoint(run).step == 8
    assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 4
    assert len(list(run.glob("*.safetensors"))) == 1

    # What a resumed run cannot do is refused up front (checked in-process: quicker, same code path).
    def refused(*args: str) -> str:
        code, err = main_in(tmp_path, "train", "--out", "run", *args)
        assert code == 2, err
        return err

    assert "--resume" in refused(*TINY, "--steps", "8")  # a run is there: resume it, or --overwrite
    assert "already at step 8" in refused("--resume", "--steps", "8")
    assert "finished its 8 steps" in refused("--resume")
    assert "--size" in refused("--resume", "--steps", "9", "--size", "32")
    assert "schedule" in refused("--resume", "--steps", "9", "--T", "50")
    assert load_checkpoint(run).step == 8


def test_folder_with_a_broken_file_trains_and_names_it(tmp_path):
    data = tmp_path / "imgs"
    data.mkdir()
    write_png(data / "a.png", 1)
    write_png(data / "b.png", 2)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    proc = ds("train", "--data", data, "--size", 16, "--model", "tiny", "--T", 20, "--steps", 2, "--batch", 2,
              "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "broken.png" in line)
    assert line.split("broken.png", 1)[1].strip(" :"), "the reason is printed after the file name"
    assert "2 images" in proc.stdout
    # The folder holds 2 loadable images: a batch of 8 is a usage error, found before training starts.
    code, err = main_in(tmp_path, "train", "--data", str(data), "--size", "16", "--batch", "8", "--out", "run2")
    assert code == 2 and "argument --batch: 8 is larger than the dataset (2 images" in err
    assert not (tmp_path / "run2").exists()


# ---- errors ---------------------------------------------------------------------------------------------------------
def test_usage_errors_through_the_script_are_one_line(tmp_path):
    for extra, needle in ((["--steps", "-3"], "argument --steps: must be at least 1, got -3"),
                          (["--size", "30", "--model", "tiny"], "30 is not divisible by 4")):
        proc = ds("train", "--data", "builtin:digits", "--out", "run", *extra, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert stderr_lines(proc) == [proc.stderr.strip()] and proc.stdout == ""
        assert proc.stderr.startswith("diffusion-studio: error: ") and needle in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--steps", "-3"], "--steps"),
    (["--T", "1"], "--T"),
    (["--batch", "0"], "--batch"),
    (["--size", "30", "--model", "tiny"], "divisible"),
    (["--model", "huge"], "huge"),
    (["--beta-end", "1.5"], "--beta-end"),
    (["--beta-start", "0.05", "--beta-end", "0.02"], "beta_start"),
    (["--schedule", "cosine", "--beta-end", "0.02"], "cosine"),
    (["--steps", "5", "--minutes", "1"], "not allowed"),
    (["--lr", "0"], "--lr"),
    (["--device", "cuda:7"], "device"),
    (["--bogus"], "unrecognized"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, extra, needle):
    """In-process (main() returns the exit code) to keep the suite quick; the script path is tested above."""
    if extra == ["--device", "cuda:7"]:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    code, err = main_in(tmp_path, "train", "--data", "builtin:digits", "--out", "run", *extra)
    assert code == 2, err
    assert err.startswith("diffusion-studio: error: ") and needle in err
    assert not (tmp_path / "run").exists(), "nothing is written before the command line is known to be good"


def test_runtime_errors_exit_1_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    pickle_file = tmp_path / "model.pt"
    pickle_file.write_bytes(b"\x80\x04\x95" + b"\x00" * 32)
    proc = ds("train", "--data", tmp_path / "missing", "--out", "r1", "--size", 16, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert stderr_lines(proc) == ["diffusion-studio: missing: no such file or folder"], proc.stderr
    cases = [
        (["train", "--data", empty, "--out", "r2", "--size", 16], "no images"),
        (["sample", "--model", pickle_file, "--n", 1, "--out", "s"], "refused"),
        (["sample", "--model", "builtin:no-such-model", "--n", 1, "--out", "s"], "available"),
        (["info", tmp_path / "nothing.json"], "nothing.json"),
    ]
    for args, needle in cases:
        code, err = main_in(tmp_path, *map(str, args))
        assert code == 1, (args, err)
        assert err.startswith("diffusion-studio: ") and needle in err, (args, err)
    assert not (tmp_path / "s").exists()


def test_debug_adds_the_traceback(tmp_path, capsys):
    for argv in (["--debug", "train"], ["train", "--debug"]):
        assert cli.main([*argv, "--data", str(tmp_path / "missing"), "--size", "16", "--out", str(tmp_path / "r")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0] == "Traceback (most recent call last):" and "DataError" in err[-2]
        assert err[-1] == "diffusion-studio: missing: no such file or folder"


def test_sample_usage_errors(trained, tmp_path):
    for args, needle in [
        (["--steps", "21"], "ddim takes 1 to 20 steps"),
        (["--sampler", "ddpm", "--steps", "1"], "ddpm takes 2 to 20 steps"),
        (["--sampler", "ddpm", "--eta", "0.5"], "--eta"),
        (["--label", "3"], "not class-conditional"),
        (["--guidance", "3"], "needs a class"),
        (["--n", "0"], "--n"),
    ]:
        code, err = main_in(tmp_path, "sample", "--model", str(trained), "--out", "s", *args)
        assert code == 2 and needle in err, (args, err)
    assert not (tmp_path / "s").exists()


# ---- Ctrl+C ---------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    from diffusion_studio.core.io.checkpoint import load_checkpoint

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [*_command(), "train", *TINY, "--steps", "100000", "--batch", "4", "--log-every", "1",
         "--checkpoint-every", "0", "--out", str(run)],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job may inherit SIG_IGN
    )
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            path = run / "metrics.jsonl"
            if path.exists() and path.read_text().count("\n") >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    last = stderr_lines(subprocess.CompletedProcess([], 130, out, err))[-1]
    assert last.startswith("diffusion-studio: interrupted at step ")
    assert "checkpoint saved to" in last and "checkpoint.json" in last and last.endswith("--resume")
    ckpt = load_checkpoint(run)
    assert ckpt.step >= 1
    steps = [m["step"] for m in metrics(run)]
    assert steps == list(range(1, ckpt.step + 1)), "every step up to the saved one is logged, none beyond it"


# ---- in-process: the app, resources, fid ----------------------------------------------------------------------------
def test_no_arguments_opens_the_app(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("diffusion_studio.gui.app")
    fake.run_app = lambda argv: seen.append(list(argv)) or 0
    monkeypatch.setitem(sys.modules, "diffusion_studio.gui.app", fake)
    assert cli.main([]) == 0
    assert cli.main(["--demo", "--tab", "sampling"]) == 0
    assert cli.main(["app", "--screenshot", "x.png"]) == 0
    assert seen == [[], ["--demo", "--tab", "sampling"], ["--screenshot", "x.png"]]


def test_no_gui_is_one_line_and_exit_1(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffusion_studio.gui.app", None)  # import fails
    assert cli.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffusion-studio: the desktop app cannot start")


def test_cli_mirrors_core_names():
    from diffusion_studio.core.diffusion.schedule import KINDS
    from diffusion_studio.core.nets.unet import PRESETS

    assert tuple(cli.PRESET_NAMES) == tuple(PRESETS)
    assert tuple(cli.SCHEDULE_KINDS) == tuple(KINDS)


def test_resources_builtin_models(tmp_path, monkeypatch):
    assert resources.resources_dir() == REPO / "resources"
    assert resources.builtin_model_path("digits") == REPO / "resources" / "models" / "digits" / "checkpoint.json"
    monkeypatch.setattr(resources, "resources_dir", lambda: tmp_path)
    assert resources.list_builtin_models() == []
    (tmp_path / "models" / "digits").mkdir(parents=True)
    (tmp_path / "models" / "digits" / "checkpoint.json").write_text("{}")
    (tmp_path / "models" / "half-copied").mkdir()
    assert resources.list_builtin_models() == ["digits"]
    assert resources.resolve_model_spec("builtin:digits") == tmp_path / "models" / "digits" / "checkpoint.json"
    assert resources.resolve_model_spec("runs/x") == Path("runs/x")
    with pytest.raises(resources.UnknownModelError, match=r"builtin:faces.*available: builtin:digits"):
        resources.resolve_model_spec("builtin:faces")
    with pytest.raises(resources.UnknownModelError):
        resources.resolve_model_spec("builtin:../../etc")


def test_fid_command_is_wired_when_present(capsys):
    import importlib.util

    if importlib.util.find_spec("diffusion_studio.cli.fid") is None:
        assert cli.main(["fid", "--real", "x"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "fid is not available" in err[0]
        return
    assert cli.main(["fid", "--help"]) == 0
    assert "fid" in capsys.readouterr().out
