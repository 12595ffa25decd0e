# toolshift: does explicit image-tool interaction make VLMs safer against multimodal jailbreaks, and why?
# One DAG from data to book; every arrow is a file with a written contract (docs/file-contracts.md).
#
# Without --configfile the embedded default (config/config.yaml) runs. A --configfile replaces it as
# a whole rather than being merged into it, so a config lists exactly the models and datasets it runs.


if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/episodes.smk"
include: "rules/models.smk"
include: "rules/inference.smk"
include: "rules/vectors.smk"
include: "rules/interventions.smk"
include: "rules/judge.smk"
include: "rules/stats.smk"
include: "rules/plots.smk"
include: "rules/validation.smk"
include: "rules/book.smk"
include: "rules/bundle.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        BOOK_INDEX,
