"""Stage report: one static HTML page for people (reports/index.html), offline and byte-stable."""

from panelcast.core.stage import run_stage
from panelcast.report.html import write_report


def main(params, args) -> None:
    write_report(params)


if __name__ == "__main__":
    run_stage("report", main)
