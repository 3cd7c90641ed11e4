"""Job handlers of the domains app (adapters: load rows, call the engine, write back)."""
from __future__ import annotations

import time

from django.utils.translation import gettext_lazy as _

from domains.jobs import JobContext, job_handler


@job_handler("selfcheck", _("Worker check"))
def selfcheck(ctx: JobContext) -> dict:
    """Walk through N steps on a worker so an operator sees the queue, progress and cancel work."""
    steps = int(ctx.params.get("steps", 10))
    delay = float(ctx.params.get("step_seconds", 0.5))
    ctx.log(f"worker check: {steps} steps of {delay}s")
    for step in range(1, steps + 1):
        time.sleep(delay)
        ctx.progress(step, steps, message=str(_("Step %(step)d of %(steps)d")) % {"step": step, "steps": steps})
    return {"steps": steps}
