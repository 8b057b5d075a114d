"""Evaluation of frozen features: k-NN (as DINO), linear probes, baselines and reports."""

from hjepa.evaluation.linear_probe import linear_probe, logreg_probe
from hjepa.evaluation.report import build_report, format_table, read_report, report_rows, write_report
from hjepa.inference.artifacts.hashing import file_sha256
from hjepa.inference.features.cache import FeatureCache
from hjepa.inference.features.knn import knn_classify, knn_evaluate, knn_neighbours, knn_scores, top_k_accuracy


def __getattr__(name: str):  # the runtimes load only when asked for
    if name == "evaluate":
        from hjepa.evaluation.run import evaluate

        return evaluate
    if name == "resolve_source":
        from hjepa.evaluation.sources import resolve_source

        return resolve_source
    raise AttributeError(name)


__all__ = [
    "FeatureCache",
    "evaluate",
    "resolve_source",
    "build_report",
    "file_sha256",
    "format_table",
    "knn_classify",
    "knn_evaluate",
    "knn_neighbours",
    "knn_scores",
    "linear_probe",
    "logreg_probe",
    "read_report",
    "report_rows",
    "top_k_accuracy",
    "write_report",
]
