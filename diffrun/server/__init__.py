"""`diffrun serve`: the job flow behind an OpenAI-compatible HTTP API, the model loaded once.

FastAPI, uvicorn and python-multipart (the `serve` extra) are imported only inside this package.
"""
