"""Fixtures shared by the gateway's contract tests and its browser test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import BrokerHandle, TritonHandle
from tests.integration.gateway_corpus import GatewayCorpus, start_gateway_corpus


@pytest.fixture(scope="session")
async def gateway_corpus(triton: TritonHandle, broker: BrokerHandle) -> AsyncIterator[GatewayCorpus]:
    """The stack with the gateway and a small real corpus (photos, sounds, documents)."""
    handle = await start_gateway_corpus(triton, broker)
    yield handle
    await handle.indexing.service.running.stop()
