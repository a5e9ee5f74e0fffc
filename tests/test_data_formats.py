"""Tests for data.mnist and data.cifar: files written here with the real layouts, bad files, hostile pickles."""

import gzip
import io
import os
import pathlib
import pickle
import struct

import numpy as np
import pytest
import torch

from diffusion_studio.data.cifar import CLASS_NAMES, SafeUnpickler, load_cifar10, safe_unpickle
from diffusion_studio.data.specs import load_dataset
from diffusion_studio.data.errors import DataError
from diffusion_studio.data.mnist import load_mnist, read_idx

# --- MNIST -------------------------------------------------------------------------------------------------


def idx_images(a):
    return struct.pack(">iIII", 2051, *a.shape) + a.astype(np.uint8).tobytes()


def idx_labels(y):
    return struct.pack(">iI", 2049, len(y)) + np.asarray(y, np.uint8).tobytes()


def write_mnist(folder, n_train=6, n_test=4, gz_test=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n, gz in (("train", n_train, False), ("t10k", n_test, gz_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        for kind, blob in (("images-idx3-ubyte", idx_images(x)), ("labels-idx1-ubyte", idx_labels(y))):
            name = f"{prefix}-{kind}"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
        data[prefix] = (x, y)
    return data


def test_mnist_plain_and_gz_load_exactly(tmp_path):
    data = write_mnist(tmp_path / "mnist")
    ds = load_mnist(tmp_path / "mnist", 28)
    assert ds.images.shape == (6, 1, 28, 28) and ds.channels == 1
    assert torch.equal(ds.images[:, 0], torch.from_numpy(data["train"][0]))
    assert ds.labels.tolist() == data["train"][1].tolist()
    test = load_mnist(tmp_path / "mnist", 28, split="test")  # the .gz files
    assert torch.equal(test.images[:, 0], torch.from_numpy(data["t10k"][0]))
    both = load_mnist(tmp_path / "mnist", 28, split="all")
    assert len(both) == 10
    assert len(load_mnist(tmp_path / "mnist", 28, split="all", limit=3)) == 3


def test_mnist_resized_and_via_spec(tmp_path):
    write_mnist(tmp_path / "m")
    ds = load_dataset(f"mnist:{tmp_path / 'm'}", 16)
    assert ds.images.shape == (6, 1, 16, 16) and ds.spec == f"mnist:{tmp_path / 'm'}"
    x = ds.batch([0, 1])
    assert x.min() >= -1 and x.max() <= 1
    assert load_dataset(f"mnist:{tmp_path / 'm'}", 16, channels=3).channels == 3


def test_mnist_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "root" / "MNIST" / "raw")
    assert len(load_mnist(tmp_path / "root", 8)) == 6


def test_mnist_wrong_magic_names_the_file(tmp_path):
    write_mnist(tmp_path / "m")
    f = tmp_path / "m" / "train-images-idx3-ubyte"
    f.write_bytes(struct.pack(">i", 2049) + f.read_bytes()[4:])
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path / "m", 8)
    text = str(e.value)
    assert text.startswith("train-images-idx3-ubyte: ") and "magic number 2049, expected 2051" in text
    assert "\n" not in text


def test_mnist_short_data_names_the_file(tmp_path):
    write_mnist(tmp_path / "m")
    f = tmp_path / "m" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"^train-images-idx3-ubyte: file too short"):
        load_mnist(tmp_path / "m", 8)
    f.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match=r"^train-images-idx3-ubyte: file too short"):
        load_mnist(tmp_path / "m", 8)


def test_mnist_truncated_gz_and_label_mismatch(tmp_path):
    write_mnist(tmp_path / "m")
    gz = tmp_path / "m" / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"^t10k-images-idx3-ubyte.gz: "):
        load_mnist(tmp_path / "m", 8, split="test")
    (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(idx_labels([1, 2, 3]))
    with pytest.raises(DataError, match="3 labels for 6 images"):
        load_mnist(tmp_path / "m", 8)


def test_mnist_missing_files_and_extra_bytes(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MNIST images file found"):
        load_mnist(tmp_path / "empty", 8)
    blob = idx_images(np.zeros((2, 3, 3), np.uint8)) + b"junk"
    (tmp_path / "x-idx3").write_bytes(blob)
    with pytest.raises(DataError, match="extra bytes"):
        read_idx(tmp_path / "x-idx3", 2051)


def test_folder_of_mnist_files_gets_a_hint(tmp_path):
    write_mnist(tmp_path / "m")
    with pytest.raises(DataError, match="try 'mnist:"):
        load_dataset(str(tmp_path / "m"), 8)


# --- CIFAR-10 ----------------------------------------------------------------------------------------------


def write_cifar_bin(folder, batches=("data_batch_1", "test_batch"), n=5, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for stem in batches:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        records = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1)
        (folder / f"{stem}.bin").write_bytes(records.tobytes())
        out[stem] = (x, y)
    return out


def _s(b):
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)


def _i(v):
    return (b"K" + bytes([v])) if 0 <= v < 256 else (b"J" + struct.pack("<i", v))


def _py2_value(v):
    if isinstance(v, bytes):
        return _s(v)
    if isinstance(v, int):
        return _i(v)
    if isinstance(v, list):
        return b"](" + b"".join(_py2_value(x) for x in v) + b"e"
    assert isinstance(v, np.ndarray) and v.dtype == np.uint8
    shape = b"(" + b"".join(_i(s) for s in v.shape) + b"t"
    dtype_state = b"(" + _i(3) + _s(b"|") + b"NNN" + _i(-1) + _i(-1) + _i(0) + b"tb"
    dtype = b"cnumpy\ndtype\n" + _s(b"u1") + b"\x89\x88\x87R" + dtype_state
    head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _i(0) + b"\x85" + _s(b"b") + b"\x87R"
    return head + b"(" + _i(1) + shape + dtype + b"\x89" + _s(v.tobytes()) + b"tb"


def py2_pickle(d):
    """Bytes as Python 2's cPickle wrote the CIFAR batches: protocol 2, str (bytes) keys, numpy.core globals."""
    return b"\x80\x02}(" + b"".join(_s(k) + _py2_value(v) for k, v in d.items()) + b"u."


def write_cifar_py(folder, n=5, seed=1, style="py2"):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, 10, n)]
    d = {b"batch_label": b"training batch 1 of 5", b"labels": y, b"data": x, b"filenames": [b"a.png"] * n}
    blob = py2_pickle(d) if style == "py2" else pickle.dumps(d, protocol=2)
    (folder / "data_batch_1").write_bytes(blob)
    names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta) if style == "py2" else pickle.dumps(meta, protocol=2))
    return x.reshape(n, 3, 32, 32), y


def test_cifar_binary_layout(tmp_path):
    data = write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    ds = load_cifar10(tmp_path, 32)
    x, y = data["data_batch_1"]
    assert ds.images.shape == (5, 3, 32, 32)
    assert torch.equal(ds.images, torch.from_numpy(x)) and ds.labels.tolist() == y.tolist()
    assert ds.class_names == list(CLASS_NAMES)
    assert len(load_cifar10(tmp_path, 16, split="all")) == 10
    test = load_dataset(f"cifar10:{tmp_path}", 8, split="test")
    assert test.images.shape == (5, 3, 8, 8) and test.spec == f"cifar10:{tmp_path}"


def test_cifar_binary_bad_size(tmp_path):
    write_cifar_bin(tmp_path)
    f = tmp_path / "data_batch_1.bin"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"^data_batch_1.bin: size .* not a whole number of 3073-byte"):
        load_cifar10(tmp_path, 32)


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar_python_version(tmp_path, style):
    x, y = write_cifar_py(tmp_path / "cifar-10-batches-py", style=style)
    ds = load_cifar10(tmp_path, 32, limit=4)
    assert torch.equal(ds.images, torch.from_numpy(x[:4])) and ds.labels.tolist() == y[:4]
    assert ds.class_names[:2] == ["plane", "car"]  # read from batches.meta
    with pytest.raises(DataError, match="no test batches found"):
        load_cifar10(tmp_path, 32, split="test")


def test_py2_pickle_helper_is_faithful():
    blob = py2_pickle({b"data": np.zeros((1, 3072), np.uint8)})
    assert b"numpy.core.multiarray\n_reconstruct" in blob
    assert pickle.loads(blob, encoding="bytes")[b"data"].shape == (1, 3072)


class _Exec:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        import builtins

        return builtins.exec, (f"open({self.target!r}, 'w').close()",)


class _System:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.system, (f"touch '{self.target}'",)


class _Touch:
    def __init__(self, target):
        self.target = pathlib.Path(target)

    def __reduce__(self):
        return pathlib.Path.touch, (self.target,)


@pytest.mark.parametrize("evil, protocol", [(_Exec, 2), (_System, 2), (_Touch, 4), (_Exec, 5)])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, evil, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    target = tmp_path / "pwned"
    payload = {b"data": evil(target), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path, 32)
    text = str(e.value)
    assert text.startswith("data_batch_1: refused: pickle references ")
    assert "which is not allowed (files are data, never code)" in text
    assert not target.exists()


def test_malicious_payload_would_really_run(tmp_path):
    # The control: the same kind of payload does create the file under plain pickle, so the test above has teeth.
    target = tmp_path / "control"
    pickle.loads(pickle.dumps(_Exec(target), protocol=2))
    assert target.exists()


def test_refused_meta_falls_back_to_standard_names(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_py(folder)
    target = tmp_path / "pwned"
    (folder / "batches.meta").write_bytes(pickle.dumps(_Exec(target), protocol=2))
    ds = load_cifar10(tmp_path, 32)
    assert ds.class_names == list(CLASS_NAMES) and not target.exists()


def test_safe_unpickler_allows_only_the_numpy_globals():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 4, 5):
        back = SafeUnpickler(io.BytesIO(pickle.dumps(a, protocol=protocol)), encoding="bytes").load()
        assert np.array_equal(back, a)
    with pytest.raises(pickle.UnpicklingError):
        SafeUnpickler(io.BytesIO(pickle.dumps(np.float64(1.0), protocol=2))).load()  # numpy scalar: not needed
    codec_trick = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(pickle.UnpicklingError):
        SafeUnpickler(io.BytesIO(codec_trick)).load()


def test_garbage_and_wrong_content(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match=r"^data_batch_1: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path, 32)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"'data' must be a uint8 array of shape \(N, 3072\)"):
        load_cifar10(tmp_path, 32)
    with pytest.raises(DataError, match="empty file"):
        (tmp_path / "e").write_bytes(b"")
        safe_unpickle(tmp_path / "e")


def test_cifar_missing_folder_and_batches(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_cifar10(tmp_path / "nope", 32)
    with pytest.raises(DataError, match="no CIFAR-10 batches found"):
        load_cifar10(tmp_path, 32)
