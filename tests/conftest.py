"""Shared test set-up: offline, no model downloads, fixtures from the helper modules."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
pytest_plugins = ["loopback", "conftest_models"]
