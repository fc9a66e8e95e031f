"""Helpers of scripts/compare_ort.py: the ONNX export of timm's ViT (vit_onnx) and timm's eval
preprocessing in numpy + Pillow (preprocess)."""
