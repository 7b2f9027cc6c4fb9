"""The diffusers side of diffrun: load a model, pick the task, run it, build tiny test models.

Importing this package stays cheap: torch, diffusers and transformers load inside the functions.
"""

from diffrun.pipelines.info import environment
from diffrun.pipelines.loading import load_model
from diffrun.pipelines.models import LoadedModel, ModelOptions, Output, Request
from diffrun.pipelines.precheck import precheck
from diffrun.pipelines.run import run
from diffrun.pipelines.tasks import batch_key, plan_task
from diffrun.pipelines.tiny import TINY_KINDS, make_tiny_model

__all__ = [
    "TINY_KINDS",
    "LoadedModel",
    "ModelOptions",
    "Output",
    "Request",
    "batch_key",
    "environment",
    "load_model",
    "make_tiny_model",
    "plan_task",
    "precheck",
    "run",
]
