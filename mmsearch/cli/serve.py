"""`mmsearch serve --target ...`: run services from MMSEARCH_* configuration."""

from __future__ import annotations

import asyncio
import sys

from prometheus_client import CollectorRegistry

from mmsearch.kit.config import ConfigError, Target, load_settings


def serve(target: Target) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"mmsearch: {exc}", file=sys.stderr)
        return 2
    from mmsearch.kit.logging import configure_logging
    from mmsearch.kit.server import serve_until_signalled
    from mmsearch.kit.tracing import setup_tracing
    from mmsearch.modules import start_target

    service_name = settings.service_name if target == "all" else f"{settings.service_name}-{target}"
    configure_logging(settings.log_level, settings.log_format, service_name)
    provider = setup_tracing(service_name, settings.otlp_endpoint)

    async def run() -> None:
        registry = CollectorRegistry()
        running, _ = await start_target(settings, target, registry=registry, tracer_provider=provider)
        await serve_until_signalled(running)

    try:
        asyncio.run(run())
    except ConfigError as exc:  # e.g. a bad spaces file, found while building a component
        print(f"mmsearch: {exc}", file=sys.stderr)
        return 2
    finally:
        provider.shutdown()
    return 0
