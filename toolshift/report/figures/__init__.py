"""The report's figures, one module per book chapter, drawn from result files (`tables/*.csv`,
`vectors/{model}/{dataset}.nc`) by the rules of rules/plots.smk.

- `registry`: the one list of figures (name, drawing function, book page, rule); read it, not this list.
- `style`: page size, condition colours and order, saving PNG + SVG, `plot_not_drawn`, shared checks.
- `behaviour`: ASR by condition, by category, by judge, and free tool use.
- `representation`: cosines by layer, PCA, probes, projections.
- `interventions`: the dose-response curve and the ablation/subtraction bars.
- `intervention_cost`: KL cost against ASR change.
- `headline`: the headline forest plot.

Importing this package imports no plotting library (the Snakefile imports `registry`); import the drawing
functions from their modules.
"""
