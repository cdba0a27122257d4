"""Small helpers shared across reidkit (atomic file writes, image decoding)."""
