"""Every trial and every seed in MLflow, as a run tree that can be found again by tags.

One experiment per campaign, tagged as model training (``mlflow.experimentKind``, so that
MLflow's UI opens it on its runs, not on its GenAI overview). In it:

* the campaign's own run (``role=campaign``): its spec, protocol and report; RUNNING while
  a process works on the campaign, closed by the last one to end (``Tracker.working_on``);
* a parent run per study (tags ``role=study``, campaign, task, activation, study): best
  parameters and best value when the study is done;
* a nested child run per trial (``role=trial``, ``trial_number``): parameters, per-epoch
  metrics with step = epoch; status mirrors Optuna (complete -> FINISHED, pruned ->
  FINISHED with ``state=pruned``, fail -> FAILED with ``failure``);
* a run per repeat seed (``role=repeat``, ``seed``): per-epoch train/validation/test
  metrics, final metrics, the model (pt2, with signature and input example: ``model_format``),
  the data set with its digest, and an environment record; the best seed's model is
  registered. A seed whose training diverged is FAILED with ``state=diverged`` and
  ``failure``: an outcome, counted by the statistics as the worst one, never retrained.

MLflow is called directly (optuna-integration's callback is deprecated and makes flat
runs). Metrics are buffered per run and written in batches, at most every ``FLUSH_SECONDS``
and when the run ends: in line for a local store, by one background thread for a
tracking server (whose calls are mostly waiting on the network); ``Tracker.flush()``
waits for everything written so far and re-raises the first error.

The package, one idea a module:

* ``tracker``: ``Tracker``, the connection to the store and its ordered writes;
* ``runs``: the run tree (experiments, studies, trials, repeats) and ``RunLogger``;
* ``campaigns``: the campaign's own run, its spec digest and ``working_on``;
* ``holds``: which processes hold a campaign's run open (``bru.holder.*`` tags);
* ``models``: models, data sets and their digests, registration;
* ``provenance``: the environment record and git commit behind a run, and MLflow's own
  provenance tags (source, user, commit) that every run gets when it is created;
* ``server``: checking, starting and stopping an MLflow server;
* ``store``: what they all share (``TrackingError``, filter quoting, canonical JSON).
"""

import os

# Before mlflow is imported (every module below imports it, and Python runs this file
# first): no run links printed to stdout (they would corrupt --json output) and no
# telemetry (it costs CPU on every call, and most of our machines are offline).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import logging

from bru_core.tracking.campaigns import CampaignRecords, spec_digest
from bru_core.tracking.holds import HOLDER, holder_alive
from bru_core.tracking.models import ModelLogging, data_digest, model_format, run_slug
from bru_core.tracking.provenance import environment, git_commit, source_tags
from bru_core.tracking.runs import (
    DIVERGED,
    EXPERIMENT_KIND,
    FLUSH_SECONDS,
    MODEL_TRAINING,
    ROLE,
    RunLogger,
    RunTree,
    as_final,
    final_metrics,
    interrupted,
    runs_page,
)
from bru_core.tracking.server import check_server, start_server, stop_server, wait_healthy
from bru_core.tracking.store import TrackingError, dumps
from bru_core.tracking.tracker import Tracker

# "Creating initial MLflow database tables..." on every new store is not news to our users.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

__all__ = [
    "DIVERGED",
    "EXPERIMENT_KIND",
    "FLUSH_SECONDS",
    "HOLDER",
    "MODEL_TRAINING",
    "ROLE",
    "CampaignRecords",
    "ModelLogging",
    "RunLogger",
    "RunTree",
    "Tracker",
    "TrackingError",
    "as_final",
    "check_server",
    "data_digest",
    "dumps",
    "environment",
    "final_metrics",
    "git_commit",
    "holder_alive",
    "interrupted",
    "model_format",
    "run_slug",
    "runs_page",
    "source_tags",
    "spec_digest",
    "start_server",
    "stop_server",
    "wait_healthy",
]
