"""Stages `figures`, `representation_figures`, `headline_figure` and `book` (rules/plots.smk,
rules/book.smk): the figures, the book's pages and tables, and the Jupyter Book build."""
