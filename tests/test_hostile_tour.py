"""Hostile and broken tour files (round three): resources/tour.json is data the user may edit, so a FIFO, a huge or
deeply nested file, a mathtext bomb, an attribute path as a highlight or a bad Show-me argument ends in one line naming
the file and the field, with the broken step left out and the others still working; and a fuzzer of the real file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtWidgets import QDockWidget, QWidget

from diffusion_studio.gui.tour import data
from diffusion_studio.gui.tour.data import (ACTIONS, HIGHLIGHTS, MAX_TEXT, SAMPLER_NAMES, SAMPLING_TABS, TABS, DOCKS,
                                            TourError, TourStep, json_depth, load_tour, read_tour, tour_path)
from diffusion_studio.gui.widgets import mathtext
from diffusion_studio.gui.widgets.mathtext import EquationError, equation_problem, render_equation

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST_S = 3.0           # what reading any of these may take (the shipped tour takes a few ms)
BOMB = "\\frac{" * 400            # 2,400 characters: refused for its length before anything parses it
SHORT_BOMB = "\\frac{" * 80       # 480 characters, 80 deep: refused for its depth
HUGE_SUM = "+".join(f"x_{{{i}}}" for i in range(20_000))
GLOBALS = "__class__.__init__.__globals__"


def shipped() -> dict:
    return json.loads(tour_path().read_text(encoding="utf-8"))


def step_index(doc: dict, sid: str) -> int:
    return next(i for i, s in enumerate(doc["steps"]) if s["id"] == sid)


def write(tmp_path, doc):
    (p := tmp_path / "tour.json").write_text(json.dumps(doc), encoding="utf-8")
    return p


def one_line(text: str, path) -> None:
    assert "\n" not in text and text.startswith(f"{path}: ") and "Traceback" not in text, text
    assert len(text) < 2000, len(text)


def timed_read(path):
    start, tour = time.monotonic(), read_tour(path)
    assert time.monotonic() - start < FAST_S
    return tour


# ---- whole files that cannot be used: each run in a child process with a timeout (a hang fails, not blocks) -------
CHILD = r"""
import json, sys, time
from diffusion_studio.gui.tour.data import TourError, read_tour
for path in sys.argv[1:]:
    start = time.monotonic()
    try:
        tour = read_tour(path)
        out = {"steps": [s.id for s in tour.steps], "problems": tour.problems}
    except TourError as e:
        out = {"error": str(e)}
    out["seconds"] = time.monotonic() - start
    print(json.dumps(out), flush=True)
"""


def build_unusable(tmp_path) -> dict:
    """name → (path, a keyword its message must hold)."""
    cases = {}

    def case(name, keyword, content=None, make=None):
        p = tmp_path / name / "tour.json"
        p.parent.mkdir()
        if make is not None:
            make(p)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        cases[name] = (p, keyword)

    case("fifo", "FIFO", make=os.mkfifo)
    case("huge", "too large", make=lambda p: open(p, "wb").truncate(64 << 20))       # sparse: costs no disk
    case("brackets", "nested more than", "[" * 100_000)
    case("deep_steps", "nested more than", '{"steps": ' + "[" * 100_000)
    case("deep_objects", "nested more than", '{"a": ' * 100_000)
    case("deep_closed", "nested more than", '{"steps": ' + "[" * 30 + "]" * 30 + "}")
    case("escaped_quotes", "not JSON", '"' + '\\"' * 400_000)                    # no end: the scan stays linear
    case("big_int", "not JSON", '{"steps": [' + "9" * 5000 + "]}")
    case("not_utf8", "not JSON", b'{"steps": ["\xff\xfe"]}')
    case("folder", "folder", make=lambda p: p.mkdir())
    case("dev_zero", "character device", make=lambda p: p.symlink_to("/dev/zero"))
    case("missing", "no such file", make=lambda p: None)
    case("no_steps", '"steps"', json.dumps({"about": "x"}))
    case("all_broken", "steps[0].highlight", json.dumps({"steps": [dict(shipped()["steps"][0], highlight=GLOBALS)]}))
    return cases


@pytest.mark.timeout(120)
def test_unusable_tour_files_end_at_once_in_one_line(tmp_path):
    cases = build_unusable(tmp_path)
    r = subprocess.run([sys.executable, "-c", CHILD, *(str(p) for p, _k in cases.values())], capture_output=True,
                       text=True, timeout=90, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases)
    for (name, (path, keyword)), out in zip(cases.items(), results):
        assert "error" in out, (name, out)
        one_line(out["error"], path)
        assert keyword in out["error"], (name, out["error"])
        assert out["seconds"] < FAST_S, (name, out["seconds"])


def test_the_depth_scan_skips_strings_and_needs_no_recursion():
    assert json_depth('{"a": [1, {"b": "[[[[{{{{\\"]]"}]}') == 3
    assert json_depth("[" * 100_000) == data.MAX_JSON_DEPTH + 1        # stops as soon as the limit is passed
    assert json_depth(json.dumps(shipped())) <= 6
    start = time.monotonic()
    assert json_depth("[]" * 500_000) == 1 and time.monotonic() - start < FAST_S


# ---- one broken step: left out and named, the others kept ---------------------------------------------------------
def mutate_frac_bomb(doc):
    i = step_index(doc, "prior")
    doc["steps"][i]["equations"][0] = BOMB
    return i, f"steps[{i}].equations[0]", "longer than an equation may be (500)"


def mutate_short_bomb(doc):
    i = step_index(doc, "ddim")
    doc["steps"][i]["equations"][2] = SHORT_BOMB
    return i, f"steps[{i}].equations[2]", "nested 80 deep (at most 20"


def mutate_huge_sum(doc):
    i = step_index(doc, "closed_form")
    doc["steps"][i]["equations"][1] = HUGE_SUM
    return i, f"steps[{i}].equations[1]", "longer than"


def mutate_highlight(doc):
    i = step_index(doc, "prior")
    doc["steps"][i]["highlight"] = GLOBALS
    return i, f"steps[{i}].highlight", "not a widget the tour can point at (known: "


def mutate_sample_steps(doc):
    i = step_index(doc, "sampling")
    j = next(j for j, a in enumerate(doc["steps"][i]["show"]) if a[0] == "sample")
    doc["steps"][i]["show"][j][1]["steps"] = "abc"
    return i, f"steps[{i}].show[{j}]", '"steps" must be a whole number'


def at(doc, sid, field, keyword, mutate):
    """Break the step ``sid`` (wherever it stands in the tour) with ``mutate``: (index, where, keyword, None)."""
    i = step_index(doc, sid)
    return i, f"steps[{i}].{field}", keyword, mutate(doc["steps"][i])


MORE = {
    "tab_attribute": lambda d: (0, "steps[0].show[0]", "tab's argument must be one of",
                                d["steps"][0]["show"].__setitem__(0, ["tab", "__class__"])),
    "dock_attribute": lambda d: (1, "steps[1].show[0]", "dock's argument",
                                 d["steps"][1]["show"].__setitem__(0, ["dock", "__dict__"])),
    "img_tag": lambda d: (1, "steps[1].text", "may use only the tags",
                          d["steps"][1].__setitem__("text", 'Look: <img src="/dev/zero" width=99999>.')),
    "styled_tag": lambda d: (2, "steps[2].text", "may use only the tags",
                             d["steps"][2].__setitem__("text", '<span style="font-size:9999px">big</span>')),
    "huge_T": lambda d: (1, "steps[1].show[1]", '"T" must be a whole number',
                         d["steps"][1]["show"][1][1].__setitem__("T", 10 ** 400)),
    "too_noisy": lambda d: (1, "steps[1].show[1]", "not a schedule the app can make",
                            d["steps"][1]["show"][1].__setitem__(1, {"kind": "linear", "T": 100_000,
                                                                     "beta_end": 0.9})),
    "nan_scale": lambda d: (2, "steps[2].show[3]", "colour_scale's argument",
                            d["steps"][2]["show"].__setitem__(3, ["colour_scale", float("nan")])),
    "t_bool": lambda d: (0, "steps[0].show[3]", "t's argument", d["steps"][0]["show"].__setitem__(3, ["t", True])),
    "t_zero": lambda d: (0, "steps[0].show[3]", "t's argument", d["steps"][0]["show"].__setitem__(3, ["t", 0])),
    "sampler_name": lambda d: at(d, "ddim", "show[1]", '"sampler" must be one of',
                                lambda s: s["show"][1][1].__setitem__("sampler", "__import__")),
    "sample_n": lambda d: at(d, "ddim", "show[1]", '"n" must be a whole number from 1 to 64',
                            lambda s: s["show"][1][1].__setitem__("n", 65)),
    "sample_eta": lambda d: at(d, "ddim", "show[1]", '"eta" must be a number from 0 to 1',
                              lambda s: s["show"][1][1].__setitem__("eta", 2.5)),
    "sample_key": lambda d: at(d, "ddim", "show[1]", "unknown key 'device'",
                              lambda s: s["show"][1][1].__setitem__("device", "cuda")),
    "ode_variance": lambda d: at(d, "ode", "show[1]", "is not offered for dpm++2m",
                                lambda s: s["show"][1][1].__setitem__("variance", "beta")),
    "sampling_tab": lambda d: at(d, "sampling", "show[2]", "sampling_tab's argument",
                                lambda s: s["show"].__setitem__(2, ["sampling_tab", "Nope"])),
    "t_range_order": lambda d: at(d, "posterior", "show[2]", "first below the last",
                                  lambda s: s["show"].__setitem__(2, ["t_range", [30, 1]])),
    "t_range_huge": lambda d: at(d, "posterior", "show[2]", "t_range's argument must be a whole number",
                                 lambda s: s["show"].__setitem__(2, ["t_range", [1, 10 ** 400]])),
    "model_path": lambda d: at(d, "guidance", "show[1]", "must be the name of a shipped model",
                              lambda s: s["show"].__setitem__(1, ["model", "../../etc/passwd"])),
    "unknown_key": lambda d: (3, "steps[3].hightlight", "unknown key", d["steps"][3].__setitem__("hightlight", "x")),
    "dollar": lambda d: (3, "steps[3].equations[0]", "must not contain $",
                         d["steps"][3]["equations"].__setitem__(0, "$x$")),
    "long_text": lambda d: (4, "steps[4].text", "longer than", d["steps"][4].__setitem__("text", "x" * 100_000)),
    "too_many_actions": lambda d: (4, "steps[4].show", "at most 16",
                                   d["steps"][4].__setitem__("show", [["t", 5]] * 17)),
}
PROBES = {"frac_bomb": mutate_frac_bomb, "short_bomb": mutate_short_bomb, "huge_sum": mutate_huge_sum,
          "highlight": mutate_highlight, "sample_steps": mutate_sample_steps,
          **{k: (lambda f: lambda d: f(d)[:3])(f) for k, f in MORE.items()}}


@pytest.mark.parametrize("name", list(PROBES))
def test_a_broken_step_is_left_out_and_named(tmp_path, name):
    doc = shipped()
    ids = [s["id"] for s in doc["steps"]]
    i, where, keyword = PROBES[name](doc)
    p = write(tmp_path, doc)
    tour = timed_read(p)
    assert [s.id for s in tour.steps] == ids[:i] + ids[i + 1:]            # only the broken step is left out
    assert len(tour.problems) == 1
    line = tour.problems[0]
    one_line(line, p)
    assert line.startswith(f"{p}: {where}: ") and keyword in line, line
    with pytest.raises(TourError) as e:                                   # the strict check names the same
        load_tour(p)
    assert str(e.value) == line


def test_the_highlight_message_lists_the_allowed_widgets(tmp_path):
    doc = shipped()
    i, _where, _k = mutate_highlight(doc)
    p = write(tmp_path, doc)
    line = read_tour(p).problems[0]
    assert line.startswith(f"{p}: steps[{i}].highlight: not a widget the tour can point at (known: tabs, ")
    assert all(name in line for name in HIGHLIGHTS) and repr(GLOBALS) in line


def test_problems_outside_the_steps_are_named_but_keep_the_tour(tmp_path):
    doc = shipped()
    doc.update(version=2, extra=1, about=["x"])
    n = len(doc["steps"])
    doc["steps"] = doc["steps"] * (100 // n + 1)                         # over 100 steps, each id after the nth twice
    p = write(tmp_path, doc)
    tour = timed_read(p)
    assert [s.id for s in tour.steps] == [s["id"] for s in shipped()["steps"]]
    for line in tour.problems:
        one_line(line, p)
    assert any(": extra: unknown key" in ln for ln in tour.problems)
    assert any(": version: " in ln for ln in tour.problems) and any(": about: " in ln for ln in tour.problems)
    assert any("more than 100" in ln for ln in tour.problems)
    assert any(f"{p}: steps[{n}].id: " in ln and "used twice" in ln for ln in tour.problems)


# ---- equations: size, depth and time limits; every failure an EquationError -----------------------------------------
@pytest.mark.parametrize("tex, keyword", [
    (BOMB, "longer than an equation may be"),
    (SHORT_BOMB, "nested 80 deep"),
    (HUGE_SUM, "longer than an equation may be"),
    ("\\hspace{100000}x", "larger than an equation may be"),
    ("\\frac{1}{", "cannot render equation"),
    ("\\sqrt[" * 5 + "x", "cannot render equation"),
    ("", "non-empty"),
])
def test_hostile_equations_are_refused_quickly(qapp, tex, keyword):
    start = time.monotonic()
    with pytest.raises(EquationError) as e:
        render_equation(tex)
    assert time.monotonic() - start < FAST_S
    assert keyword in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 400


def test_a_recursion_error_inside_mathtext_is_an_equation_error(qapp, monkeypatch):
    monkeypatch.setattr(mathtext, "MAX_EQUATION_CHARS", 10**6)           # the limits off: mathtext's own recursion
    monkeypatch.setattr(mathtext, "MAX_EQUATION_DEPTH", 10**6)
    start = time.monotonic()
    with pytest.raises(EquationError, match="cannot render equation"):
        render_equation(BOMB + "x" + "}{2}" * 400)
    assert time.monotonic() - start < 10


def test_a_slow_layout_is_not_drawn(qapp, monkeypatch):
    monkeypatch.setattr(mathtext, "MAX_LAYOUT_SECONDS", 0.0)
    with pytest.raises(EquationError, match="to lay out"):
        render_equation("x_{t} + y_{98765}")


def test_a_step_whose_equations_take_too_long_shows_the_rest_as_text(window, monkeypatch):
    from diffusion_studio.gui.tour import panel as panel_module
    from diffusion_studio.gui.tour.panel import start_tour

    monkeypatch.setattr(panel_module, "STEP_RENDER_SECONDS", -1.0)      # the budget already spent
    start_tour(window)
    labels = window.learn_dock.panel.equation_labels
    assert labels and all(lab.objectName() == "tourEquationError" and "not rendered" in lab.text() for lab in labels)
    with pytest.raises(EquationError, match="not a string"):
        render_equation(["x"])


def test_the_limits_let_the_shipped_equations_through():
    assert all(equation_problem(e) is None for s in load_tour() for e in s.equations)
    assert equation_problem("\\frac{" * 20 + "1" + "}{2}" * 20) is None and equation_problem("x" * 500) is None


# ---- the app: the Learn dock shows the good steps and names the broken ones ---------------------------------------
@pytest.fixture
def tour_window(qtbot, settings, monkeypatch):
    from diffusion_studio.gui.main_window import MainWindow

    made = []

    def make(path):
        monkeypatch.setattr(data, "tour_path", lambda: path)
        win = MainWindow(settings, device="cpu")
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        made.append(win)
        return win

    yield make
    for win in made:
        win.close()


def test_the_app_skips_the_broken_steps_and_the_rest_still_work(tour_window, tmp_path, qtbot):
    from PySide6.QtCore import Qt

    from diffusion_studio.gui.tour.panel import EquationLabel, start_tour

    doc = shipped()
    broken = [f(doc) for f in (mutate_huge_sum, mutate_highlight, mutate_sample_steps)]
    bomb_at = step_index(doc, "schedule")
    doc["steps"][bomb_at]["equations"][1] = BOMB
    p = write(tmp_path, doc)
    start = time.monotonic()
    win = tour_window(p)
    assert time.monotonic() - start < 60
    message = win.statusBar().currentMessage()
    one_line(message, p)
    assert "steps[" in message and "(and 3 more: see the Learn dock)" in message
    panel = win.learn_dock.panel
    lines = panel.problems_label.text().split("\n")
    assert len(lines) == 4 and all(ln.startswith(f"{p}: steps[") for ln in lines)
    assert {w for _i, w, _k in broken} | {f"steps[{bomb_at}].equations[1]"} == {ln.split(": ")[1] for ln in lines}
    gone = {doc["steps"][i]["id"] for i, _w, _k in broken} | {"schedule"}
    assert [s.id for s in panel.steps] == [s["id"] for s in doc["steps"] if s["id"] not in gone]
    start_tour(win)
    assert panel.problems_label.isVisible()
    qtbot.wait(50)                                                        # (the layout settles)
    assert panel.width() <= win.learn_dock.width()                        # a long path does not widen the dock
    for i, step in enumerate(panel.steps):                                # every good step still works
        if i:
            qtbot.mouseClick(panel.next_button, Qt.MouseButton.LeftButton)
        assert panel.index == i and f"Step {i + 1} of {len(panel.steps)}" in panel.title_label.text()
        assert len(panel.equation_labels) == len(step.equations)
        assert all(isinstance(lab, EquationLabel) for lab in panel.equation_labels)
        if not any(name == "sample" for name, _a in step.show):  # (sampling needs a model: test_gui_tour)
            qtbot.mouseClick(panel.show_button, Qt.MouseButton.LeftButton)
            assert panel.highlighted is HIGHLIGHTS[step.highlight](win)
    assert not panel.next_button.isEnabled()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["fifo", "brackets", "folder", "all_broken"])
def test_an_unusable_tour_leaves_the_app_running_with_one_line(tour_window, tmp_path, qtbot, kind):
    path, keyword = build_unusable(tmp_path)[kind]
    win = tour_window(path)
    assert win.learn_dock is None and win.isVisible()
    message = win.statusBar().currentMessage()
    one_line(message, path)
    assert keyword in message
    with qtbot.waitSignal(win.state.message, timeout=30_000) as blocker:   # Help ▸ Tour says it again
        win.tour_action.trigger()
    assert blocker.args == [message]
    win.show_panel(win.forward)                                          # the rest of the app is there
    assert win.tabs.currentWidget() is win.forward


def test_show_me_never_walks_attributes_even_for_a_step_made_in_code(window, qtbot):
    panel = window.learn_dock.panel
    good = panel.steps[0]
    panel.steps[0] = TourStep(good.id, good.title, (), good.text, (("tab", "__class__"),), GLOBALS)
    panel.go(0)
    with qtbot.waitSignal(window.state.message, timeout=30_000) as blocker:
        panel.show_me()
    assert "'__class__'" in blocker.args[0] and panel.highlighted is None
    panel.steps[0] = TourStep(good.id, good.title, (), good.text, (), GLOBALS)
    with qtbot.waitSignal(window.state.message, timeout=30_000):
        panel.show_me()
    assert panel.highlighted is None


def test_the_allow_lists_name_real_parts_of_the_window(window):
    from diffusion_studio.core.diffusion.samplers import SAMPLERS

    for name, get in HIGHLIGHTS.items():
        assert isinstance(get(window), QWidget), name
    for name, get in TABS.items():
        assert window.tabs.indexOf(get(window)) >= 0, name
    for name, get in DOCKS.items():
        assert isinstance(get(window), QDockWidget), name
    for title in SAMPLING_TABS:
        assert window.sampling.tabs.tab(title) is not None, title
    assert set(SAMPLER_NAMES) == set(SAMPLERS)
    assert {s.highlight for s in load_tour()} <= set(HIGHLIGHTS)


# ---- a fuzzer of the real tour file ---------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) |
                    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=12)
LONG = ["x" * 100_000, BOMB, HUGE_SUM, '<img src="/dev/zero">', GLOBALS, "\\hspace{100000}", "[" * 30, "",
        "steps", "sample", "tab", "forward", 10**300, -1, 0, 65, 100_001, 1e308]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def addresses(doc) -> list[tuple]:
    """Every address in the document (no recursion: a deepened value may be nested far)."""
    out, todo = [], [((), doc)]
    while todo:
        where, v = todo.pop()
        out.append(where)
        if isinstance(v, dict):
            todo += [((*where, k), x) for k, x in v.items()]
        elif isinstance(v, list):
            todo += [((*where, i), x) for i, x in enumerate(v)]
    return sorted(out, key=lambda a: (-len(a), repr(a)))   # the deep fields first: where the checks are


_DELETE = object()


def put(doc, where, value):
    if not where:
        return value
    parent = doc
    for k in where[:-1]:
        parent = parent[k]
    if value is _DELETE:
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    return doc


def get(doc, where):
    for k in where:
        doc = doc[k]
    return doc


def check_usable(step: TourStep) -> None:
    """What the Learn panel relies on in a step the loader let through."""
    assert isinstance(step.id, str) and isinstance(step.title, str) and len(step.text) <= MAX_TEXT
    assert all(equation_problem(e) is None for e in step.equations)
    assert step.highlight is None or step.highlight in HIGHLIGHTS
    for name, arg in step.show:
        assert name in ACTIONS and ACTIONS[name](arg) is None


@FUZZ
@given(st.data())
def test_fuzzed_tours_end_in_a_tour_error_or_named_problems(tmp_path_factory, data_):
    doc = shipped()
    for _ in range(data_.draw(st.integers(1, 4), label="mutations")):
        where = data_.draw(st.sampled_from(addresses(doc)), label="where")
        op = data_.draw(st.sampled_from(["replace", "delete", "deepen", "long"]), label="op")
        if op == "replace":
            doc = put(doc, where, data_.draw(JSON, label="value"))
        elif op == "delete" and where:
            doc = put(doc, where, _DELETE)
        elif op == "deepen":
            value = get(doc, where)
            for _k in range(data_.draw(st.integers(1, 30), label="levels")):
                value = [value] if data_.draw(st.booleans(), label="list") else {"k": value}
            doc = put(doc, where, value)
        else:
            doc = put(doc, where, data_.draw(st.sampled_from(LONG), label="long"))
    p = tmp_path_factory.mktemp("fuzz") / "tour.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    start = time.monotonic()
    try:
        tour = read_tour(p)
    except TourError as e:
        one_line(str(e), p)
    else:
        assert tour.steps
        for line in tour.problems:
            one_line(line, p)
        for step in tour.steps:
            check_usable(step)
    assert time.monotonic() - start < 2.0


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 30_000), junk=st.binary(max_size=16))
def test_cut_or_spliced_tour_files_end_in_a_tour_error_or_load(tmp_path_factory, cut, junk):
    raw = tour_path().read_bytes()
    p = tmp_path_factory.mktemp("cut") / "tour.json"
    p.write_bytes(raw[:cut] + junk + raw[cut + len(junk):])
    start = time.monotonic()
    try:
        for step in read_tour(p).steps:
            check_usable(step)
    except TourError as e:
        one_line(str(e), p)
    assert time.monotonic() - start < 2.0
