"""Which traces' entities rightsizing may be tuned on, and which are kept for evaluation.

Every constant of rightsizing (profile targets, factors, smoothing, pooling, the
estimators' settings) is chosen on the *tuning* part of the shared traces only; the
replay benchmark reports the *evaluation* part, which no tuning code reads.

The rule, fixed once: an entity (the part of ``unique_id`` after the metric, e.g. the
Bitbrains VM ``vm100``, the Alibaba 2018 machine ``m_1932``, a GenAI pod's hash) is in
the tuning part when the first 8 hex digits of
``sha256("foresight-rightsizing-split:<trace>:<entity>")``, read as an integer, modulo
100, are below ``TUNING_SHARE_PERCENT`` (50); otherwise it is in the evaluation part.
Every metric of one entity falls in the same part (a VM's CPU and memory are never split).
The rule depends on nothing but the names, so adding a trace or a series never moves an
existing entity from one part to the other.

On the shared data (``../shared/data``): Bitbrains ``bitbrains_rnd/2013-8`` 11 of 25
VMs for tuning (the broken VM 20 among them) and 14 for evaluation; Alibaba 2018
machines 9 of 16 for tuning, 7 for evaluation; Alibaba GenAI pods 114 of 207 for tuning,
93 for evaluation.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pandas as pd

from foresight_lib.errors import ConfigError
from foresight_lib.frames import split_unique_id

SALT = "foresight-rightsizing-split"
TUNING_SHARE_PERCENT = 50
TUNING = "tuning"
EVALUATION = "evaluation"
PARTS = (TUNING, EVALUATION)
TRACES = ("bitbrains", "alibaba2018", "alibaba_genai")
"""The shared traces, named by their loader format."""


class EvaluationDataError(ConfigError):
    """Tuning code was handed a series of the evaluation part."""


def entity_of(unique_id: str) -> str:
    """The entity of a ``<metric>/<entity>`` id (an id without a metric is its own entity)."""
    return split_unique_id(unique_id)[1] if "/" in unique_id else unique_id


def bucket(trace: str, entity: str) -> int:
    """The entity's bucket in [0, 100): the first 8 hex digits of the salted sha256, modulo 100."""
    digest = hashlib.sha256(f"{SALT}:{trace}:{entity}".encode()).hexdigest()
    return int(digest[:8], 16) % 100


def part_of(trace: str, unique_id: str) -> str:
    """``"tuning"`` or ``"evaluation"``: the part the series (or entity) ``unique_id`` of ``trace`` is in."""
    if trace not in TRACES:
        raise ConfigError(f"unknown trace '{trace}' for the rightsizing split; choose from {list(TRACES)}")
    return TUNING if bucket(trace, entity_of(str(unique_id))) < TUNING_SHARE_PERCENT else EVALUATION


def ids_in(trace: str, ids: Iterable[str], part: str) -> list[str]:
    """The ids of ``ids`` in ``part``, in their order."""
    if part not in PARTS:
        raise ConfigError(f"unknown part '{part}'; choose from {list(PARTS)}")
    return [str(i) for i in ids if part_of(trace, str(i)) == part]


def keep_part(frame: pd.DataFrame, trace: str, part: str) -> pd.DataFrame:
    """The rows of a long frame (``unique_id`` column) whose series are in ``part``."""
    ids = frame["unique_id"].astype(str).unique()
    keep = set(ids_in(trace, ids, part))
    return frame[frame["unique_id"].astype(str).isin(keep)].reset_index(drop=True)


def require_tuning(trace: str, ids: Iterable[str]) -> list[str]:
    """``ids`` as a list, after checking that every one is in the tuning part.

    Raises:
        EvaluationDataError: naming the evaluation ids; tuning must not read them.
    """
    ids = [str(i) for i in ids]
    leaked = [i for i in ids if part_of(trace, i) != TUNING]
    if leaked:
        raise EvaluationDataError(
            f"{len(leaked)} series of the evaluation part of {trace} handed to tuning code "
            f"(the first: {leaked[:3]}); tune on splits.ids_in(trace, ids, 'tuning') only")
    return ids
