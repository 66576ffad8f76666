"""Parse one PDF in a child process, bounded in time and memory.

`python -m mmsearch.indexer.pdfworker LIMITS_JSON` reads the PDF on stdin and writes JSON on
stdout: {"document": ...} or {"rejected": {"reason", "detail"}}. The parent
(`parse_in_worker`) kills it past its deadline and caps its address space (RLIMIT_AS), so a
hang, a crash or a decompression bomb in PDFium costs this process only; the answer is JSON,
not pickle, because the child handled hostile bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import resource
import signal
import sys
from dataclasses import dataclass, field

from mmsearch.indexer.pdf import DocLimits, DocumentRejected, ParsedDocument, from_json, parse, to_json

# What the parent allows the child beyond the document itself.
DEFAULT_MEMORY_BYTES = 2 << 30


@dataclass(frozen=True)
class WorkerLimits:
    doc: DocLimits = field(default_factory=DocLimits)
    timeout_s: float = 120.0
    memory_bytes: int = DEFAULT_MEMORY_BYTES


def _limit_memory(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


async def parse_in_worker(data: bytes, limits: WorkerLimits) -> ParsedDocument:
    """The parsed document, or DocumentRejected (over a limit, encrypted, corrupt, a bomb, or
    the parser crashed / ran out of time or memory)."""
    if len(data) > limits.doc.max_bytes:  # before starting anything
        raise DocumentRejected(
            "over_limit", f"document is {len(data)} bytes, over the limit {limits.doc.max_bytes}"
        )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mmsearch.indexer.pdfworker",
        json.dumps(dataclasses.asdict(limits.doc)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: _limit_memory(limits.memory_bytes),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(data), limits.timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise DocumentRejected(
            "over_limit", f"parsing took longer than the limit of {limits.timeout_s:g} s"
        ) from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    if process.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        # PDFium's allocator aborts (SIGABRT) when an allocation fails; under the address-space
        # limit that is what a stream inflating to gigabytes does.
        if process.returncode == -signal.SIGABRT or "MemoryError" in tail[0]:
            raise DocumentRejected(
                "bomb",
                f"parsing needed more than the memory limit of {limits.memory_bytes >> 20} MiB "
                f"(the parser aborted on an allocation failure)",
            )
        raise DocumentRejected(
            "corrupt", f"the PDF parser failed (exit {process.returncode}): {tail[0][:300]}"
        )
    answer = json.loads(out)
    if "rejected" in answer:
        raise DocumentRejected(answer["rejected"]["reason"], answer["rejected"]["detail"])
    return from_json(answer["document"])


def main() -> int:
    limits = DocLimits(**json.loads(sys.argv[1]))
    data = sys.stdin.buffer.read()
    try:
        answer = {"document": to_json(parse(data, limits))}
    except DocumentRejected as exc:
        answer = {"rejected": {"reason": exc.reason, "detail": exc.detail}}
    except MemoryError:
        print("MemoryError", file=sys.stderr)
        return 3
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
