"""Metrics and statistics shared by every track (issue 3).

Submodules (imported on demand so that ``import leverplus.metrics`` stays light):

* :mod:`leverplus.metrics.vqa` -- official VQA accuracy (+ optional OK-VQA stemming)
* :mod:`leverplus.metrics.text` -- BLEU, chrF/chrF++, TER, ROUGE, CIDEr-D, BERTScore, lengths
* :mod:`leverplus.metrics.classification` -- accuracy, P/R/F1, macro-F1, AUC-ROC, confusion matrix
* :mod:`leverplus.metrics.latency` -- TTFT, total time, decode and end-to-end rates
* :mod:`leverplus.metrics.stats` -- bootstrap CIs, paired bootstrap, McNemar
* :mod:`leverplus.metrics.signature` -- signature strings
* :mod:`leverplus.metrics.io` -- JSONL/parquet reading and id alignment

The command line (``leverplus score`` / ``leverplus compare``) is in :mod:`leverplus.cli`;
file columns are documented in ``docs/metrics.md``.
"""

__all__ = ["vqa", "text", "classification", "latency", "stats", "signature", "io"]
