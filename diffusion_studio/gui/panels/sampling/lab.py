"""The sampler lab's two tabs in the Sampling view: Compare (samplers from one x_T) and Quality (score and FID
against model evaluations)."""
from __future__ import annotations

from .compare import CompareView
from .quality import QualityView


def install(panel) -> None:
    """Thin call site for SamplingPanel: the two tabs, and the Quality tab following the model in use."""
    panel.compare_view = CompareView(panel)
    panel.tabs.add_tab(panel.compare_view, "Compare", tip="several samplers from the same x_T, side by side")
    panel.quality_view = QualityView(panel)
    panel.tabs.add_tab(panel.quality_view, "Quality", tip="sample quality against the number of model evaluations")
    panel.model_loaded.connect(panel.quality_view.set_model)
