"""``python -m leverplus.serving``: serve local models as an OpenAI-compatible API on 127.0.0.1 until killed.

Prints exactly one line on stdout, the base URL (``http://127.0.0.1:<port>/v1``), once it accepts connections;
logs go to stderr. Example::

    python -m leverplus.serving --chat-model data/models/tiny_chat --model-name tiny-chat --port 0

Backends come from the registry in :mod:`leverplus.serving.backends` (``--chat-backend``, and for the consistency
track ``--embedding-model``/``--reranker-model``). ``--api-key-env NAME`` makes the server require the key held in
that environment variable (the key itself never appears on the command line).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys


def _options(text: str | None, flag: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"lever-plus serving: {flag} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"lever-plus serving: {flag} must be a JSON object")
    return value


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m leverplus.serving", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--api-key-env", default=None, help="require the key held in this environment variable")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: leave as is)")
    p.add_argument("--chat-model", default=None, help="chat model directory")
    p.add_argument("--model-name", default=None, help="model name the chat model answers to")
    p.add_argument("--chat-backend", default="causal_lm", help="chat backend in the registry (causal_lm, omni)")
    p.add_argument("--chat-options", default=None, help="JSON object of chat backend options")
    p.add_argument("--embedding-model", default=None, help="embedding model directory")
    p.add_argument("--embedding-model-name", default=None)
    p.add_argument("--embedding-backend", default="default")
    p.add_argument("--embedding-options", default=None, help="JSON object of embedding backend options")
    p.add_argument("--reranker-model", default=None, help="reranker model directory")
    p.add_argument("--reranker-model-name", default=None)
    p.add_argument("--reranker-backend", default="default")
    p.add_argument("--reranker-options", default=None, help="JSON object of rerank backend options")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from leverplus.serving.backends import make_backend
    from leverplus.serving.server import OpenAICompatServer

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SystemExit(f"lever-plus serving: environment variable {args.api_key_env} is not set")
    slots = {}
    try:
        if args.chat_model:
            slots["chat"] = make_backend("chat", args.chat_backend, args.chat_model,
                                         model_name=args.model_name or os.path.basename(args.chat_model.rstrip("/")),
                                         options=_options(args.chat_options, "--chat-options"))
        if args.embedding_model:
            slots["embeddings"] = make_backend(
                "embeddings", args.embedding_backend, args.embedding_model,
                model_name=args.embedding_model_name or os.path.basename(args.embedding_model.rstrip("/")),
                options=_options(args.embedding_options, "--embedding-options"))
        if args.reranker_model:
            slots["rerank"] = make_backend(
                "rerank", args.reranker_backend, args.reranker_model,
                model_name=args.reranker_model_name or os.path.basename(args.reranker_model.rstrip("/")),
                options=_options(args.reranker_options, "--reranker-options"))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"lever-plus serving: {exc}") from None
    if not slots:
        raise SystemExit("lever-plus serving: nothing to serve (give --chat-model, --embedding-model or --reranker-model)")
    server = OpenAICompatServer(port=args.port, api_key=api_key, **slots)
    server.start()
    signal.signal(signal.SIGTERM, _interrupt)
    print(server.url, flush=True)
    logging.getLogger("leverplus.serving").info("serving %s on %s", server.model_names(), server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
