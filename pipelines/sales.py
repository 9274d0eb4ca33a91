"""Raw sales -> cleaned per region -> aggregated report."""

from collections import defaultdict
from decimal import Decimal

import luigi

from hgext_luigi import HgTask
from pipelines import common

REGIONS = ("north", "south", "east")


class CleanSales(HgTask):
    """One region's raw sales with unusable rows dropped and amounts normalized."""

    region = luigi.Parameter()
    watches = ["data/raw/sales-{region}.csv"]

    def output(self):
        return self.stamped_target("clean/sales-%s.csv" % self.region)

    def run(self):
        rows = common.read_rows(self.source_path("data/raw/sales-%s.csv" % self.region))
        clean = [r for r in (common.clean_row(r) for r in rows) if r]
        with self.output().open("w") as f:
            common.write_rows(f, clean)


class SalesReport(HgTask):
    """Quantity and revenue per region and product."""

    watches = ["data/report.cfg"]

    def requires(self):
        return {region: CleanSales(region=region) for region in REGIONS}

    def output(self):
        return self.stamped_target("reports/sales-report.csv")

    def run(self):
        currency = "EUR"
        cfg = self.source_path("data/report.cfg")
        with open(cfg, encoding="utf-8") as f:
            for line in f:
                if line.startswith("currency"):
                    currency = line.split("=", 1)[1].strip()
        totals = defaultdict(lambda: [0, Decimal("0")])
        for region, target in sorted(self.input().items()):
            for row in common.read_rows(target.path):
                t = totals[(region, row["product"])]
                t[0] += int(row["quantity"])
                t[1] += Decimal(row["amount"])
        with self.output().open("w") as f:
            f.write("region,product,quantity,revenue,currency\n")
            for (region, product), (qty, revenue) in sorted(totals.items()):
                f.write("%s,%s,%d,%s,%s\n" % (region, product, qty, revenue, currency))
