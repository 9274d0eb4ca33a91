"""Example (b): prepare a dataset -> a Step Functions workflow -> a consumer.

``SalesReport`` (the dataset) goes to the state machine ``[cloud]
state_machine_arn`` as the input of ``ScoreRegions`` (an execution per task and
changeset, whose ARN, status and output land in lineage); ``PublishScores``
turns the execution's output into a file.  The workflow's definition is
versioned next to the data in ``workflows/score.asl.json``.  Run it with::

    hg --config luigi.module=pipelines.cloud luigi-run --task PublishScores
"""

import csv
import json

import luigi

from hgext_luigi import HgTask
from hgext_luigi.stepfunctions import StepFunctionsTask
from pipelines.sales import SalesReport


class cloud(luigi.Config):
    state_machine_arn = luigi.Parameter(description="ARN of the scoring state machine.")


class ScoreRegions(StepFunctionsTask):
    """Hand the sales report to the scoring workflow and wait for its answer."""

    @property
    def state_machine_arn(self):
        return cloud().state_machine_arn

    def requires(self):
        return SalesReport()

    def execution_input(self):
        with self.input().open() as f:
            rows = list(csv.DictReader(f))
        regions = sorted({r["region"] for r in rows})
        return {"regions": regions, "rows": rows}


class PublishScores(HgTask):
    """The workflow's answer, with the changeset and execution it came from."""

    def requires(self):
        return ScoreRegions()

    def output(self):
        return self.stamped_target("published/scores.json")

    def run(self):
        with self.input().open() as f:
            result = json.load(f)
        with self.output().open("w") as f:
            json.dump({"execution": result["execution_arn"], "scores": result["output"],
                       "changeset": self.changeset}, f, indent=2, sort_keys=True)
