"""Scoring a network on a labelled split: the one code path behind every figure.

The search's candidates, the training stages' checks, fine-tuning's inherited / fine-tuned /
reloaded figures and ``scalenas eval`` all score through :func:`score` (the task plug-in's metric,
:mod:`pipeline.tasks`), and a subnet of a supernet through :func:`evaluate_subnet` (architecture,
BN calibration, score). ``scalenas eval`` (:mod:`pipeline.evaluate.cli`) adds what a user needs
around it: loading what to evaluate (:mod:`pipeline.evaluate.sources`), the data checks and the
release's protocol (:mod:`pipeline.evaluate.protocol`), the printed tables and ``results.json``.

It is a package of its own, not part of ``pipeline/infer/`` (predictions on unlabelled images) nor
of ``pipeline/search/``: its core sits below search and fine-tuning, which import it, and its
command needs the data checks that ``prepare`` runs.
"""
from __future__ import annotations

from .score import EvaluationError, evaluate_subnet, score

__all__ = ["EvaluationError", "evaluate_subnet", "score"]
