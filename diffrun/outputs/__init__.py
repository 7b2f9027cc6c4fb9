"""Turning generated images and video frames into files or stdout: atomic, no clobbering, recipe inside."""

from diffrun.outputs.formats import IMAGE_FORMATS, VIDEO_FORMATS
from diffrun.outputs.images import write_image
from diffrun.outputs.metadata import a1111_parameters
from diffrun.outputs.names import plan_outputs
from diffrun.outputs.recipe import read_recipe, write_sidecar
from diffrun.outputs.video import write_video

__all__ = [
    "IMAGE_FORMATS",
    "VIDEO_FORMATS",
    "a1111_parameters",
    "plan_outputs",
    "read_recipe",
    "write_image",
    "write_sidecar",
    "write_video",
]
