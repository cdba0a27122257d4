"""Pictures: attention maps (:mod:`reidkit.viz.attention`), rank lists (:mod:`reidkit.viz.ranklist`), the HTML
evaluation report (:mod:`reidkit.viz.report`) and training / CMC curves (:mod:`reidkit.viz.curves`).

Submodules are imported on use so ``import reidkit.viz`` stays light (matplotlib is loaded only when a
picture is drawn).

Example:
    >>> from reidkit.viz.ranklist import draw_rank_list
    >>> draw_rank_list("q.jpg", ["g1.jpg", "g2.jpg"], [True, False], "rank.png")  # doctest: +SKIP
"""
