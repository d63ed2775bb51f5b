"""The MLflow side of one Snakemake invocation (the workflow's hooks call it; tested on its own,
``tests/tracking/test_workflow_tracking.py``): the store checked at parse time, the parent run opened
after Snakemake holds its lock and closed when the workflow ends, tracking switched off for the
jobs when the parameters say so or when an optional store is unusable."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from pipeline import tracking
from pipeline.config import params_hash
from pipeline.errors import InputError


class TrackingStartError(InputError):
    """A required tracking store that cannot be used at start: one line, the run stops."""


@dataclass(frozen=True)
class PipelineTracking:
    """``params``: the run's resolved parameters; ``source``: the parameter file they came from."""

    params: Mapping[str, Any]
    source: str

    @property
    def enabled(self) -> bool:
        return bool(self.params["tracking"]["enabled"])

    @property
    def uri(self) -> str:
        return tracking.resolve_uri(self.params["tracking"]["uri"])

    def at_parse(self) -> None:
        """Before any job: tracking off reaches the jobs through the environment; an empty store
        file must not be silently replaced by a new store (raises ``tracking.TrackingError``)."""
        if not self.enabled:
            os.environ[tracking.DISABLE_ENV] = "1"
            return
        tracking.check_store_file(self.uri)

    def start(self, *, touch: bool = False) -> str | None:
        """The parent run of this invocation (none for ``--touch``). A store that fails stops the
        run (:class:`TrackingStartError`) unless ``tracking.required`` is false: then the jobs go
        on without tracking, and the one warning line to print is returned."""
        if not self.enabled or touch:
            return None
        t = self.params["tracking"]
        try:
            tracking.start_pipeline(
                self.params["run"]["name"], uri=self.uri,
                experiment=os.environ.get(tracking.EXPERIMENT_ENV) or t["experiment"],
                params=self.params,
                tags={tracking.TAG_PARAMS_HASH: params_hash(self.params),
                      "scalenas.params_file": self.source})
        except tracking.TrackingError as e:
            if t["required"]:
                raise TrackingStartError(str(e)) from e
            # Said once here; the jobs inherit the switch and do not try again.
            os.environ[tracking.DISABLE_ENV] = "1"
            return f"warning: tracking.required is false, running without MLflow: {e}"
        return None

    def end(self, success: bool, *, touch: bool = False) -> str | None:
        """Close the parent run (FINISHED or FAILED); a line to print when the store is gone."""
        if not self.enabled or touch:
            return None
        return tracking.end_pipeline(success)
