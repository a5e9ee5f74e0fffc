"""`diffusion-studio nll`: the printed bits/dim is the core's bound on the same images, the CSV adds up to it,
quick looks say they are estimates, and bad input is one line with the usual exit codes."""
from __future__ import annotations

import contextlib
import csv
import io
import re

import pytest
import torch

from diffusion_studio import cli
from diffusion_studio.core.diffusion import vlb
from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
from diffusion_studio.core.diffusion.eps import model_fn
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet, UNetConfig
from diffusion_studio.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = UNetConfig(image_size=8, in_channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                   attn_resolutions=(4,), groups=8, num_heads=2, preset=None)
T = 100


@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory):
    g = torch.Generator().manual_seed(3)
    m = UNet(MICRO)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    meta = {"step": 1, "model": MICRO.to_dict(), "schedule": NoiseSchedule.create("linear", T).to_dict(),
            "data": {"spec": "builtin:digits"}}
    return save_checkpoint(tmp_path_factory.mktemp("nll") / "micro", {"ema": m.state_dict()}, meta)


def run(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["nll", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


def bits(text: str) -> dict[str, tuple[str, float, float]]:
    found = re.findall(r"σ² = (β̃|β)\s+bits/dim ([=≈]) ([\d.]+) ± ([\d.]+)", text)
    return {sym: (sign, float(v), float(h)) for sym, sign, v, h in found}


def test_nll_prints_the_cores_bound_and_a_csv_that_adds_up(micro_ckpt, tmp_path):
    path = tmp_path / "terms.csv"
    code, out, err = run("--model", micro_ckpt, "--data", "builtin:digits", "--n", 3, "--seed", 4, "--csv", path,
                         "--precision", "fp32", "--device", "cpu")
    assert code == 0, err
    got = bits(out)
    assert set(got) == {"β", "β̃"} and got["β"][0] == "=" and got["β"][2] > 0
    assert "OWN training images" in out  # the checkpoint says it trained on builtin:digits: not held out
    # the same figure straight from the core, on the same 3 images (seeded subset) and the same noise
    ckpt = load_checkpoint(micro_ckpt)
    ds = load_dataset("builtin:digits", 8, channels=1)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(4))[:3].sort().values
    fn = model_fn(ckpt.build_model("cpu"), "cpu", "fp32", schedule=ckpt.schedule)
    ref = vlb.vlb_total(fn, ckpt.schedule, ds.batch(idx).float(), seed=4)
    for v, sym in (("beta", "β"), ("beta_tilde", "β̃")):
        want = ref.bits_per_dim(v)
        assert got[sym][1] == pytest.approx(want["bits_per_dim"], abs=6e-5)
        assert got[sym][2] == pytest.approx(want["half_width"], abs=6e-5)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == T + 1 and rows[0]["term"] == "L_T" and rows[-1]["term"] == "L_0"
    assert [int(r["t"]) for r in rows] == list(range(T + 1, 0, -1))
    for v, sym in (("beta", "β"), ("beta_tilde", "β̃")):
        total = sum(float(r[f"{v}_bits_per_dim"]) * int(r["weight"]) for r in rows)
        assert total == pytest.approx(got[sym][1], abs=2e-4)


def test_quick_look_is_labelled_an_estimate(micro_ckpt):
    code, out, err = run("--model", micro_ckpt, "--data", "builtin:digits", "--n", 3, "--every", 4,
                         "--variance", "beta", "--device", "cpu")
    assert code == 0, err
    got = bits(out)
    assert set(got) == {"β"} and got["β"][0] == "≈"
    n_t = len(vlb.subset_timesteps(T, 4, 0))
    assert f"ESTIMATE from {n_t} of {T} t" in out and "(estimated)" in out


@pytest.mark.parametrize("extra, needle", [
    (["--n", "1"], "--n"),
    (["--every", "0"], "--every"),
    (["--every", "6"], "--every"),  # T = 100: at most 5, for 20 blocks
    (["--variance", "learned"], "--variance"),
])
def test_usage_errors_exit_2_with_one_line(micro_ckpt, extra, needle):
    code, out, err = run("--model", micro_ckpt, "--data", "builtin:digits", *extra)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_runtime_errors_exit_1_with_one_line(micro_ckpt, tmp_path):
    for args, needle in ((["--model", tmp_path / "missing.json", "--data", "builtin:digits"], "missing"),
                         (["--model", micro_ckpt, "--data", "builtin:nothing"], "nothing"),
                         (["--model", micro_ckpt, "--data", tmp_path / "no-such-folder"], "no-such-folder")):
        code, out, err = run(*args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and needle in lines[0], (args, err)


def test_nll_scores_the_shipped_model():
    """What the issue's 'done when' asks (a quick look on two images, to stay fast)."""
    code, out, err = run("--model", "builtin:digits", "--data", "builtin:digits", "--n", 2, "--every", 50,
                         "--top", 2, "--device", "cpu")
    assert code == 0, err
    got = bits(out)
    assert set(got) == {"β", "β̃"}
    assert all(0 < b[1] < 8 for b in got.values()), out  # 8 bits/dim is a model that learned nothing
    assert "largest: t=1 (L_0)" in out
