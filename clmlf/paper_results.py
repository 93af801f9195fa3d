"""The CLMLF paper's published results on the aspect-based sets (Appendix B), for reports to set beside ours.

Test accuracy and F1 of the model selected on dev, keyed by data set and by the model variant of this project that
the paper's row corresponds to. For these sets the paper reports macro F1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperResult:
    row: str
    acc: float
    f1: float
    # Where the figures are printed in the paper.
    table: str


# BERT is the text-only baseline (BERT fine-tuned on "[CLS] sentence [SEP] aspect [SEP]"), CLMLF the full model.
PAPER_RESULTS: dict[str, dict[str, PaperResult]] = {
    "twitter2015": {
        "text-only": PaperResult("BERT", 0.7387, 0.7023, "Table 6"),
        "full": PaperResult("CLMLF", 0.7811, 0.7460, "Table 6"),
    },
    "twitter2017": {
        "text-only": PaperResult("BERT", 0.6848, 0.6553, "Table 6"),
        "full": PaperResult("CLMLF", 0.7098, 0.6913, "Table 6"),
    },
}
PAPER_F1 = {"twitter2015": "f1_macro", "twitter2017": "f1_macro"}
