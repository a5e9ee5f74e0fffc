"""Hostile round three: diffusers configs and weights, autoencoder configs: one line naming file and field, bounded."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bounded_runner import run_cases

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "hostile_round3_cases.py"
LIMIT_BYTES = 2560 << 20      # far below what the probes needed (3.3-5.3 GB resident, 4 TB asked of the allocator)
CASE_SECONDS = 10             # each case, in the runner
GB = 1 << 30
POSIX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sparse files, SIGALRM and RLIMIT_AS")
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
pytestmark = [POSIX, pytest.mark.usefixtures("one_torch_thread")]

# ---- values a hostile file may hold ---------------------------------------------------------------------------------
EDGE_INTS = st.sampled_from([0, -1, 1, 2, 3, 5, 7, 8, 16, 2048, 2049, 4096, 16384, 10**5, 10**6, 10**9, 2**31,
                             2**63, 2**64, -2**63])
BLOCKS = st.sampled_from(["DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D", "CrossAttnDownBlock2D", ""])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) |
                    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=10)
VALUES = st.one_of(EDGE_INTS, EDGE_INTS.map(float), JSON, st.lists(EDGE_INTS, max_size=10),
                   st.lists(BLOCKS, max_size=9), st.lists(EDGE_INTS, min_size=2, max_size=2))
DELETE = object()


def _mutations(keys: list):
    """1 to 3 edits: (key, value) or (key, DELETE); about half the values an edge-case whole number."""
    pick = lambda t: (t[0], t[2] if t[1] < 2 else t[3] if t[1] == 2 else DELETE)  # noqa: E731
    return st.lists(st.tuples(st.sampled_from(keys), st.integers(0, 3), EDGE_INTS, VALUES).map(pick), min_size=1,
                    max_size=3)


def _apply(d: dict, edits) -> dict:
    d = json.loads(json.dumps(d))
    for address, value in edits:
        target, key = (d, address) if isinstance(address, str) else (d.setdefault(address[0], {}), address[1])
        if not isinstance(target, dict):
            continue
        if value is DELETE:
            target.pop(key, None)
        else:
            target[key] = value
    return d


# ---- running cases in a bounded subprocess --------------------------------------------------------------------------
def run_batch(cases: list[dict], folder: Path) -> dict[str, dict]:
    return run_cases(RUNNER, cases, folder, LIMIT_BYTES, CASE_SECONDS, slack_seconds=60)


def problems(results: dict[str, dict], files: set[str]) -> list[str]:
    """Hangs, crashes, exit codes other than 0/1/2, tracebacks, unexpected exception types, more than one line, a
    refusal not naming one of ``files``, or a case slower than CASE_SECONDS."""
    out = []
    for name, r in results.items():
        lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
        why = ("hangs" if r["hang"] else f"crashed: {r['crash']}" if r["crash"] else
               f"exit {r['rc']}" if r["rc"] not in (0, 1, 2) else
               "a traceback" if "Traceback" in r["stderr"] else
               f"an unexpected error: {lines}" if "--debug for the traceback" in r["stderr"] else
               f"{len(lines)} lines: {lines}" if r["rc"] and len(lines) != 1 else
               f"{r['seconds']} s" if r["seconds"] > CASE_SECONDS else None)
        if why is None and r["rc"] == 1 and lines[0].split(": ")[1] not in files:
            why = f"names no file of {sorted(files)}: {lines[0]}"
        if why:
            out.append(f"{name}: {why}")
    return out


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    from diffusion_studio.cli import main

    rc = main(argv)
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


# ---- a valid diffusers folder and a valid autoencoder ---------------------------------------------------------------
@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers", reason="diffusers writes the folder ([test] extra)")
    sys.path.insert(0, str(REPO / "tests"))
    from test_convert_diffusers import make_folder

    folder, _, _ = make_folder(tmp_path_factory.mktemp("diffusers"), "ddpm-cifar10-32")
    return folder


def diffusers_variant(base: Path, target: Path, unet: dict | None = None, scheduler: dict | None = None) -> Path:
    """A copy of ``base`` (its weights hard-linked) with unet/config.json or scheduler_config.json replaced."""
    for sub in ("unet", "scheduler"):
        (target / sub).mkdir(parents=True)
    shutil.copy(base / "model_index.json", target)
    for rel, new in (("unet/config.json", unet), ("scheduler/scheduler_config.json", scheduler)):
        if new is None:
            shutil.copy(base / rel, target / rel)
        else:
            (target / rel).write_text(json.dumps(new))
    os.link(base / "unet" / "diffusion_pytorch_model.safetensors",
            target / "unet" / "diffusion_pytorch_model.safetensors")
    return target


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory) -> Path:
    import torch

    from diffusion_studio.core.io.autoencoder_io import save_autoencoder
    from diffusion_studio.core.nets.autoencoder import Autoencoder, AutoencoderConfig

    torch.manual_seed(0)
    cfg = AutoencoderConfig(image_size=16, factor=2, latent_channels=4, base_channels=8, groups=4)
    return save_autoencoder(tmp_path_factory.mktemp("ae") / "ae", Autoencoder(cfg), 1.0).parent


def autoencoder_variant(base: Path, target: Path, meta: dict) -> Path:
    target.mkdir(parents=True)
    weights = json.loads((base / "autoencoder.json").read_text())["weights"]
    os.link(base / weights, target / weights)
    (target / "autoencoder.json").write_text(json.dumps(meta))
    return target


def _weights_name(ae: Path) -> str:
    return json.loads((ae / "autoencoder.json").read_text())["weights"]


# ---- the probe cases of the issue, memory at stake: in the bounded subprocess ---------------------------------------
def _sparse_weights(folder: Path) -> None:
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    raw = path.read_bytes()
    path.unlink()  # a hard link to the shared weights: write a new file
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate(15 * GB)  # the real weights, then 15 GB of holes


def _huge_tensor_weights(folder: Path) -> None:
    """conv_in.weight's header entry claims 15 GB, and the file is sparse-extended to hold it."""
    import struct

    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    count = 15 * GB // 4 // 432
    header["conv_in.weight"] = {"dtype": "F32", "shape": [16, 3, 3, 3 * count],
                                "data_offsets": [end, end + 1728 * count]}
    blob = json.dumps(header).encode()
    path.unlink()  # a hard link to the shared weights: write a new file
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
        f.truncate(8 + len(blob) + end + 1728 * count)


@pytest.fixture(scope="module")
def probes(diffusers_folder, autoencoder, tmp_path_factory) -> dict[str, tuple[dict, str]]:
    """{name: (runner result, the expected "file: field" start of the message)}."""
    root = tmp_path_factory.mktemp("probes")
    unet = json.loads((diffusers_folder / "unet" / "config.json").read_text())
    cases, expect = [], {}

    def add(name: str, argv: list[str], start: str, needle: str = "") -> None:
        cases.append({"name": name, "argv": argv})
        expect[name] = (start, needle)

    for size in (2048, 16384, 10**6):
        d = diffusers_variant(diffusers_folder, root / f"size{size}", unet={**unet, "sample_size": size})
        field = "down_block_types" if size == 2048 else "sample_size"
        add(f"diffusers info sample_size {size}", ["info", str(d)], f"config.json: {field}: ")
        out = str(root / f"out{size}")
        add(f"diffusers sample sample_size {size}",
            ["sample", "--model", str(d), "--n", "1", "--steps", "2", "--out", out, "-q"], f"config.json: {field}: ")
    for name, make, needle in (("15 GB sparse weights file", _sparse_weights, "the file holds 16,106,127,360"),
                               ("a tensor claiming 15 GB", _huge_tensor_weights, "conv_in.weight has shape")):
        d = diffusers_variant(diffusers_folder, root / name.replace(" ", "_"))
        make(d)
        add(f"diffusers info {name}", ["info", str(d)], "diffusion_pytorch_model.safetensors: ", needle)

    meta = json.loads((autoencoder / "autoencoder.json").read_text())
    for label, edit, field in (("base_channels 2048", {"base_channels": 2048}, "base_channels"),
                               ("base_channels 8192", {"base_channels": 8192}, "base_channels"),
                               ("base_channels 1e9", {"base_channels": 10**9}, "base_channels"),
                               ("num_res_blocks 1e5", {"num_res_blocks": 10**5}, "num_res_blocks"),
                               ("channel_mults [1000]", {"channel_mults": [1000]}, "channel_mults[0]")):
        d = autoencoder_variant(autoencoder, root / f"ae {label}",
                                {**meta, "autoencoder": {**meta["autoencoder"], **edit}})
        add(f"autoencoder info {label}", ["info", str(d)], f"autoencoder.json: autoencoder.{field}: ")
        add(f"train --autoencoder {label}", ["train", "--autoencoder", str(d), "--data", "builtin:digits",
                                             "--steps", "1", "--out", str(root / f"run {label}")],
            f"autoencoder.json: autoencoder.{field}: ")
    d = autoencoder_variant(autoencoder, root / "ae wide", {**meta, "autoencoder": {
        **meta["autoencoder"], "base_channels": 1024, "channel_mults": [16], "num_res_blocks": 16, "groups": 1024}})
    add("autoencoder info 2.4e9 parameters within every range", ["info", str(d)], "autoencoder.json: autoencoder: ",
        "more than the 200,000,000")

    latent = root / "latent"
    shutil.copytree(REPO / "resources" / "models" / "shapes-latent", latent)
    manifest = json.loads((latent / "checkpoint.json").read_text())
    manifest["latent"]["autoencoder"]["base_channels"] = 10**9
    (latent / "checkpoint.json").write_text(json.dumps(manifest))
    add("latent checkpoint sample, embedded base_channels 1e9", ["sample", "--model", str(latent), "--n", "1",
                                                                 "--steps", "2", "--out", str(root / "lat"), "-q"],
        "checkpoint.json: latent.autoencoder.base_channels: ")
    results = run_batch(cases, root)
    return {name: (results[name], *expect[name]) for name in expect}


PROBES = [f"diffusers {c} sample_size {s}" for s in (2048, 16384, 10**6) for c in ("info", "sample")] + \
    ["diffusers info 15 GB sparse weights file", "diffusers info a tensor claiming 15 GB"] + \
    [f"{c} {label}" for label in ("base_channels 2048", "base_channels 8192", "base_channels 1e9", "num_res_blocks 1e5",
                                  "channel_mults [1000]") for c in ("autoencoder info", "train --autoencoder")] + \
    ["autoencoder info 2.4e9 parameters within every range", "latent checkpoint sample, embedded base_channels 1e9"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", PROBES)
def test_probe_ends_in_one_line_naming_file_and_field(probes, name):
    r, start, needle = probes[name]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    assert not r["hang"] and not r["crash"] and r["rc"] == 1, r
    assert len(lines) == 1 and lines[0].startswith(f"diffusion-studio: {start}"), lines
    assert needle in lines[0] and r["seconds"] < CASE_SECONDS, (lines, r["seconds"])


# ---- probe cases where memory is not at stake: in-process -----------------------------------------------------------
def test_norm_num_groups_0_and_groups_that_do_not_divide(diffusers_folder, tmp_path, capsys):
    unet = json.loads((diffusers_folder / "unet" / "config.json").read_text())
    d = diffusers_variant(diffusers_folder, tmp_path / "g0", unet={**unet, "norm_num_groups": 0})
    assert _cli(["info", str(d)], capsys) == (1, ["diffusion-studio: config.json: norm_num_groups: must be a whole "
                                                  "number in 1..1,024, got 0"])
    d = diffusers_variant(diffusers_folder, tmp_path / "g3", unet={**unet, "norm_num_groups": 3})
    rc, lines = _cli(["info", str(d)], capsys)
    assert rc == 1 and lines == ["diffusion-studio: config.json: norm_num_groups: 3 does not divide the block width "
                                 "16 (block_out_channels [16, 32, 32, 32])"]


@pytest.mark.parametrize("dtype,name", [("bool", "BOOL"), ("int64", "I64"), ("float64", "F64")])
def test_weights_that_are_not_float16_bfloat16_or_float32_are_refused(diffusers_folder, tmp_path, capsys, dtype, name):
    import torch
    from safetensors.torch import load_file, save_file

    d = diffusers_variant(diffusers_folder, tmp_path / dtype)
    path = d / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    state["conv_in.weight"] = state["conv_in.weight"].to(getattr(torch, dtype))
    path.unlink()
    save_file(state, path)
    assert _cli(["info", str(d)], capsys) == (1, [f"diffusion-studio: diffusion_pytorch_model.safetensors: weight "
                                                  f"conv_in.weight is {name}; only float16, bfloat16 and float32 "
                                                  f"weights are accepted"])


def test_half_precision_weights_still_load_exactly(diffusers_folder, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from diffusion_studio.core.io.models import open_checkpoint

    d = diffusers_variant(diffusers_folder, tmp_path / "half")
    path = d / "unet" / "diffusion_pytorch_model.safetensors"
    state = {k: v.to(torch.bfloat16 if "conv" in k else torch.float16) for k, v in load_file(path).items()}
    path.unlink()
    save_file(state, path)
    ours = open_checkpoint(d).tensors["ema"]["inp.weight"]
    assert ours.dtype == torch.float32 and torch.equal(ours, state["conv_in.weight"].float())


def test_import_of_sample_size_1e6_exits_1_and_writes_nothing(diffusers_folder, tmp_path, capsys):
    unet = json.loads((diffusers_folder / "unet" / "config.json").read_text())
    d = diffusers_variant(diffusers_folder, tmp_path / "big", unet={**unet, "sample_size": 10**6})
    rc, lines = _cli(["import", str(d), "--out", str(tmp_path / "imported")], capsys)
    assert rc == 1 and lines == ["diffusion-studio: config.json: sample_size: must be a whole number in 2..2,048, "
                                 "got 1000000"]
    assert not (tmp_path / "imported").exists()


def test_what_import_accepts_our_manifest_accepts(diffusers_folder, tmp_path, capsys):
    # base 2048 passes diffusers' own 1..4096 but not our model.base_channels ≤ 1024: named by the diffusers key
    unet = json.loads((diffusers_folder / "unet" / "config.json").read_text())
    d = diffusers_variant(diffusers_folder, tmp_path / "wide", unet={**unet, "block_out_channels": [2048] * 4})
    rc, lines = _cli(["import", str(d), "--out", str(tmp_path / "imported")], capsys)
    assert rc == 1 and lines[0].startswith("diffusion-studio: config.json: block_out_channels: must be a whole number "
                                           "in 1..1,024, got 2048 (as this project's model.base_channels)"), lines


def test_spec_tables_cover_every_field_the_converters_read():
    from diffusion_studio.core.io import autoencoder_io, diffusers
    from diffusion_studio.core.nets.autoencoder import AutoencoderConfig

    assert set(autoencoder_io.CONFIG_FIELDS) == {f.name for f in dataclasses.fields(AutoencoderConfig)}
    assert set(diffusers.UNET_FIELDS) == set(diffusers.UNET_DEFAULTS)
    assert set(diffusers.SCHEDULER_DEFAULTS) <= set(diffusers.SCHEDULER_FIELDS)


# ---- derandomised fuzzers, each batch in one bounded subprocess -----------------------------------------------------
# Edits the first version of these readers failed on (ZeroDivisionError, TypeError): run first, every time.
REGRESSIONS = {
    "unet": [[("norm_num_groups", 0)], [("up_block_types", -2**63)], [("down_block_types", 2)],
             [("sample_size", 10**6)], [("block_out_channels", [4096] * 8)], [("attention_head_dim", 0)]],
    "scheduler": [[("variance_type", [1])], [("prediction_type", {})], [("trained_betas", [0.5] * 3)],
                  [("num_train_timesteps", 10**9)], [("beta_end", "x")]],
    "autoencoder": [[(("autoencoder", "base_channels"), 10**9)], [(("autoencoder", "num_res_blocks"), 10**5)],
                    [(("autoencoder", "channel_mults"), [10**6])], [("autoencoder", [])], [("scale_factor", 1e308)]],
}


def _fuzz_cases(keys: list, base: dict, build, regressions: list) -> list[dict]:
    cases: list[dict] = [{"name": f"regression {e!r}", "argv": ["info", str(build(f"r{i}", _apply(base, e)))]}
                         for i, e in enumerate(regressions)]

    @FUZZ
    @given(_mutations(keys))
    def collect(edits):
        i = len(cases)
        cases.append({"name": f"{i}: {edits!r}"[:300], "argv": ["info", str(build(i, _apply(base, edits)))]})

    collect()
    return cases


def _fuzz(cases: list[dict], folder: Path, files: set[str]) -> None:
    results = run_batch(cases, folder)
    bad = problems(results, files)
    refused = sum(r["rc"] == 1 for r in results.values())
    print(f"\n{len(results)} cases: {refused} refused in one line, {len(results) - refused} loaded or usage errors")
    assert len(results) >= 100 and refused >= 50
    assert not bad, f"{len(bad)} of {len(results)}:\n" + "\n".join(bad[:20])


@pytest.mark.timeout(600)
def test_fuzz_diffusers_unet_config(diffusers_folder, tmp_path):
    base = json.loads((diffusers_folder / "unet" / "config.json").read_text())
    keys = sorted(base) + ["sample_size", "block_out_channels", "norm_num_groups", "layers_per_block", "x"] * 2
    build = lambda i, c: diffusers_variant(diffusers_folder, tmp_path / f"u{i}", unet=c)  # noqa: E731
    files = {"config.json", "diffusion_pytorch_model.safetensors"}
    _fuzz(_fuzz_cases(keys, base, build, REGRESSIONS["unet"]), tmp_path, files)


@pytest.mark.timeout(600)
def test_fuzz_diffusers_scheduler_config(diffusers_folder, tmp_path):
    base = json.loads((diffusers_folder / "scheduler" / "scheduler_config.json").read_text())
    keys = sorted(base) + ["num_train_timesteps", "trained_betas", "beta_schedule", "variance_type", "x"] * 2
    build = lambda i, c: diffusers_variant(diffusers_folder, tmp_path / f"s{i}", scheduler=c)  # noqa: E731
    _fuzz(_fuzz_cases(keys, base, build, REGRESSIONS["scheduler"]), tmp_path, {"scheduler_config.json"})


@pytest.mark.timeout(600)
def test_fuzz_autoencoder_json(autoencoder, tmp_path):
    base = json.loads((autoencoder / "autoencoder.json").read_text())
    fields = [("autoencoder", k) for k in base["autoencoder"]]
    keys = [k for k in sorted(base) if k != "weights"] + fields * 3 + [("autoencoder", "unknown")]
    build = lambda i, m: autoencoder_variant(autoencoder, tmp_path / f"a{i}", m)  # noqa: E731
    files = {"autoencoder.json", _weights_name(autoencoder)}
    _fuzz(_fuzz_cases(keys, base, build, REGRESSIONS["autoencoder"]), tmp_path, files)
