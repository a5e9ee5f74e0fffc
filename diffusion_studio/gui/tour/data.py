"""The guided tour's data: resources/tour.json read and checked (one-line errors naming the file and the field)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...resources import resources_dir

MAX_TOUR_BYTES = 1 << 20
# action name → the JSON types its argument may have
ACTIONS: dict[str, tuple[type, ...]] = {
    "tab": (str,), "dock": (str,), "image": (str,), "schedule": (dict,), "t": (int,), "chain": (bool,),
    "colour_scale": (int, float), "log_beta": (bool,), "compare": (dict, bool), "sample": (dict,),
    "sampling_tab": (str,),
}


class TourError(ValueError):
    """The tour file cannot be used; the message is one line naming the file and the field."""


@dataclass(frozen=True)
class TourStep:
    id: str
    title: str
    equations: tuple[str, ...]
    text: str
    show: tuple[tuple[str, object], ...]
    highlight: str | None


def tour_path() -> Path:
    return resources_dir() / "tour.json"


def load_tour(path: str | Path | None = None) -> list[TourStep]:
    path = Path(path) if path is not None else tour_path()
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOUR_BYTES + 1)
    except OSError as exc:
        raise TourError(f"{path}: cannot read the tour ({exc.strerror or exc})") from None
    if len(raw) > MAX_TOUR_BYTES:
        raise TourError(f"{path}: larger than {MAX_TOUR_BYTES} bytes, not a tour")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TourError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list) or not doc["steps"]:
        raise TourError(f"{path}: needs a non-empty list \"steps\"")
    steps, seen = [], set()
    for i, s in enumerate(doc["steps"]):
        where = f"{path}: steps[{i}]"
        if not isinstance(s, dict):
            raise TourError(f"{where}: must be an object")
        for key in ("id", "title", "text"):
            if not isinstance(s.get(key), str) or not s[key].strip():
                raise TourError(f"{where}.{key}: must be a non-empty string")
        if s["id"] in seen:
            raise TourError(f"{where}.id: {s['id']!r} is used twice")
        seen.add(s["id"])
        eqs = s.get("equations", [])
        if not isinstance(eqs, list) or not all(isinstance(e, str) and e.strip() for e in eqs):
            raise TourError(f"{where}.equations: must be a list of strings")
        show = s.get("show", [])
        if not isinstance(show, list):
            raise TourError(f"{where}.show: must be a list of [action, argument] pairs")
        actions = []
        for j, a in enumerate(show):
            if not (isinstance(a, list) and len(a) == 2 and isinstance(a[0], str)):
                raise TourError(f"{where}.show[{j}]: must be [action, argument]")
            name, arg = a
            if name not in ACTIONS:
                raise TourError(f"{where}.show[{j}]: unknown action {name!r} (known: {', '.join(ACTIONS)})")
            types = ACTIONS[name]
            if not isinstance(arg, types) or (isinstance(arg, bool) and bool not in types):
                raise TourError(f"{where}.show[{j}]: {name} takes {' or '.join(t.__name__ for t in types)}, "
                                f"got {arg!r}")
            actions.append((name, arg))
        hl = s.get("highlight")
        if hl is not None and (not isinstance(hl, str) or not hl.strip()):
            raise TourError(f"{where}.highlight: must be an attribute path such as \"forward.xt_pane\"")
        steps.append(TourStep(s["id"], s["title"], tuple(eqs), s["text"], tuple(actions), hl))
    return steps
