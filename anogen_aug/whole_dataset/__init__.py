"""A whole data set in two commands: learn an embedding for every defect type, then a bank from each.

The paper's scale is MVTec AD: 15 categories, 73 defect types, one embedding per defect type (6,100 steps each),
then a bank per defect type. `learn_all` and `generate_all` (``anogen-aug learn-all`` / ``generate-all``) do that
for an MVTec-AD-layout folder, one defect type per process at a time under ``accelerate launch`` or
``torchrun`` (one GPU, several, several nodes sharing the output folder). Every job is resumable, a relaunch skips
finished jobs, and a failing job is recorded while the others go on.

Where things live: `plan` (the jobs, the support draw and ``support.json``), `launch` (spreading jobs over ranks
and waiting for them), `learn` (`learn_all`), `generate` (`generate_all`), `report` (job records and the summary
table). The output folder::

    OUT/support.json                  the support draw: k images per defect type, excluded from evaluation
    OUT/embeddings/<category>_<defect>/   one embedding per defect type, Hub layout with its model card
    OUT/checkpoints/<category>_<defect>/  resumable stage-1 checkpoints
    OUT/banks/<category>_<defect>/        one bank per defect type
    OUT/sheets/<category>_<defect>.png    its contact sheet
    OUT/jobs/<stage>/<job>.json, OUT/summary-<stage>.md   what each job did; the table of all of them
"""

from __future__ import annotations

from .generate import generate_all
from .learn import learn_all
from .plan import DatasetPlan, DefectJob, plan_dataset, read_support_json, support_files
from .report import JobRecord, Summary, summary_table

__all__ = [
    "DatasetPlan",
    "DefectJob",
    "JobRecord",
    "Summary",
    "generate_all",
    "learn_all",
    "plan_dataset",
    "read_support_json",
    "summary_table",
    "support_files",
]
