"""Runtimes that run an exported network with no torch and no model package (tests/test_layering.py), each
implementing the squeeze.predictor protocols: onnxruntime (onnxruntime.py), OpenVINO (openvino.py). Which runtime
reads which file is the table in deploy.formats; deploy.formats.load_predictor picks it by the file's suffix.
"""
