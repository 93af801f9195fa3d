"""The CLMLF paper's published results (Li et al., Findings of NAACL 2022), for reports to set beside ours.

Test accuracy and F1 of the model selected on dev, keyed by data set and by the model variant of this project that
the paper's row corresponds to, each with the tables that print it. The paper's F1 is weighted for the MVSA sets
and macro for HFM and the aspect-based Twitter sets: each data set's selection metric here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperResult:
    row: str
    acc: float
    f1: float
    # The paper's tables that print these figures.
    tables: tuple[str, ...]

    @property
    def source(self) -> str:
        return tables_label(self.tables)


def tables_label(tables: Sequence[str]) -> str:
    """Tables as a label: "Table 3", "Tables 1, 3"."""
    numbers = ", ".join(table.removeprefix("Table ") for table in tables)
    return f"Table{'s' if len(tables) > 1 else ''} {numbers}"


def _ablation_rows(figures: dict[str, tuple[float, float]]) -> dict[str, PaperResult]:
    """Table 3's six rows of one data set; its unimodal baselines and its CLMLF row are Table 1's too."""
    names = {
        "text-only": "BERT",
        "image-only": "ResNet-50",
        "mlf": "+MLF",
        "mlf-lbcl": "+MLF, LBCL",
        "mlf-dbcl": "+MLF, DBCL",
        "full": "CLMLF",
    }
    in_table_1 = ("text-only", "image-only", "full")
    return {
        variant: PaperResult(names[variant], acc, f1, ("Table 1", "Table 3") if variant in in_table_1 else ("Table 3",))
        for variant, (acc, f1) in figures.items()
    }


PAPER_RESULTS: dict[str, dict[str, PaperResult]] = {
    "mvsa-single": _ablation_rows(
        {
            "text-only": (0.7111, 0.6970),
            "image-only": (0.6467, 0.6155),
            "mlf": (0.7111, 0.7101),
            "mlf-lbcl": (0.7378, 0.7291),
            "mlf-dbcl": (0.7356, 0.7276),
            "full": (0.7533, 0.7346),
        }
    ),
    "mvsa-multiple": _ablation_rows(
        {
            "text-only": (0.6759, 0.6624),
            "image-only": (0.6188, 0.6098),
            "mlf": (0.7059, 0.6849),
            "mlf-lbcl": (0.7112, 0.6863),
            "mlf-dbcl": (0.7153, 0.6832),
            "full": (0.7200, 0.6983),
        }
    ),
    "hfm": _ablation_rows(
        {
            "text-only": (0.8389, 0.8326),
            "image-only": (0.7277, 0.7138),
            "mlf": (0.8414, 0.8355),
            "mlf-lbcl": (0.8489, 0.8446),
            "mlf-dbcl": (0.8468, 0.8422),
            "full": (0.8543, 0.8487),
        }
    ),
    # Appendix B: BERT fine-tuned on "[CLS] sentence [SEP] aspect [SEP]" is the text-only row, CLMLF the full model.
    "twitter2015": {
        "text-only": PaperResult("BERT", 0.7387, 0.7023, ("Table 6",)),
        "full": PaperResult("CLMLF", 0.7811, 0.7460, ("Table 6",)),
    },
    "twitter2017": {
        "text-only": PaperResult("BERT", 0.6848, 0.6553, ("Table 6",)),
        "full": PaperResult("CLMLF", 0.7098, 0.6913, ("Table 6",)),
    },
}
