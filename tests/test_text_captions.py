"""Captions (issue 11): builtin:shapes says what it drew, digits get digit words, folders read the usual formats."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffusion_studio.data import load_dataset
from diffusion_studio.data.shapes import INKS, SHAPE_CLASSES
from diffusion_studio.data.captions import attach_captions, folder_captions
from diffusion_studio.data.shapes import COLOUR_NAMES


def test_shape_captions_name_the_drawn_colour_shape_and_place():
    ds = load_dataset("builtin:shapes", 32)
    assert ds.captions is not None and len(ds.captions) == len(ds)
    rgb = ds.images.permute(0, 2, 3, 1).numpy().astype(float)
    plain = 0
    for i in range(0, len(ds), 7):
        cap = ds.captions[i]
        words = cap.replace(",", "").split()
        assert SHAPE_CLASSES[int(ds.labels[i])] in words, cap
        colours = [w for w in words if w in COLOUR_NAMES]
        assert len(colours) == 1, cap
        # The ink: the pixel colour farthest from the (corner) background, matched to the nearest ink.
        img, bg = rgb[i], rgb[i, 0, 0]
        far = img.reshape(-1, 3)[np.argmax(np.abs(img - bg).sum(-1))]
        nearest = COLOUR_NAMES[int(np.argmin([np.abs(far - np.array(ink)).sum() for ink in INKS]))]
        assert colours[0] == nearest, (cap, far)
        # The background word matches the corner's brightness.
        if "background" in words:
            assert words[words.index("background") - 1] == ("dark" if bg.mean() < 128 else "light"), cap
        # Left/right: the ink's centre of mass is on that side.
        ink = np.abs(img - bg).sum(-1) > 60
        cx = np.nonzero(ink)[1].mean() / 31
        if "left" in words:
            assert cx < 0.5, cap
        if "right" in words:
            assert cx > 0.5, cap
        plain += cap.startswith(("a ", "an ")) and len(words) == 3
    assert plain > 0.2 * len(range(0, len(ds), 7))  # many plain "a {colour} {shape}" captions
    assert any(c.startswith("an orange") for c in ds.captions) and not any("a orange" in c for c in ds.captions)


def test_digit_captions():
    ds = load_dataset("builtin:digits", 8)
    assert attach_captions(ds) == []
    forms = {"the digit seven", "7", "seven", "a handwritten 7"}
    sevens = {c for c, k in zip(ds.captions, ds.labels.tolist()) if k == 7}
    assert sevens == forms
    assert all(str(k) in c or ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][k] in c
               for c, k in zip(ds.captions, ds.labels.tolist()))


def _img(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def test_folder_captions_from_each_format(tmp_path):
    root = tmp_path / "pics"
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        _img(root / name)
    _img(root / "cats" / "f.png")
    _img(root / "cats" / "g.png")
    (root / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "a red  square"}\n'
        'this is not json\n'
        '{"file_name": "missing.png", "text": "nobody"}\n'
        '{"file_name": "b.png"}\n'
        '{"text": "no file"}\n'
        '{"file_name": "cats/f.png", "text": "a tabby cat"}\n', encoding="utf-8")
    (root / "c.txt").write_text("  a sidecar caption\n", encoding="utf-8")
    (root / "d.txt").write_text("", encoding="utf-8")
    ds = load_dataset(root, 8)
    problems = attach_captions(ds)
    caps = dict(zip(ds.sources, ds.captions))
    assert caps["a.png"] == "a red square"
    assert caps["c.png"] == "a sidecar caption"
    assert caps["cats/f.png"] == "a tabby cat"
    assert caps["cats/g.png"] == "cats"          # the subfolder's name
    assert caps["b.png"] == caps["d.png"] == caps["e.png"] == ""  # nothing usable: trained as ∅, and said so
    text = "\n".join(problems)
    assert "metadata.jsonl line 2: not JSON" in text
    assert "metadata.jsonl line 3: names 'missing.png', which is not among the loaded images" in text
    assert "metadata.jsonl line 4: no \"text\"" in text
    assert "metadata.jsonl line 5: no \"file_name\"" in text
    assert "d.txt: empty caption" in text
    assert "e.png: no caption" in text
    assert all("\n" not in p for p in problems)


def test_folder_captions_from_csv_and_a_broken_csv(tmp_path):
    root = tmp_path / "csv"
    for name in ("x.png", "y.png"):
        _img(root / name)
    (root / "metadata.csv").write_text('file_name,text\nx.png,"a blue, round thing"\ny.png,\nz.png,ghost\n',
                                       encoding="utf-8")
    caps, problems = folder_captions(root, ["x.png", "y.png"])
    assert caps == ["a blue, round thing", ""]
    assert any("metadata.csv line 3: empty caption" in p for p in problems)
    assert any("'z.png', which is not among the loaded images" in p for p in problems)

    (root / "metadata.csv").write_text("name,caption\nx.png,hello\n", encoding="utf-8")
    caps, problems = folder_captions(root, ["x.png", "y.png"])
    assert problems[0] == "metadata.csv: needs the columns file_name and text (found: name, caption)"
    assert caps == ["", ""]

    (root / "metadata.csv").write_bytes(b"file_name,text\nx.png,\xff\xfe bad bytes\n")
    caps, problems = folder_captions(root, ["x.png", "y.png"])
    assert any("not UTF-8" in p for p in problems)


def test_a_dataset_without_captions_is_refused_in_one_line():
    from diffusion_studio.data.errors import DataError

    ds = load_dataset("builtin:photos", 16)
    ds.labels, ds.class_names = None, None
    with pytest.raises(DataError) as e:
        attach_captions(ds)
    assert "no captions" in str(e.value) and "\n" not in str(e.value)
