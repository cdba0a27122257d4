"""Small helpers shared across reidkit: ``atomic`` (every file written, and the rule for output paths),
``limits`` (the bounds of every value read from a file or config), ``textfile`` (files read as text),
``paths`` (where a path named in a file leads), ``safeload`` (the one torch pickle reader), ``images`` (image
files: list, decode, the one resize), ``devices`` (the torch device), ``threads`` (CPU threads for inference)
and ``progress`` (the one progress display)."""
