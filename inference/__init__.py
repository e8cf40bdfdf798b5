"""LotaBots model runtime: GGUF to ONNX build, tokenizer and chat template, ONNX Runtime loading.

Build-time modules (``model_build``, ``gguf_weights``, ``onnx_graph``, ``tokenizer_build``) need the
``model-build`` extra (gguf, onnx, jinja2); runtime modules (``model_files``, ``chat``) need only
onnxruntime, tokenizers and numpy.
"""
