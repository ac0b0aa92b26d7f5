"""Deployment: ONNX export, runtimes without torch (onnxruntime, OpenVINO, TensorRT), INT8, bundles and the
latency bench, driven by one table of formats (deploy.formats).

Layering (tests/test_layering.py): deploy imports squeeze and, for export only, the model packages; the runtimes
(deploy/runtime*.py, deploy/runtimes/) import neither torch nor a model package.
"""
