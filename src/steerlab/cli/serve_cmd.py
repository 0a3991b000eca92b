"""``steerlab serve``: the OpenAI-compatible server with per-request steering and the playground."""

from __future__ import annotations

from pathlib import Path

import typer

from steerlab.errors import SteerlabError


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model: str = typer.Option(
            None,
            "--model",
            "-m",
            help="model folder, .gguf file or hub id; default: the embedded SmolLM2-135M-Instruct",
        ),
        host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
        port: int = typer.Option(8000, help="TCP port"),
        vectors: Path = typer.Option(
            None,
            "--vectors",
            help="folder of vector files to preload (named after their file stems); uploads are saved "
            "there and deletes remove the file, unless --ephemeral",
        ),
        ephemeral: bool = typer.Option(
            False,
            "--ephemeral",
            help="keep uploads and deletes in memory only (the --vectors folder is only read)",
        ),
        api_key: str = typer.Option(
            None,
            "--api-key",
            envvar="STEERLAB_API_KEY",
            help="require 'Authorization: Bearer KEY' on every endpoint",
        ),
        allow_origin: list[str] = typer.Option(
            None,
            "--allow-origin",
            help="origin (scheme://host[:port]) whose web pages may call the server, besides its own; "
            "repeatable; '*' allows any",
        ),
        allow_host: list[str] = typer.Option(
            None,
            "--allow-host",
            help="Host name (name or name:port) the server answers to besides the bound address and "
            "localhost; repeatable; '*' allows any",
        ),
        device: str = typer.Option("cpu", help="torch device for the model"),
        engine: str = typer.Option(
            "torch",
            "--engine",
            help="torch (steerlab's own batching) or vllm (stock vLLM with the steerlab plugin; "
            "needs steerlab[vllm], see docs/vllm.md)",
        ),
        max_batch: int = typer.Option(32, help="sequences decoded together"),
        max_queue: int = typer.Option(256, help="requests allowed to wait; more get 429"),
        queue_timeout: float = typer.Option(60.0, help="seconds a request may wait for a slot before a 503"),
        max_tokens: int = typer.Option(512, help="most tokens one request may ask for"),
        default_max_tokens: int = typer.Option(128, help="tokens generated when a chat request names none"),
        max_prompt_tokens: int = typer.Option(4096, help="longest prompt accepted"),
        max_upload_mb: float = typer.Option(16.0, help="largest vector upload, in MiB"),
        log_level: str = typer.Option("info", help="uvicorn log level"),
    ) -> None:
        """Serve a model over an OpenAI-compatible API; steer each request with registry vectors."""
        try:
            import uvicorn

            from steerlab.server import ServerConfig, create_app
            from steerlab.server.middleware import is_loopback
        except ModuleNotFoundError as exc:
            typer.echo(
                f"error: the server needs the 'serve' extra ({exc.name} is missing): "
                "pip install 'steerlab[serve]'",
                err=True,
            )
            raise typer.Exit(2) from exc
        import steerlab

        if not is_loopback(host) and not api_key:
            typer.echo(
                f"warning: serving on {host} without --api-key: anyone who can reach it can use it", err=True
            )
        try:
            config = ServerConfig(
                max_batch=max_batch,
                max_queue=max_queue,
                queue_timeout=queue_timeout,
                max_tokens=max_tokens,
                default_max_tokens=default_max_tokens,
                max_prompt_tokens=max_prompt_tokens,
                max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                api_key=api_key,
                allow_origins=tuple(allow_origin or ()),
                allow_hosts=tuple(allow_host or ()),
                ephemeral=ephemeral,
                engine=engine,
            )
            if vectors is not None and not vectors.is_dir():
                raise SteerlabError(f"--vectors must be a folder of vector files; {vectors} is not a folder")
            lm = steerlab.load(model, device=device)
            app_ = create_app(lm, config=config, vectors_dir=vectors)
        except SteerlabError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        registry = app_.state.steerlab.registry
        for name, reason in registry.skipped:
            typer.echo(f"warning: skipped {name} in --vectors: {reason}", err=True)
        names = registry.names()
        typer.echo(
            f"steerlab: serving {lm.model_id} on http://{host}:{port} "
            f"({len(names)} vector{'s' if len(names) != 1 else ''}{': ' + ', '.join(names) if names else ''})"
        )
        if registry.persistent:
            typer.echo(f"steerlab: uploads and deletes are saved in {vectors}")
        else:
            reason = "--ephemeral" if ephemeral else "no --vectors folder"
            typer.echo(
                f"steerlab: uploads and deletes are kept in memory only ({reason}); a restart forgets them"
            )
        uvicorn.run(app_, host=host, port=port, log_level=log_level)
