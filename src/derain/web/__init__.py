"""Local web pages (optional extra ``web``: fastapi, uvicorn). Nothing in the package imports this; the CLI starts
it as its own program (``python -m derain.web``)."""
