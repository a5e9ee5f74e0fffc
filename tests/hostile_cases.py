"""Hostile inputs built on the fly (tiny, sparse or lying files) and run through the Python API in one process.

``run_all(folder)`` builds every case into ``folder``, runs each, and returns {name: result}; the tests run it in a
subprocess under an address-space limit (a case that allocates what a header claims dies there) and a timeout (a case
that hangs on a FIFO or decodes forever fails the test, not the CI run). Each case says which file its one-line
message must name and a keyword of the reason; ``loads`` cases must succeed instead.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import sys
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

GB = 1 << 30


@dataclass
class Case:
    run: Callable[[], object]
    names: str            # the file the message must name
    keyword: str          # a piece of the reason
    loads: bool = False   # the call must succeed (and then `check` its result)
    check: Callable[[object], str | None] | None = None


# ---- builders -------------------------------------------------------------------------------------------------------
def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of ``size`` bytes that costs no disk: ``head`` then a hole."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def idx(dims: tuple[int, ...], payload: bytes, magic: int = 2051) -> bytes:
    return struct.pack(">i", magic) + struct.pack(f">{len(dims)}I", *dims) + payload


def progressive_jpeg(side: int, extra_scans: int, seed: int = 0) -> bytes:
    """A real progressive JPEG with its last scan repeated: libjpeg decodes every repeat (a pass over all blocks)."""
    from PIL import Image

    a = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * extra_scans + b"\xff\xd9"


def pickle_ndarray_call(shape: tuple[int, int]) -> bytes:
    """{b"data": numpy.ndarray(shape, uint8), b"labels": []} as a 150-byte pickle: calling ndarray allocates."""
    p = bytearray(b"\x80\x02}q\x00(C\x04dataq\x01cnumpy\nndarray\nq\x02")
    p += b"J" + struct.pack("<i", shape[0]) + b"M" + struct.pack("<H", shape[1]) + b"\x86q\x03"  # (n, m)
    p += b"cnumpy\ndtype\nq\x04X\x02\x00\x00\x00u1q\x05\x85q\x06Rq\x07\x86q\x08Rq\t"  # ndarray((n, m), dtype('u1'))
    p += b"C\x06labelsq\n]q\x0bu."
    return bytes(p)


def pickle_shared_labels(n_images: int = 2) -> bytes:
    """A real data array and labels = 1000 references to 1000 references to [0]*1000: a billion labels in ~10 KB."""
    inner = [0] * 1000
    middle = [inner] * 1000
    labels = [middle] * 1000
    data = np.zeros((n_images, 3072), np.uint8)
    return pickle.dumps({b"data": data, b"labels": labels}, protocol=2)


def npz_claiming(d: int) -> bytes:
    """An .npz whose sigma.npy header claims d×d float64 but whose member holds 64 bytes."""
    from numpy.lib import format as npy

    def member(shape):
        buf = io.BytesIO()
        npy.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
        return buf.getvalue() + b"\x00" * 64

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mu.npy", member((d,)))
        z.writestr("sigma.npy", member((d, d)))
    return out.getvalue()


def safetensors_header(tensors: dict[str, tuple[str, tuple[int, ...]]], metadata: dict | None = None) -> bytes:
    """A safetensors header (8-byte length + JSON) for tensors laid end to end; data not included."""
    header, offset = {}, 0
    sizes = {"F64": 8, "F32": 4}
    for name, (dtype, shape) in tensors.items():
        n = int(np.prod(shape, dtype=object)) * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


# ---- a valid checkpoint to start from -------------------------------------------------------------------------------
def valid_checkpoint(folder: Path) -> Path:
    import torch

    from diffusion_studio.core.io.checkpoint import save_checkpoint
    from diffusion_studio.core.diffusion.schedule import NoiseSchedule
    from diffusion_studio.core.nets.unet import UNet, preset_config

    cfg = preset_config("tiny", 8, 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = UNet(cfg).state_dict()
    meta = {"step": 3, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 50).to_dict(),
            "train": {"batch_size": 4, "lr": 2e-4, "steps": 10}, "data": {"spec": "builtin:digits", "n": 10}}
    model = {k: v.clone() for k, v in state.items()}
    return save_checkpoint(folder / "checkpoint.json", {"ema": state, "model": model}, meta)


def variant(base: Path, folder: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of the valid manifest (same weights) with ``edit`` applied, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = json.loads(base.read_text())
    edit(meta)
    weights = base.parent / meta["weights"]
    target = folder / meta["weights"]
    if not target.exists():
        os.link(weights, target)
    path = folder / "checkpoint.json"
    path.write_text(json.dumps(meta))
    return path


# ---- the cases ------------------------------------------------------------------------------------------------------
def build(root: Path) -> dict[str, Case]:
    from diffusion_studio.core.io.checkpoint import load_checkpoint
    from diffusion_studio.core.metrics.features import load_feature_net
    from diffusion_studio.core.metrics.fid import FIDStats
    from diffusion_studio.core.diffusion.schedule import NoiseSchedule
    from diffusion_studio.data.cifar import class_names, load_cifar10, safe_unpickle
    from diffusion_studio.data.folder import load_folder
    from diffusion_studio.data.images import open_image
    from diffusion_studio.data.mnist import read_idx

    cases: dict[str, Case] = {}
    base = valid_checkpoint(root / "valid")
    weights_name = json.loads(base.read_text())["weights"]

    def d(name: str) -> Path:
        p = root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    # 2. claimed sizes -------------------------------------------------------------------------------------------
    p = d("mnist1") / "overflow-idx3-ubyte"
    p.write_bytes(idx((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), b"\x00" * 64))
    cases["mnist idx dims overflow int64"] = Case(lambda p=p: read_idx(p, 2051), p.name, "header claims")
    p = d("mnist2") / "bomb-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx((1, 46340, 46340), b"\x00" * 4096)))
    cases["mnist .gz claims 46340x46340"] = Case(lambda p=p: read_idx(p, 2051), p.name, "46340")
    p = d("mnist3") / "many-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx((1_300_000, 28, 28), b"\x00" * 4096)))
    cases["mnist .gz claims 1 GB in a tiny file"] = Case(lambda p=p: read_idx(p, 2051), p.name, "header claims")
    p = d("mnist4") / "short-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx((60000, 28, 28), b"\x00" * 4096)))
    cases["mnist .gz claims 47 MB, holds 4 KB"] = Case(lambda p=p: read_idx(p, 2051), p.name, "gz can hold")
    p = sparse(d("mnist5") / "sparse-idx3-ubyte", 3 * GB, idx((100, 28, 28), b""))
    cases["mnist 3 GB sparse file, header says 78 KB"] = Case(lambda p=p: read_idx(p, 2051), p.name, "extra bytes")

    p = d("cifar1") / "data_batch_1"
    p.write_bytes(pickle_ndarray_call((2_000_000, 3072)))
    cases["cifar pickle calls numpy.ndarray(2e6, 3072)"] = Case(
        lambda p=p: load_cifar10(p.parent, 8), p.name, "refused")
    p = d("cifar2") / "data_batch_1"
    p.write_bytes(pickle_shared_labels())
    cases["cifar pickle with a billion shared labels"] = Case(
        lambda p=p: load_cifar10(p.parent, 8), p.name, "1,000 labels for 2 images")
    p = sparse(d("cifar3") / "data_batch_1.bin", 3073 * 1_000_000)
    cases["cifar binary batch, 3 GB sparse"] = Case(lambda p=p: load_cifar10(p.parent, 8), p.name, "records")
    p = d("cifar4") / "data_batch_1.bin"
    p.write_bytes(bytes(3073 * 2))
    sparse(p.parent / "batches.meta.txt", 3 * GB, b"cat\n")
    cases["cifar batches.meta.txt 3 GB sparse: names fall back"] = Case(
        lambda p=p: class_names(p.parent, "bin"), p.name, "", loads=True,
        check=lambda names: None if names[0] == "airplane" else f"names {names[:3]}")
    p = sparse(d("cifar5") / "batches.meta", 3 * GB, b"\x80\x02")
    cases["cifar pickle 3 GB sparse"] = Case(lambda p=p: safe_unpickle(p), p.name, "too large")

    p = d("fid1") / "stats.npz"
    p.write_bytes(npz_claiming(30000))
    cases["fid .npz claims a 30000² covariance"] = Case(lambda p=p: FIDStats.load(p), p.name, "claims")
    p = d("fid2") / "stats.safetensors"
    h = safetensors_header({"mu": ("F64", (9000,)), "sigma": ("F64", (9000, 9000))})
    sparse(p, len(h) + 8 * 9000 * 9001, h)
    cases["fid .safetensors 648 MB sparse, 9000-d"] = Case(lambda p=p: FIDStats.load(p), p.name, "D ≤ 8192")
    p = d("fid3") / "stats.safetensors"
    p.write_bytes(safetensors_header({"mu": ("F64", (30000,)), "sigma": ("F64", (30000, 30000))}))
    cases["fid .safetensors header claims 7 GB"] = Case(lambda p=p: FIDStats.load(p), p.name, "the file holds")

    p = d("features1") / "features.safetensors"
    manifest = {"format": "diffusion-studio-feature-net", "format_version": 1,
                "config": {"in_channels": 1, "num_classes": 10, "input_size": 16, "width": 1_000_000,
                           "feature_dim": 128, "task": "classify"}}
    p.write_bytes(safetensors_header({}, {"diffusion-studio-feature-net": json.dumps(manifest)}) + b"")
    cases["feature net config width 1e6"] = Case(lambda p=p: load_feature_net(p), p.name, "config.width")

    def huge_model(m):
        m["model"].update(base_channels=1024, channel_mults=[16] * 8, num_res_blocks=16, attn_resolutions=[],
                          groups=32, num_heads=4, image_size=256)
    p = variant(base, root / "unet1", huge_model)
    cases["UNet config of 1.7e12 parameters, small weights"] = Case(lambda p=p: load_checkpoint(p), p.name,
                                                                    "parameters")
    p = variant(base, root / "unet2", lambda m: m["model"].update(base_channels=100_000))
    cases["UNet base_channels 100000"] = Case(lambda p=p: load_checkpoint(p), p.name, "model.base_channels")
    p = variant(base, root / "sched1", lambda m: m["schedule"].update(T=30_000_000))
    cases["schedule T=30,000,000 in a manifest"] = Case(lambda p=p: load_checkpoint(p), p.name, "schedule.T")
    p = variant(base, root / "sched2", lambda m: m["schedule"].update(params={"beta_start": 0.9, "beta_end": 0.99}))
    cases["schedule beta 0.9..0.99 in a manifest"] = Case(lambda p=p: load_checkpoint(p), p.name, "ᾱ_T")
    p = d("st1") / "lone.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    cases["safetensors header length 2^60"] = Case(lambda p=p: load_checkpoint(p), p.name, "header claims")
    p = d("st2") / "checkpoint.json"
    meta = json.loads(base.read_text())
    meta["weights"] = "w.safetensors"
    meta.pop("sha256")
    p.write_text(json.dumps(meta))
    h = safetensors_header({"ema.x": ("F32", (3 * GB // 4,))})
    sparse(p.parent / "w.safetensors", len(h) + 3 * GB, h)
    cases["3 GB sparse weights whose names do not fit the config"] = Case(
        lambda p=p: load_checkpoint(p), "w.safetensors", "do not match the model config")

    # 3. not regular files ---------------------------------------------------------------------------------------
    p = fifo(d("fifo1") / "checkpoint.json")
    cases["FIFO as the manifest"] = Case(lambda p=p: load_checkpoint(p), p.name, "not a regular file (FIFO)")
    q = d("fifo2")
    meta = json.loads(base.read_text())
    (q / "checkpoint.json").write_text(json.dumps(meta))
    fifo(q / weights_name)
    cases["FIFO as the weights"] = Case(lambda q=q: load_checkpoint(q), weights_name, "not a regular file (FIFO)")
    q = d("zero")
    (q / "checkpoint.json").write_text(json.dumps(meta))
    (q / weights_name).symlink_to("/dev/zero")
    cases["weights -> /dev/zero"] = Case(lambda q=q: load_checkpoint(q), weights_name, "character device")
    p = d("urandom") / "checkpoint.json"
    p.symlink_to("/dev/urandom")
    cases["manifest -> /dev/urandom"] = Case(lambda p=p: load_checkpoint(p), p.name, "character device")
    p = fifo(d("fifo3") / "model.safetensors")
    cases["FIFO as a lone .safetensors"] = Case(lambda p=p: load_checkpoint(p), p.name, "FIFO")
    p = fifo(d("fifo4") / "train-images-idx3-ubyte")
    cases["FIFO as an MNIST file"] = Case(lambda p=p: read_idx(p, 2051), p.name, "FIFO")
    p = fifo(d("fifo5") / "data_batch_1.bin")
    cases["FIFO as a CIFAR batch"] = Case(lambda p=p: load_cifar10(p.parent, 8), p.name, "FIFO")
    p = fifo(d("fifo6") / "stats.npz")
    cases["FIFO as FID statistics"] = Case(lambda p=p: FIDStats.load(p), p.name, "FIFO")
    p = fifo(d("fifo7") / "features.safetensors")
    cases["FIFO as a feature net"] = Case(lambda p=p: load_feature_net(p), p.name, "FIFO")
    p = fifo(d("fifo8") / "pipe.png")
    cases["FIFO named .png"] = Case(lambda p=p: open_image(p), p.name, "not a regular file (FIFO)")
    p = d("dev") / "zero.png"
    p.symlink_to("/dev/zero")
    cases["image -> /dev/zero"] = Case(lambda p=p: open_image(p), p.name, "not a regular file (character device)")

    # 4. decode work ---------------------------------------------------------------------------------------------
    p = d("jpeg1") / "scans.jpg"
    p.write_bytes(progressive_jpeg(64, 2000))
    cases["progressive JPEG with 2000 scans"] = Case(lambda p=p: open_image(p, 16), p.name, "scans")
    q = d("jpeg2")
    (q / "scans.jpg").write_bytes(progressive_jpeg(64, 2000))
    fifo(q / "pipe.png")
    from PIL import Image
    Image.new("RGB", (12, 12), (200, 10, 10)).save(q / "good.png")
    cases["folder: scans.jpg, a FIFO and a good image"] = Case(
        lambda q=q: load_folder(q, 8), "", "", loads=True, check=_folder_check)

    # 5. schedules as a whole ------------------------------------------------------------------------------------
    cases["schedule linear beta 0.9..0.99"] = Case(
        lambda: NoiseSchedule.create("linear", 1000, beta_start=0.9, beta_end=0.99), "", "T ≤ 22")
    cases["schedule T=100000 default betas"] = Case(lambda: NoiseSchedule.create("linear", 100_000), "", "T ≤ 6,827")
    cases["schedule cosine T=100000 still works"] = Case(lambda: NoiseSchedule.create("cosine", 100_000), "", "",
                                                         loads=True)
    return cases


def _folder_check(ds) -> str | None:
    reasons = sorted(str(e) for e in ds.report.failed)
    ok = len(ds) == 1 and len(reasons) == 2 and "scans" in reasons[1] and "not a regular file (FIFO)" in reasons[0]
    return None if ok else f"{len(ds)} images, failures {reasons}"


def run_all(root: str | os.PathLike) -> dict[str, dict]:
    root = Path(root)
    out = {}
    for name, case in build(root).items():
        t0 = time.perf_counter()
        try:
            value = case.run()
            result = {"ok": True, "problem": case.check(value) if case.check else None}
        except Exception as e:  # noqa: BLE001 - the test judges the type and message
            result = {"ok": False, "type": type(e).__name__, "message": str(e),
                      "traceback": traceback.format_exc(limit=3) if not isinstance(e, ValueError) else ""}
        result.update(seconds=round(time.perf_counter() - t0, 3), names=case.names, keyword=case.keyword,
                      loads=case.loads)
        out[name] = result
    return out


if __name__ == "__main__":
    print(json.dumps(run_all(sys.argv[1])))
