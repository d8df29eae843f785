"""posestream: real-time streaming skeleton action recognition with PoseConv3D."""

__version__ = "0.1.0"
