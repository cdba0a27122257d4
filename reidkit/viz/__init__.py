"""Pictures: attention maps (``reidkit.viz.attention``), rank lists (``reidkit.viz.ranklist``), the HTML
evaluation report (``reidkit.viz.report``) and training / CMC curves (``reidkit.viz.curves``).

Submodules are imported on use so ``import reidkit.viz`` stays light (matplotlib is loaded only when a
picture is drawn).

Examples:
    >>> from reidkit.viz.ranklist import draw_rank_list
    >>> draw_rank_list("q.jpg", ["g1.jpg", "g2.jpg"], [True, False], "rank.png")  # doctest: +SKIP
"""
