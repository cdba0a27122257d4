"""Deprecated location of the ONNX export, kept because the documentation showed it: use
``reidkit.inference.export`` (``from reidkit.inference import export_onnx, read_onnx_meta``)."""

from __future__ import annotations

import warnings

from reidkit.inference.export import DEFAULT_OPSET, ExportReport, export_onnx, read_onnx_meta

__all__ = ["DEFAULT_OPSET", "ExportReport", "export_onnx", "read_onnx_meta"]

warnings.warn("reidkit.export is deprecated; import from reidkit.inference instead", DeprecationWarning,
              stacklevel=2)
