"""Converters: ONNX and PyTorch models -> float IR -> calibration -> .qmodel.

They may import torch, onnx and onnxruntime (the optional `qrt[convert]` extra), lazily;
nothing in qrt/ imports from here."""
