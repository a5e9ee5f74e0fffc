"""Fuzzing the manifest reader and the data loaders' header parsing (issue 15) for a bounded time each.

Every input must end in the reader's own one-line error (CheckpointError, DataError, or the FID loader's ValueError)
or load; any other exception is a bug. Inputs that found bugs while this was written are kept in REGRESSIONS and run
first, every time.
"""
from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
from diffusion_studio.core.errors import CheckpointError
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet, preset_config
from diffusion_studio.data.errors import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) |
                    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=12)


def one_line(e: Exception, name: str) -> None:
    text = str(e)
    assert "\n" not in text and text.startswith(f"{name}: "), text


# ---- the manifest reader --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    cfg = preset_config("tiny", 8, 1)
    torch.manual_seed(0)
    meta = {"step": 1, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 20).to_dict(),
            "train": {"batch_size": 4, "lr": 2e-4, "steps": 10}, "data": {"spec": "builtin:digits", "n": 10}}
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.json", {"ema": UNet(cfg).state_dict()}, meta)
    return path, json.loads(path.read_text())


def paths(meta: dict) -> list[tuple]:
    """Every (section, key) / (key,) address of a field in the manifest."""
    out = []
    for k, v in meta.items():
        out.append((k,))
        if isinstance(v, dict):
            out += [(k, kk) for kk in v]
    return out


# Inputs the reader of the first round crashed on (TypeError) or answered with an internal message naming no field;
# each must now name its field.
REGRESSIONS = [
    (("weights",), 0, "does not name a weights file"),       # was TypeError: PosixPath / int
    (("model", "channel_mults"), [None], "model.channel_mults[0]"),  # was "int() argument must be a string..."
    (("schedule", "params"), {"beta_start": "x"}, "schedule.params.beta_start"),  # was "could not convert string"
    (("model", "attn_resolutions"), 7, "model.attn_resolutions"),  # was "'int' object is not iterable"
    # a config that is valid but not the weights' own: refused naming the weights file it disagrees with
    (("model", "attn_resolutions"), [], "do not match the model config"),
    (("model", "image_size"), "8", "model.image_size"),      # was "'<' not supported between 'str' and 'int'"
    (("train", "batch_size"), 2**70, "train.batch_size"),    # was accepted, failing later in training
    (("schedule", "T"), 10**9, "schedule.T"),                # built 10^9-step tensors (killed for memory)
]


def _load_mutated(path: Path, base: dict, address: tuple, value, needle: str = "") -> None:
    meta = json.loads(json.dumps(base))
    target = meta
    for key in address[:-1]:
        target = target[key]
    target[address[-1]] = value
    path.write_text(json.dumps(meta))
    try:
        load_checkpoint(path)
    except CheckpointError as e:
        weights = meta.get("weights")
        named = str(e).split(": ", 1)[0]
        # one line naming the manifest, or the weights file it points to when the two disagree
        one_line(e, weights if isinstance(weights, str) and named == weights else path.name)
        assert needle in str(e), (needle, str(e))
    else:
        assert not needle, f"{address} = {value!r} was accepted"


@pytest.mark.timeout(120)
def test_manifest_regressions(checkpoint, tmp_path):
    path, base = checkpoint
    target = path.parent / "mutant.json"
    for address, value, needle in REGRESSIONS:
        _load_mutated(target, base, address, value, needle)


@pytest.mark.timeout(120)
def test_fuzz_manifest_fields(checkpoint):
    path, base = checkpoint
    addresses = paths(base)
    target = path.parent / "fuzzed.json"

    @FUZZ
    @given(st.sampled_from(addresses), JSON)
    def run(address, value):
        _load_mutated(target, base, address, value)

    run()


@pytest.mark.timeout(120)
def test_fuzz_manifest_bytes(checkpoint):
    path, _ = checkpoint
    raw = path.read_bytes()
    target = path.parent / "bytes.json"

    @FUZZ
    @given(st.integers(0, len(raw) - 1), st.binary(min_size=1, max_size=8))
    def run(at, junk):
        target.write_bytes(raw[:at] + junk + raw[at + len(junk):])
        try:
            load_checkpoint(target)
        except CheckpointError as e:
            one_line(e, target.name)

    run()


# ---- data loaders' headers ------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_fuzz_idx_headers(tmp_path):
    from diffusion_studio.data.mnist import read_idx

    @FUZZ
    @given(st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3), st.binary(max_size=64), st.booleans(),
           st.sampled_from([2051, 2049, 0, -1]))
    def run(dims, payload, gz, magic):
        blob = struct.pack(">i", magic) + struct.pack(">3I", *dims) + payload
        p = tmp_path / ("x-idx3-ubyte.gz" if gz else "x-idx3-ubyte")
        p.write_bytes(gzip.compress(blob) if gz else blob)
        try:
            a = read_idx(p, 2051)
        except DataError as e:
            one_line(e, p.name)
        else:
            assert a.size == len(payload) and a.shape == tuple(dims)

    run()


def _batch_pickle(n: int, labels) -> bytes:
    return pickle.dumps({b"data": np.zeros((n, 3072), np.uint8), b"labels": labels}, protocol=2)


@pytest.mark.timeout(120)
def test_fuzz_cifar_pickles(tmp_path):
    from diffusion_studio.data.cifar import load_cifar10

    base = _batch_pickle(2, [1, 2])
    p = tmp_path / "data_batch_1"

    @FUZZ
    @given(st.integers(0, len(base) - 1), st.binary(min_size=1, max_size=6), JSON)
    def run(at, junk, labels):
        for blob in (base[:at] + junk + base[at + len(junk):], _batch_pickle(2, labels)):
            p.write_bytes(blob)
            try:
                ds = load_cifar10(tmp_path, 8)
            except DataError as e:
                one_line(e, p.name)
            else:
                assert len(ds) == 2

    run()


FID_REGRESSIONS = [(695, b"\x01"), (697, b"\x01")]


@pytest.mark.timeout(120)
def test_fuzz_fid_stats(tmp_path):
    from diffusion_studio.core.metrics.fid import FIDStats

    buf = io.BytesIO()
    np.savez(buf, mu=np.zeros(3), sigma=np.eye(3), header=np.array(json.dumps({"n": 5})))
    base = buf.getvalue()
    p = tmp_path / "stats.npz"

    def one(at, junk):
        p.write_bytes(base[:at] + junk + base[at + len(junk):])
        try:
            s = FIDStats.load(p)
        except ValueError as e:
            one_line(e, p.name)
        else:
            assert s.mu.shape == (3,)

    # Found by this fuzzer: a zip member flagged encrypted (RuntimeError) or with an unknown compression method
    # (NotImplementedError) escaped as a traceback.
    for at, junk in FID_REGRESSIONS:
        one(at, junk)
    FUZZ(given(st.integers(0, len(base) - 1), st.binary(min_size=1, max_size=8))(one))()


@pytest.mark.timeout(120)
def test_fuzz_jpeg_markers(tmp_path):
    from PIL import Image

    from diffusion_studio.data.images import open_image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, "JPEG", progressive=True)
    base = buf.getvalue()
    p = tmp_path / "x.jpg"

    @FUZZ
    @given(st.integers(0, len(base) - 1), st.binary(min_size=1, max_size=6), st.integers(0, 400))
    def run(at, junk, extra_scans):
        blob = base[:at] + junk + base[at + len(junk):]
        p.write_bytes(blob[:-2] + b"\xff\xda" * extra_scans + blob[-2:])
        try:
            open_image(p, 8)
        except DataError as e:
            one_line(e, p.name)

    run()
