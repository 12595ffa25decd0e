# Snakemake's own report beside the book (docs/report.md): `snakemake --report report.zip` shows every table
# and figure the rules declare. They are flagged here with Snakemake's report flag, from the rules' declared
# outputs, so that a table or figure a rule adds later is in the report without its rule naming it; the
# captions are the figures' own (toolshift.report.snakemake_report: the figure registry, the captions.json).
from snakemake.io import AnnotatedString, ReportObject, is_flagged

from toolshift.report.snakemake_report import report_item, write_figure_captions

REPORT_CAPTIONS = write_figure_captions(workflow.snakemake_tmp_dir / "toolshift-report", RESULTS, DATASETS)


def flag_for_report(output, item):
    """Flag one declared output for the report, as `report()` in its rule would (a plain path first becomes
    a flaggable one; flags it already has are kept)."""
    if not isinstance(output._file, AnnotatedString):
        output.clone_flags(output)
    caption = REPORT_CAPTIONS.get(item.name) if item.kind == "figure" else None
    output.flags["report"] = ReportObject(
        workflow.current_basedir.join(str(caption)) if caption else None,
        item.category,
        item.subcategory,
        item.labels,
        [],
        None,
    )


for _step in list(workflow.rules):
    for _out in _step.output:
        _item = report_item(str(_out), RESULTS)
        if _item is not None and not is_flagged(_out, "report"):
            flag_for_report(_out, _item)
