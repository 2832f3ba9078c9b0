"""What the Code Mode page shows beyond the answers, as data under /engine: the plan (what
`npu-engine plan` explains), the device profile's measurements, the code checks of an answer's
code blocks, and the verification of a receipt this engine signed."""

import asyncio
import json
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from npu_engine.code_checks import CodeChecker, tier_pass_at_1
from npu_engine.engine import Engine
from npu_engine.errors import ReceiptError, presentable
from npu_engine.scheduler import Plan

MAX_BLOCKS = 32
MAX_BLOCK_CHARS = 200_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeBlock(_Body):
    code: str = Field(max_length=MAX_BLOCK_CHARS)
    language: str = Field(default="", max_length=40, description="the block's Markdown tag")


class CodeChecksRequest(_Body):
    blocks: list[CodeBlock] = Field(min_length=1, max_length=MAX_BLOCKS)
    tier: str | None = Field(default=None, max_length=200, description="the tier that wrote them")
    device: str | None = Field(default=None, max_length=200)
    backend: str | None = Field(default=None, max_length=200)


class VerifyRequest(_Body):
    receipt: dict[str, Any] = Field(description="the DSSE envelope, as `npu_engine.receipt` carried it")
    text: str | None = Field(default=None, description="the answer's text, checked against the subject")


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan as data: what `npu-engine plan` says in words, field by field."""
    return {
        "machine": plan.inventory.description,
        "measured": plan.measured,
        "system_budget_bytes": plan.system_budget,
        "system_used_bytes": plan.system_used,
        "placements": [
            {
                "tier": p.tier,
                "model": p.model,
                "device": p.device,
                "serves": p.serves,
                "memory_bytes": p.memory_bytes,
                "resident": p.resident,
                "reason": p.reason,
                "fallback": list(p.fallback),
            }
            for p in plan.placements
        ],
        "explanation": plan.explain(),
    }


def engine_router(engine: Engine, checker: CodeChecker) -> APIRouter:
    router = APIRouter(prefix="/engine", tags=["Engine"])

    @router.get("/plan")
    async def plan() -> dict[str, Any]:
        """Where each tier runs and why, with its fallback chain; `chat_tiers`: the tiers that
        answer chats (the embedding tiers apart)."""
        return {**plan_data(await asyncio.to_thread(engine.plan)), "chat_tiers": list(engine.tiers())}

    @router.get("/measurements")
    async def measurements() -> dict[str, Any]:
        """The device profile npu-bench wrote: speeds, first-token times and pass@1 per tier."""
        return {"measurements": [asdict(m) for m in engine.measurements]}

    @router.post("/code-checks")
    async def code_checks(body: CodeChecksRequest) -> dict[str, Any]:
        """For each code block: whether it parses, what the linter says, and the tier's measured
        pass@1 (or "not measured"). Nothing is run: the checkers only read the code."""

        def measured(language: str | None) -> tuple[float | None, str]:
            if not body.tier:
                return None, "not measured"
            return tier_pass_at_1(engine.measurements, body.tier, body.device, body.backend, language)

        def check_all() -> list[dict[str, Any]]:
            return [asdict(checker.quality(b.code, b.language, measured)) for b in body.blocks]

        return {"blocks": await asyncio.to_thread(check_all)}

    @router.post("/receipts/verify")
    async def verify(body: VerifyRequest) -> dict[str, Any]:
        """Whether a receipt verifies here: signed by this engine's key, its subject the text given,
        its model's files still those of its manifest. A receipt that fails is an answer (ok
        false, with the reason), not an error."""
        document = json.dumps(body.receipt)
        text = body.text.encode("utf-8") if body.text is not None else None
        try:
            verified = await asyncio.to_thread(engine.verify_receipt, document, text)
        except ReceiptError as error:
            return {"ok": False, "reason": error.reason, "message": presentable(error)}
        predicate = verified.receipt.predicate
        return {
            "ok": True,
            "summary": verified.summary(),
            "text_checked": verified.text_checked,
            "model": predicate.model,
            "device": predicate.device,
            "keyid": verified.keyid,
        }

    return router
