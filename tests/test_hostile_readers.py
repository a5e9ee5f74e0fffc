"""Fuzzers for the files a user or a stranger hands the newer readers (issue 26): caption files (metadata.jsonl,
metadata.csv, NAME.txt sidecars), the geometry lab's 2-D point CSVs and the sampler lab's --x-T arrays. Each starts
from a valid file and mutates it (bytes cut, spliced, repeated; fields and headers rewritten with edge values),
derandomised; every case runs in a subprocess under an address-space cap and a per-case alarm. A case may load or be
refused in one line by the reader's own error type; a hang, a crash (any other exception), a multi-line message or
a case over the time limit fails the test."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bounded_runner import run_cases
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "hostile_reader_cases.py"
LIMIT_BYTES = 2048 << 20
CASE_SECONDS = 10
POSIX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGALRM and RLIMIT_AS")
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
pytestmark = POSIX

EDGE_TEXT = st.sampled_from(["", " ", "\x00", "\x1b[2J", "\u202e", "\ufeff", "\r", "\r\n", "\n\n", ",", ";", "\t",
                             "\"", "'", "#", "# class_names: [1, [2]]", "nan", "inf", "-inf", "1e309", "-0", "0x10",
                             "1_000", "١٢", "9" * 400, "[" * 5000, "{\"a\":" * 3000, "é" * 50, "\\", "/etc/passwd",
                             "../../x.png", "a.png", "file_name", "text", "caption", "label", "x", "y"])
CHUNK = st.one_of(st.binary(max_size=40), EDGE_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass")),
                  st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xf4\x90\x80\x80"]))


def _edits():
    """1 to 4 byte edits: (kind, position fraction, length, chunk)."""
    return st.lists(st.tuples(st.sampled_from(["insert", "replace", "delete", "repeat", "truncate"]),
                              st.floats(0, 1), st.integers(0, 64), CHUNK), min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
    for kind, where, n, chunk in edits:
        i = int(where * len(data))
        if kind == "insert":
            data = data[:i] + chunk + data[i:]
        elif kind == "replace":
            data = data[:i] + chunk + data[i + n:]
        elif kind == "delete":
            data = data[:i] + data[i + n:]
        elif kind == "repeat":
            data = data[:i] + data[i:i + n] * min(200, 1 + n) + data[i:]
        else:
            data = data[:i]
    return data[: 1 << 20]


def run_batch(cases: list[dict], folder: Path) -> dict[str, dict]:
    return run_cases(RUNNER, cases, folder, LIMIT_BYTES, CASE_SECONDS, slack_seconds=120)


def check(results: dict[str, dict], least_ok: int, least_refused: int) -> None:
    bad = []
    for name, r in results.items():
        why = ("hangs" if r["hang"] else f"crashed:\n{r['message']}" if r["outcome"] == "crash" else
               f"{r['seconds']} s" if r["seconds"] > CASE_SECONDS else
               f"a message of several lines: {r['message']!r}" if "\n" in r["message"] else None)
        if why:
            bad.append(f"{name}: {why}")
    counts = {k: sum(r["outcome"] == k for r in results.values()) for k in ("ok", "refused")}
    print(f"\n{len(results)} cases: {counts['ok']} read, {counts['refused']} refused in one line")
    assert not bad, f"{len(bad)} of {len(results)}:\n" + "\n".join(bad[:15])
    assert counts["ok"] >= least_ok and counts["refused"] >= least_refused, counts


def _collect(base: bytes, write) -> list[dict]:
    cases = []

    @FUZZ
    @given(_edits())
    def collect(edits):
        i = len(cases)
        cases.append({"name": f"{i}: {edits!r}"[:300], "path": str(write(i, mutate(base, edits)))})

    collect()
    return cases


# ---- captions -------------------------------------------------------------------------------------------------------
def _caption_folder(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True)
    for stem in ("a", "b", "c"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / f"{stem}.png")
    (folder / name).write_bytes(data)
    return folder


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name, base", [
    ("metadata.jsonl", b'{"file_name": "a.png", "text": "a red circle"}\n{"file_name": "b.png", "text": "two"}\n'
                       b'{"file_name": "c.png", "caption": "three"}\n'),
    ("metadata.csv", b'file_name,text\na.png,a red circle\nb.png,"two, quoted"\nc.png,three\n'),
    ("a.txt", b"a red circle on black\n"),
])
def test_fuzz_caption_files(name, base, tmp_path):
    cases = [dict(c, reader="captions") for c in
             _collect(base, lambda i, data: _caption_folder(tmp_path / f"f{i}", name, data))]
    cases.append({"name": "deep", "reader": "captions",
                  "path": str(_caption_folder(tmp_path / "deep", name, b"[" * 100_000 + b"\n" + base))})
    results = run_batch(cases, tmp_path)
    check(results, least_ok=100, least_refused=0)  # a caption problem is a line in the report, never a refusal
    assert results["deep"]["outcome"] == "ok"


# ---- 2-D point CSVs -------------------------------------------------------------------------------------------------
POINTS = (b"# class_names: [\"left\", \"right\"]\nx,y,label\n" +
          b"".join(f"{np.cos(k):.4f},{np.sin(k) * 1000:.2f},{'left' if k % 2 else 'right'}\n".encode()
                   for k in range(40)))


@pytest.mark.timeout(600)
def test_fuzz_point_csvs(tmp_path):
    def write(i, data):
        p = tmp_path / f"p{i}.csv"
        p.write_bytes(data)
        return p

    cases = [dict(c, reader="points") for c in _collect(POINTS, write)]
    results = run_batch(cases, tmp_path)
    check(results, least_ok=50, least_refused=10)


# ---- --x-T arrays ---------------------------------------------------------------------------------------------------
def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


HEADERS = st.fixed_dictionaries({
    "descr": st.sampled_from(["<f4", "<f8", "<f2", ">f4", "|O", "<i8", "|b1", "<c8", "<U3", "V8", "[('a','<f4')]",
                              "<M8[s]", "x", ""]),
    "fortran_order": st.sampled_from(["False", "True", "1", "None", "'x'"]),
    "shape": st.sampled_from(["(4, 1, 8, 8)", "(256,)", "(4, 1, 8, 9)", "(10**9,)", "(2**62, 2**62)", "(-1, 256)",
                              "()", "(4, 1, 8, 8, 1)", "(0,)", "[4, 1, 8, 8]", "(4.0, 1, 8, 8)",
                              "(" + "1," * 5000 + ")"]),
})


@pytest.mark.timeout(600)
def test_fuzz_x_T_arrays(tmp_path):
    base = _npy(np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32))

    def write(i, data):
        p = tmp_path / f"x{i}.npy"
        p.write_bytes(data)
        return p

    cases = [dict(c, reader="array") for c in _collect(base, write)]

    @FUZZ
    @given(HEADERS, st.integers(0, 2048))
    def headers(h, payload):
        text = "{" + f"'descr': '{h['descr']}', 'fortran_order': {h['fortran_order']}, 'shape': {h['shape']}, " + "}"
        text = text.replace("'[(", "[(").replace(")]'", ")]")
        header = text.encode("latin1") + b" " * (-(len(text) + 11) % 64) + b"\n"
        data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + base[128:128 + payload]
        i = len(cases)
        cases.append({"name": f"{i}: header {h!r} payload {payload}"[:300], "reader": "array",
                      "path": str(write(i, data))})

    headers()
    results = run_batch(cases, tmp_path)
    check(results, least_ok=5, least_refused=100)
