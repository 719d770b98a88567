"""medaudit: audit medical imaging classifiers by multimodal slice discovery, and harden 3D
segmentation models against texture shift."""

__version__ = "0.1.0"
