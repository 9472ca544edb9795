"""The baselines' training schedules: the authors' (shared/spec/baselines.md; SGD lr 0.1, ×0.1 at
each milestone), one per kind of training a method does (`Method.budget`):

  network  a whole WRN from random init: Scratch, SD_*, UHC_*, the single-task Scratch teachers
  head     a new head on PoE's frozen library: Transfer, CKD

A study squeezes them to fewer epochs (Run_Baselines.py --epochs_network, --epochs_head), the
milestones in proportion (Budget.with_epochs)."""
from __future__ import annotations

from ..profiles import Budget

PAPER = {"network": Budget(200, 0.1, (80, 160)),
         "head": Budget(100, 0.1, (40, 80))}


def budgets(epochs_network: int | None = None, epochs_head: int | None = None) -> dict[str, Budget]:
    """The study's schedules: the paper's, squeezed to the given epochs (None: the paper's)."""
    epochs = {"network": epochs_network, "head": epochs_head}
    return {kind: paper.with_epochs(epochs[kind] or paper.epochs) for kind, paper in PAPER.items()}
