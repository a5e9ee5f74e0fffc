"""The guided tour's data: resources/tour.json read safely and checked field by field (broken steps named, left out)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...core.diffusion.schedule import DEFAULT_PARAMS, KINDS, MAX_T, NoiseSchedule
from ...core.io.safeio import read_regular
from ...resources import resources_dir
from ..panels.forward.extras import SCALES
from ..panels.sampling.controls import SAMPLERS
from ..widgets.mathtext import equation_problem

MAX_TOUR_BYTES = 1 << 20          # the shipped tour is 25 KB
MAX_JSON_DEPTH = 20               # the tour itself is 6 deep (doc → steps → step → show → pair → spec)
MAX_STEPS, MAX_SHOW, MAX_EQUATIONS = 100, 16, 8
MAX_ID, MAX_TITLE, MAX_TEXT = 64, 200, 4000
MAX_PARAM = 1e6                   # a schedule parameter's size (they are all small numbers: βs, s, a range)
TEXT_TAGS = ("b", "i", "u", "em", "strong", "sub", "sup", "tt", "code", "br", "p")   # no <img>: it reads files
TOP_KEYS = ("about", "version", "steps")
STEP_KEYS = ("id", "title", "equations", "text", "show", "highlight")

Getter = Callable[[Any], Any]
# What the tour may name in the main window: an allow-list of getters, never an attribute path walked with getattr.
TABS: dict[str, Getter] = {
    "forward": lambda w: w.forward, "training": lambda w: w.training, "sampling": lambda w: w.sampling,
    "likelihood": lambda w: w.likelihood, "autoencoder": lambda w: w.autoencoder, "geometry": lambda w: w.geometry}
DOCKS: dict[str, Getter] = {"images": lambda w: w.images_dock, "schedule": lambda w: w.schedule_dock}
HIGHLIGHTS: dict[str, Getter] = {
    "tabs": lambda w: w.tabs,
    "images": lambda w: w.images, "images.thumbnails": lambda w: w.images.thumbnails,
    "forward.x0_pane": lambda w: w.forward.x0_pane, "forward.noise_pane": lambda w: w.forward.noise_pane,
    "forward.xt_pane": lambda w: w.forward.xt_pane, "forward.slider": lambda w: w.forward.slider,
    "forward.chain_check": lambda w: w.forward.chain_check, "forward.film_pane": lambda w: w.forward.film_pane,
    "forward.extras.histogram": lambda w: w.forward.extras.histogram,
    "forward.extras.colour_bar": lambda w: w.forward.extras.colour_bar,
    "forward.extras.scale_combo": lambda w: w.forward.extras.scale_combo,
    "schedule.form": lambda w: w.schedule.form, "schedule.plots": lambda w: w.schedule.plots,
    "schedule.log_beta": lambda w: w.schedule.log_beta, "schedule.compare": lambda w: w.schedule.compare,
    "schedule.compare_form": lambda w: w.schedule.compare_form, "schedule.readout": lambda w: w.schedule.readout,
    "training.form": lambda w: w.training.form, "training.view": lambda w: w.training.view,
    "training.start_button": lambda w: w.training.start_button,
    "training.view.loss_plot": lambda w: w.training.view.loss_plot,
    "training.view.fid_plot": lambda w: w.training.view.fid_plot,
    "training.view.preview": lambda w: w.training.view.preview,
    "training.form.objective_combo": lambda w: w.training.form.objective_combo,
    "training.form.fid_check": lambda w: w.training.form.fid_check,
    "sampling.controls": lambda w: w.sampling.controls,
    "sampling.controls.sampler_combo": lambda w: w.sampling.controls.sampler_combo,
    "sampling.controls.steps_spin": lambda w: w.sampling.controls.steps_spin,
    "sampling.controls.eta_spin": lambda w: w.sampling.controls.eta_spin,
    "sampling.sample_button": lambda w: w.sampling.sample_button, "sampling.x_pane": lambda w: w.sampling.x_pane,
    "sampling.x0_pane": lambda w: w.sampling.x0_pane, "sampling.eps_pane": lambda w: w.sampling.eps_pane,
    "sampling.tabs": lambda w: w.sampling.tabs,
    "likelihood": lambda w: w.likelihood, "likelihood.terms_plot": lambda w: w.likelihood.terms_plot,
    "autoencoder": lambda w: w.autoencoder, "autoencoder.latent_pane": lambda w: w.autoencoder.latent_pane,
    "autoencoder.loss_plot": lambda w: w.autoencoder.loss_plot, "geometry": lambda w: w.geometry,
    "geometry.plots": lambda w: w.geometry.plots,
}
# the Sampling tab's own tabs (panels/sampling: tabs.py, lab.py, latent.py, text.py)
SAMPLING_TABS = ("Run curves", "Compare", "Quality", "Latent", "Attention")
SAMPLER_NAMES = tuple(dict.fromkeys(s for _text, s, _v in SAMPLERS))         # the Sampling tab's sampler choices
VARIANCES = tuple(dict.fromkeys(v for _text, _s, v in SAMPLERS))
SAMPLER_CHOICES = frozenset((s, v) for _text, s, v in SAMPLERS)
SCALE_VALUES = tuple(v for v, _text in SCALES)                                # the Forward tab's colour scales
SAMPLE_STEPS, SAMPLE_N = (1, MAX_T), (1, 64)                                  # the Steps and Images spin boxes


class TourError(ValueError):
    """The tour file cannot be used; the message is one line naming the file and the field."""


class _Bad(Exception):
    """One field's problem: where it is ("steps[3].highlight") and why."""

    def __init__(self, where: str, reason: str):
        super().__init__(where, reason)
        self.where, self.reason = where, reason


@dataclass(frozen=True)
class TourStep:
    id: str
    title: str
    equations: tuple[str, ...]
    text: str
    show: tuple[tuple[str, object], ...]
    highlight: str | None


@dataclass
class Tour:
    """The usable steps, and one line for each thing left out ("<file>: steps[3].highlight: …")."""
    path: Path
    steps: list[TourStep]
    problems: list[str] = field(default_factory=list)


def tour_path() -> Path:
    return resources_dir() / "tour.json"


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a value from the file may be a megabyte long)."""
    if isinstance(value, (list, dict)) and len(value) > 20:
        return f"a {type(value).__name__} of {len(value):,} items"
    text = repr(value[:limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---- reading --------------------------------------------------------------------------------------------------------
_JSON_SPECIAL = re.compile(r'["\\\[\]{}]')


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """The deepest nesting of [ and { in a JSON text (strings skipped); one pass, no recursion, and it stops as
    soon as ``limit`` is passed (so 100,000 opening brackets cost a few microseconds)."""
    depth = deepest = 0
    in_string, escaped_at = False, -1
    for m in _JSON_SPECIAL.finditer(text):
        c, at = m.group(), m.start()
        if in_string:
            if at == escaped_at:
                continue
            if c == "\\":
                escaped_at = at + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit:
                break
        elif depth:  # ] or }
            depth -= 1
    return deepest


def _read_json(path: Path) -> Any:
    raw = read_regular(path, MAX_TOUR_BYTES, lambda p, reason: TourError(f"{p}: {reason}"), "tour")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TourError(f"{path}: not JSON (not UTF-8 text: byte {exc.start})") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise TourError(f"{path}: not a tour (nested more than {MAX_JSON_DEPTH} deep)")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an integer of more than 4,300 digits
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TourError(f"{path}: not JSON ({first[:120]})") from None


# ---- the checks: each returns why a value is wrong, or None ----------------------------------------------------------
Check = Callable[[Any], "str | None"]


def whole(lo: int, hi: int) -> Check:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return f"must be a whole number from {lo} to {hi}, got {short(v)}"
    return check


def number(lo: float, hi: float) -> Check:
    def check(v):  # NaN and ±Infinity fail the comparison
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            return f"must be a number from {lo:g} to {hi:g}, got {short(v)}"
    return check


def boolean(v) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {short(v)}"


def one_of(choices) -> Check:
    def check(v):
        if not isinstance(v, str) or v not in choices:
            return f"must be one of {', '.join(choices)}, got {short(v)}"
    return check


def colour_scale(v) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v not in SCALE_VALUES:
        return f"must be one of {', '.join(f'{s:g}' for s in SCALE_VALUES)}, got {short(v)}"
    return None


def obj(fields: dict[str, Check]) -> Check:
    def check(v):
        if not isinstance(v, dict):
            return f"must be an object with {', '.join(fields)}, got {short(v)}"
        for key, value in v.items():
            if key not in fields:
                return f"unknown key {short(key)} (known: {', '.join(fields)})"
            reason = fields[key](value)
            if reason:
                return f"\"{key}\" {reason}"
        return None
    return check


def schedule_spec(default_kind: str) -> Check:
    """{"kind", "T", and the kind's parameters}: each checked, then the schedule made once to see that it can be."""
    def check(v):
        if not isinstance(v, dict):
            return f"must be an object with kind, T and the schedule's parameters, got {short(v)}"
        kind = v.get("kind", default_kind)
        reason = one_of(KINDS)(kind)
        if reason:
            return f"\"kind\" {reason}"
        params = {k: number(-MAX_PARAM, MAX_PARAM) for k in DEFAULT_PARAMS[kind]}
        reason = obj({"kind": one_of(KINDS), "T": whole(2, MAX_T), **params})(v)
        if reason:
            return reason
        try:
            NoiseSchedule.create(kind, v.get("T", 1000), **{k: float(x) for k, x in v.items() if k in params})
        except (ValueError, TypeError, OverflowError) as exc:
            return f"is not a schedule the app can make ({str(exc)[:120]})"
        return None
    return check


_SAMPLE_FIELDS = obj({"sampler": one_of(SAMPLER_NAMES), "variance": one_of(VARIANCES), "steps": whole(*SAMPLE_STEPS),
                      "n": whole(*SAMPLE_N), "eta": number(0.0, 1.0)})


def sample_spec(v) -> str | None:
    """What TourActions.do_sample reads: sampler, variance (DDPM's σ²), steps, n, eta; the pair must be a choice."""
    reason = _SAMPLE_FIELDS(v)
    if reason:
        return reason
    sampler, variance = v.get("sampler", "ddim"), v.get("variance", "beta_tilde")
    if sampler != "ddim" and (sampler, variance) not in SAMPLER_CHOICES:
        return f"\"variance\" {variance!r} is not offered for {sampler}"
    return None


def t_range(v) -> str | None:
    """[first t, last t] of the Schedule dock's t axis (the paper's t, first < last), or false for all of 0 … T."""
    if v is False:
        return None
    if not (isinstance(v, list) and len(v) == 2):
        return f"must be [first t, last t] or false, got {short(v)}"
    for x in v:
        reason = whole(0, MAX_T)(x)
        if reason:
            return reason
    if v[0] >= v[1]:
        return f"must be [first t, last t] with the first below the last, got {short(v)}"
    return None


def model_name(v) -> str | None:
    """A shipped model's name (resources/models/NAME); one that is not shipped is said at Show me, not here."""
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v) or ".." in v:
        return f"must be the name of a shipped model (letters, digits, - _ .), got {short(v)}"
    return None


def compare_spec(v) -> str | None:
    return None if isinstance(v, bool) else schedule_spec("cosine")(v)


# action name → the check of its argument (what TourActions.do_<name> does with it, and nothing else)
ACTIONS: dict[str, Check] = {
    "tab": one_of(tuple(TABS)), "dock": one_of(tuple(DOCKS)), "image": one_of(("sample",)),
    "schedule": schedule_spec("linear"), "t": whole(1, MAX_T), "chain": boolean, "colour_scale": colour_scale,
    "log_beta": boolean, "t_range": t_range, "compare": compare_spec, "sample": sample_spec,
    "sampling_tab": one_of(SAMPLING_TABS), "model": model_name,
}

_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)\s*/?>")


def rich_text_problem(text: str) -> str | None:
    """Qt rich text with only the simple tags (an <img> would read any file, a style could ask for a huge font)."""
    for m in re.finditer("<", text):
        tag = _TAG.match(text, m.start())
        if tag is None or tag.group(2).lower() not in TEXT_TAGS:
            return (f"may use only the tags <{'> <'.join(TEXT_TAGS)}> without attributes (write &lt; for a <), "
                    f"found {short(text[m.start():m.start() + 30])}")
    return None


def _key(key: str) -> str:
    """A key from the file as a field name: ``hightlight``, or ``['a b…']`` for anything stranger."""
    return key if key.isidentifier() and len(key) <= 40 else f"[{short(key, 40)}]"


def _string(s: dict, key: str, where: str, limit: int) -> str:
    v = s.get(key)
    if not isinstance(v, str) or not v.strip():
        raise _Bad(f"{where}.{key}", f"must be a non-empty string, got {short(v)}")
    if len(v) > limit:
        raise _Bad(f"{where}.{key}", f"{len(v):,} characters is longer than it may be ({limit:,})")
    return v


def _step(s: Any, where: str, seen: set[str]) -> TourStep:
    if not isinstance(s, dict):
        raise _Bad(where, f"must be an object with {', '.join(STEP_KEYS)}, got {short(s)}")
    for key in s:
        if key not in STEP_KEYS:
            raise _Bad(f"{where}.{_key(key)}", f"unknown key (known: {', '.join(STEP_KEYS)})")
    sid = _string(s, "id", where, MAX_ID)
    if sid in seen:
        raise _Bad(f"{where}.id", f"{short(sid)} is used twice")
    title, text = _string(s, "title", where, MAX_TITLE), _string(s, "text", where, MAX_TEXT)
    reason = rich_text_problem(text)
    if reason:
        raise _Bad(f"{where}.text", reason)
    eqs = s.get("equations", [])
    if not isinstance(eqs, list) or len(eqs) > MAX_EQUATIONS:
        raise _Bad(f"{where}.equations", f"must be a list of at most {MAX_EQUATIONS} equations, got {short(eqs)}")
    for j, tex in enumerate(eqs):
        reason = equation_problem(tex)
        if reason:
            raise _Bad(f"{where}.equations[{j}]", reason if isinstance(tex, str) else f"{reason}, got {short(tex)}")
    show = s.get("show", [])
    if not isinstance(show, list) or len(show) > MAX_SHOW:
        raise _Bad(f"{where}.show", f"must be a list of at most {MAX_SHOW} [action, argument] pairs, "
                                    f"got {short(show)}")
    actions = []
    for j, a in enumerate(show):
        if not (isinstance(a, list) and len(a) == 2 and isinstance(a[0], str)):
            raise _Bad(f"{where}.show[{j}]", f"must be [action, argument], got {short(a)}")
        name, arg = a
        if name not in ACTIONS:
            raise _Bad(f"{where}.show[{j}]", f"unknown action {short(name)} (known: {', '.join(ACTIONS)})")
        reason = ACTIONS[name](arg)
        if reason:
            raise _Bad(f"{where}.show[{j}]", f"{name}'s argument {reason}")
        actions.append((name, arg))
    hl = s.get("highlight")
    if hl is not None and (not isinstance(hl, str) or hl not in HIGHLIGHTS):
        raise _Bad(f"{where}.highlight", f"not a widget the tour can point at (known: {', '.join(HIGHLIGHTS)}), "
                                         f"got {short(hl)}")
    return TourStep(sid, title, tuple(eqs), text, tuple(actions), hl)


def read_tour(path: str | Path | None = None) -> Tour:
    """The tour in ``path`` (the shipped one by default) with every broken step left out and named; TourError (one
    line) only when nothing of it can be used: unreadable, not JSON, nested too deeply, or no usable step."""
    path = Path(path) if path is not None else tour_path()
    doc = _read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list) or not doc["steps"]:
        raise TourError(f"{path}: needs a non-empty list \"steps\"")
    problems: list[str] = []
    for key in doc:
        if key not in TOP_KEYS:
            problems.append(f"{path}: {_key(key)}: unknown key (known: {', '.join(TOP_KEYS)})")
    if not isinstance(doc.get("about", ""), str):
        problems.append(f"{path}: about: must be a string, got {short(doc['about'])}")
    if doc.get("version", 1) != 1 or isinstance(doc.get("version"), bool):
        problems.append(f"{path}: version: this app reads version 1, got {short(doc['version'])}")
    raw = doc["steps"]
    if len(raw) > MAX_STEPS:
        problems.append(f"{path}: steps: {len(raw):,} steps, more than {MAX_STEPS}; the rest are left out")
    steps: list[TourStep] = []
    seen: set[str] = set()
    step_problems: list[str] = []
    for i, s in enumerate(raw[:MAX_STEPS]):
        try:
            step = _step(s, f"steps[{i}]", seen)
        except _Bad as bad:
            step_problems.append(f"{path}: {bad.where}: {bad.reason}")
            continue
        seen.add(step.id)
        steps.append(step)
    problems += step_problems
    if not steps:
        raise TourError(f"{step_problems[0]} (no step of the tour is left to show)")
    return Tour(path, steps, problems)


def load_tour(path: str | Path | None = None) -> list[TourStep]:
    """Every step of the tour, or TourError naming the first problem (a strict check of a whole file)."""
    tour = read_tour(path)
    if tour.problems:
        raise TourError(tour.problems[0])
    return tour.steps
