"""The audit's jobs as the workflow plans them, checked before any job starts.

:func:`plan` reads the resolved parameters and returns, per audited task, the slots (one
stand-alone network each: ``a00``.. ranked, ``<model>.random`` / ``<model>.uniform`` per
fine-tune model) and the seeds. Bad input is one :class:`~pipeline.audit.choose.AuditError` line
naming the file and key: a task the run does not search, K larger than the pool the search
evaluates. (A budget of 0 iterations or epochs is refused by the schema.)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .choose import AuditError, check_k, comparison_slots, pool_size_bound, ranked_slot


def audit_tasks(params: Mapping[str, Any], source: str) -> list[str]:
    """The tasks ``audit_all`` audits (``audit.tasks``, empty = every task of the run)."""
    run_tasks = list(params["tasks"])
    asked = list(params["audit"]["tasks"]) or run_tasks
    for t in asked:
        if t not in run_tasks:
            raise AuditError(f"{source}: audit.tasks: {t} is not searched by this run "
                             f"(tasks: {run_tasks}); an audit ranks what a search evaluated")
    return asked


def requests_audit(targets: Sequence[str] | None) -> bool:
    """Whether a run of these Snakemake targets includes audit jobs (the default target never
    does)."""
    return any(str(t).startswith("audit") or "/audit" in str(t) for t in (targets or ()))


def plan_or_error(params: Mapping[str, Any], source: str,
                  finetune_models: Mapping[str, Sequence[str]]
                  ) -> tuple[dict[str, dict[str, Any]], str | None]:
    """:func:`plan`, or (the jobs of the valid tasks, the error line): the workflow reports the
    error only when the run asks for the audit, so that parameters which cannot be audited (a
    tiny search smaller than K) still run the pipeline."""
    try:
        return plan(params, source, finetune_models), None
    except AuditError as e:
        tasks = [t for t in (params["audit"]["tasks"] or params["tasks"]) if t in params["tasks"]]
        return {t: _jobs(params, t, finetune_models) for t in tasks}, str(e)


def _jobs(params: Mapping[str, Any], task: str,
          finetune_models: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    sec = params["audit"][task]
    models = list(finetune_models.get(task, []))
    return {"slots": [ranked_slot(i) for i in range(int(sec["archs"]))] + comparison_slots(models),
            "seeds": [int(s) for s in sec["seeds"]]}


def pool_size(params: Mapping[str, Any]) -> int:
    """Candidates the search evaluates (sampling grid + every generation's children)."""
    r, e = params["search"]["random"], params["search"]["evolution"]
    return pool_size_bound(len(r["fusion_probs"]) * len(r["depth_candidates"]),
                           int(r["samples_per_cell"]), int(e["generations"]), int(e["population"]))


def plan(params: Mapping[str, Any], source: str,
         finetune_models: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """``{task: {"slots": [...], "seeds": [...]}}`` for every audited task."""
    out = {}
    pool = pool_size(params)
    for t in audit_tasks(params, source):
        sec = params["audit"][t]
        k = int(sec["archs"])
        check_k(k, pool, f"{source}: audit.{t}")
        models = list(finetune_models.get(t, []))
        if 3 + len(models) > k:
            raise AuditError(f"{source}: audit.{t}.archs: {k} is fewer than the {3 + len(models)} "
                             "architectures every audit trains (smallest, largest, HRNet and "
                             f"the fine-tune models {models})")
        out[t] = _jobs(params, t, finetune_models)
    return out
