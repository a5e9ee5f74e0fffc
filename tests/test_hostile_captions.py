"""Caption files from strangers (issue 26): a sidecar or metadata file that is a symbolic link out of the data folder
is never read, so nothing outside the folder reaches a checkpoint or an export; caption text printed to the terminal
has its control and bidi characters escaped."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from diffusion_studio import cli
from diffusion_studio.cli.common import terminal_safe
from diffusion_studio.core.nets import text
from diffusion_studio.data.captions import folder_captions
from test_text_core import StubEncoder  # registers the stub encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SECRET = "root:x:0:0:the secret outside the folder"


def _pictures(folder, n=4):
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (200, 30 * i, 20)).save(folder / f"{i}.png")


def test_a_sidecar_linked_out_of_the_folder_is_refused_and_one_inside_is_read(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text(SECRET)
    pics = tmp_path / "pics"
    _pictures(pics)
    (pics / "0.txt").symlink_to(secret)
    (pics / "inside.txt").write_text("a red square")
    (pics / "1.txt").symlink_to(pics / "inside.txt")      # a link that stays inside: fine
    (pics / "2.txt").write_text("a blue circle")
    captions, problems = folder_captions(pics, ["0.png", "1.png", "2.png", "3.png"])
    assert captions[:3] == ["", "a red square", "a blue circle"]
    assert not any(SECRET in c for c in captions)
    leak = [p for p in problems if p.startswith("0.txt: ")]
    assert len(leak) == 1 and "leads out of the data folder" in leak[0], problems


def test_a_metadata_file_linked_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(json.dumps({"file_name": "0.png", "text": SECRET}) + "\n")
    pics = tmp_path / "pics"
    _pictures(pics, 1)
    (pics / "metadata.jsonl").symlink_to(outside)
    captions, problems = folder_captions(pics, ["0.png"])
    assert captions == [""]
    assert any(p.startswith("metadata.jsonl: ") and "leads out of the data folder" in p for p in problems), problems


def test_a_fifo_caption_is_refused_without_hanging(tmp_path):
    import os

    pics = tmp_path / "pics"
    _pictures(pics, 1)
    os.mkfifo(pics / "0.txt")
    captions, problems = folder_captions(pics, ["0.png"])
    assert captions == [""] and any("0.txt: not a regular file (FIFO)" in p for p in problems), problems


def test_train_text_keeps_linked_secrets_out_of_the_checkpoint_and_escapes_what_it_prints(tmp_path, capsys,
                                                                                           monkeypatch):
    secret = tmp_path / "passwd"
    secret.write_text(SECRET)
    pics = tmp_path / "pics"
    _pictures(pics)
    (pics / "0.txt").symlink_to(secret)
    (pics / "1.txt").write_text("red\x1b[31m square \u202eevil\x00")
    (pics / "2.txt").write_text("a blue circle")
    (pics / "3.txt").write_text("a green star")
    monkeypatch.setattr(text, "DEFAULT_ENCODER", StubEncoder.name)
    run = tmp_path / "run"
    code = cli.main(["train", "--data", str(pics), "--size", "8", "--model", "tiny", "--text", "--steps", "2",
                     "--batch", "4", "--T", "20", "--precision", "fp32", "--device", "cpu", "--out", str(run)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert SECRET not in out + err
    assert "0.txt: a symbolic link that leads out of the data folder" in out
    assert "\x1b" not in out + err and "\u202e" not in out + err and "\x00" not in out + err
    assert "\\x1b[31m" in out and "\\u202e" in out
    weights = list(run.glob("*.safetensors"))
    assert len(weights) == 1 and b"a green star" in weights[0].read_bytes()  # captions are stored in the header
    stored = (run / "checkpoint.json").read_bytes() + weights[0].read_bytes()
    assert b"root:x" not in stored
    export = tmp_path / "shared"
    assert cli.main(["export", str(run), "--out", str(export)]) == 0
    assert b"a green star" in b"".join(f.read_bytes() for f in export.iterdir())
    assert not any(b"root:x" in f.read_bytes() for f in export.iterdir())


@pytest.mark.parametrize("raw, shown", [
    ("plain words, é and 中文", "plain words, é and 中文"),
    ("\x1b[2J", "\\x1b[2J"),
    ("left\u202eright", "left\\u202eright"),
    ("nul\x00", "nul\\x00"),
    ("\u2066iso\u2069", "\\u2066iso\\u2069"),
])
def test_terminal_safe_escapes_controls_and_bidi(raw, shown):
    assert terminal_safe(raw) == shown


def test_a_metadata_line_nested_deep_or_not_utf8_costs_that_line_only(tmp_path):
    pics = tmp_path / "pics"
    _pictures(pics, 3)
    lines = [b'{"file_name": "0.png", "text": "a red square"}', b"[" * 100_000,
             b'{"file_name": "1.png", "text": "bad \xff byte"}', b'{"file_name": "2.png", "text": "a blue circle"}']
    (pics / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    captions, problems = folder_captions(pics, ["0.png", "1.png", "2.png"])
    assert captions == ["a red square", "", "a blue circle"]
    assert any("metadata.jsonl line 2: nested too deeply" in p for p in problems), problems
    assert any("metadata.jsonl line 3: not UTF-8 text" in p for p in problems), problems


def test_a_text_run_with_no_usable_caption_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    pics = tmp_path / "pics"
    _pictures(pics, 4)
    (pics / "metadata.jsonl").write_bytes(b"\xff\xfe not a caption file\n")
    monkeypatch.setattr(text, "DEFAULT_ENCODER", StubEncoder.name)
    code = cli.main(["train", "--data", str(pics), "--size", "8", "--model", "tiny", "--text", "--steps", "2",
                     "--batch", "4", "--device", "cpu", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "argument --text: pics: no usable caption for any of its 4 images" in err[0]
    assert not (tmp_path / "run" / "checkpoint.json").exists()
