"""Two complete programs that use only the public Python API, shipped with the package so an installed reidkit
has them too: ``python -m reidkit.examples.reid_across_folders`` (match two folders of crops) and
``python -m reidkit.examples.tracking_loop`` (appearance-only tracking over detections). In a clone,
``python examples/<name>.py`` runs the same files (``examples`` is a link to this folder)."""
