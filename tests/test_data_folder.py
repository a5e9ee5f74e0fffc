"""Tests for data.folder: scanning (order, hidden files, link loops), progress, cancel, and bad files in a crowd."""

import io
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_studio.data import folder as folder_mod
from diffusion_studio.data.errors import DataError, LoadCancelled
from diffusion_studio.data.folder import FolderProgress, LoadReport, iter_load_folder, load_folder, scan_images


def solid(path, colour=(200, 30, 30), size=(6, 6)):
    Image.new("RGB", size, colour).save(path)
    return path


def drive(gen):
    """Run an iter_load_folder generator; return (list of progress items, dataset)."""
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


def test_scan_is_sorted_recursive_case_insensitive_and_skips_hidden(tmp_path):
    solid(tmp_path / "b.PNG")
    solid(tmp_path / "a.jpg")
    (tmp_path / "readme.txt").write_text("hi")
    solid(tmp_path / ".hidden.png")
    (tmp_path / ".git").mkdir()
    solid(tmp_path / ".git" / "x.png")
    (tmp_path / "sub").mkdir()
    solid(tmp_path / "sub" / "c.gif")
    names = [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "sub/c.gif"]
    assert [p.name for p in scan_images(tmp_path, recursive=False)] == ["a.jpg", "b.PNG"]


def test_scan_is_lazy(tmp_path):
    for i in range(5):
        solid(tmp_path / f"{i}.png")
    it = scan_images(tmp_path)
    assert next(it).name == "0.png"  # a generator, not a list built up front
    assert iter(it) is it


def test_scan_bad_root_raises_at_once(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        scan_images(tmp_path / "nope")
    solid(tmp_path / "file.png")
    with pytest.raises(DataError, match="not a folder"):
        scan_images(tmp_path / "file.png")


def test_symlink_loop_terminates_and_loads_each_image_once(tmp_path):
    root = tmp_path / "dir"
    (root / "sub").mkdir(parents=True)
    solid(root / "a.png")
    solid(root / "sub" / "b.png")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)
    (root / "alias").symlink_to(root / "sub", target_is_directory=True)
    (root / "a_link.png").symlink_to(root / "a.png")  # the same file twice
    found = list(scan_images(root))
    assert len(found) == 2
    real = {str((root / "a.png").resolve()), str((root / "sub" / "b.png").resolve())}
    assert {os.path.realpath(p) for p in found} == real
    ds = load_folder(root, 4, 3)
    assert len(ds) == 2


def test_symlinked_file_outside_is_followed(tmp_path):
    outside = solid(tmp_path / "outside.png")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "in.png").symlink_to(outside)
    assert [p.name for p in scan_images(tmp_path / "d")] == ["in.png"]


def test_mixed_folder_good_images_load_and_each_bad_one_is_reported(tmp_path):
    good = [solid(tmp_path / f"good{i}.png", (40 * i, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "zero.png").write_bytes(b"")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "deep16.png")  # odd but valid
    (tmp_path / "notes.txt").write_text("ignored")

    ds = load_folder(tmp_path, 4, 3)
    report = ds.report
    assert isinstance(report, LoadReport)
    assert len(ds) == report.loaded == 4
    assert ds.sources == ["deep16.png", "good0.png", "good1.png", "good2.png"]
    bad = {os.path.basename(e.path): e.reason for e in report.failed}
    assert set(bad) == {"trunc.png", "trunc.jpg", "text.png", "zero.png"}
    assert "truncated or corrupt" in bad["trunc.png"] and "truncated or corrupt" in bad["trunc.jpg"]
    assert "not an image" in bad["text.png"] and "empty file" in bad["zero.png"]
    assert all("\n" not in str(e) for e in report.failed)
    assert report.skipped_non_images == 1
    assert report.summary() == "loaded 4 images; 4 failed (see list); 1 non-image file skipped"
    assert not report.cancelled
    assert ds.labels is None and len(good) == 3


def test_progress_reports_every_file_with_last_error(tmp_path):
    solid(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    solid(tmp_path / "c.png")
    items, ds = drive(iter_load_folder(tmp_path, 4, 1))
    assert [i.current for i in items] == ["a.png", "b.png", "c.png"]
    assert [(i.done, i.total, i.ok, i.failed) for i in items] == [(1, 3, 1, 0), (2, 3, 1, 1), (3, 3, 2, 1)]
    assert items[1].last_error is not None and "empty file" in str(items[1].last_error)
    assert items[2].last_error is None
    assert isinstance(items[0], FolderProgress)
    assert ds.channels == 1 and len(ds) == 2


def test_empty_folder_says_what_it_looked_for(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DataError) as e:
        load_folder(tmp_path, 8, 3)
    text = str(e.value)
    assert text.startswith(f"{tmp_path.name}: no images found (looked for .png, .jpg")
    assert "1 other files ignored" in text and "\n" not in text


def test_folder_where_nothing_loads(tmp_path):
    (tmp_path / "x.png").write_text("nope")
    (tmp_path / "y.jpg").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_folder(tmp_path, 8, 3)
    assert "no loadable images (2 files failed, first: x.png: not an image" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def thousands(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    for d in range(3):
        (root / f"part{d}").mkdir()
    blobs = []
    for k in range(4):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4), (60 * k, 255 - 60 * k, 7)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    for i in range(3000):
        (root / f"part{i % 3}" / f"img{i:05d}.png").write_bytes(blobs[i % 4])
    return root


def test_thousands_of_images_progress_total_and_cancel(thousands):
    state = {"items": 0}
    gen = iter_load_folder(thousands, 4, 3, cancel=lambda: state["items"] >= 100)
    start = time.perf_counter()
    first = next(gen)
    assert first.total == 3000 and first.done == 1  # counted before the first image is loaded
    state["items"] = 1
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            ds = stop.value
            break
        state["items"] += 1
        assert item.total == 3000 and item.done == state["items"]
    assert state["items"] == 100  # cancel is polled before every file
    assert len(ds) == 100 and ds.report.cancelled and ds.report.loaded == 100
    assert "cancelled" in ds.report.summary()
    assert time.perf_counter() - start < 5


def test_thousands_of_images_full_load_with_class_folders(thousands):
    start = time.perf_counter()
    totals = set()
    ds = load_folder(thousands, 4, 3, progress=lambda p: totals.add(p.total))
    assert time.perf_counter() - start < 15
    assert len(ds) == 3000 and totals == {3000}
    assert ds.class_names == ["part0", "part1", "part2"]
    assert torch.bincount(ds.labels).tolist() == [1000, 1000, 1000]
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (3000, 3, 4, 4)


def test_limit_caps_loaded_images(thousands):
    items, ds = drive(iter_load_folder(thousands, 4, 3, limit=7))
    assert len(ds) == 7 and items[0].total == 7 and items[-1].done == 7


def test_cancel_before_anything_loaded(tmp_path):
    solid(tmp_path / "a.png")
    with pytest.raises(LoadCancelled):
        load_folder(tmp_path, 4, 3, cancel=lambda: True)


def _deny_folder(path, monkeypatch):
    """chmod 000 a folder; as root (where that does not stop listing) make scandir refuse it instead."""
    os.chmod(path, 0)
    try:
        os.listdir(path)
    except PermissionError:
        return
    real_scandir = os.scandir

    def refusing_scandir(p="."):
        if os.fspath(p) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(p))
        return real_scandir(p)

    monkeypatch.setattr(folder_mod.os, "scandir", refusing_scandir)


def test_unreadable_subfolder_is_reported_not_fatal(tmp_path, monkeypatch):
    solid(tmp_path / "ok.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    solid(locked / "hidden_from_us.png")
    _deny_folder(locked, monkeypatch)
    try:
        errors = []
        assert [p.name for p in scan_images(tmp_path, on_error=errors.append)] == ["ok.png"]
        assert len(errors) == 1 and "locked: cannot open folder (permission denied)" in str(errors[0])
        ds = load_folder(tmp_path, 4, 3)
        assert len(ds) == 1
        assert [os.path.basename(e.path) for e in ds.report.failed] == ["locked"]
    finally:
        os.chmod(locked, 0o755)
