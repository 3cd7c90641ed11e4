"""Job handlers of the domains app (adapters: load rows, call the engine, write back)."""
from __future__ import annotations

import time

from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from domains.jobs import JobContext, job_handler


@job_handler("selfcheck", _("Worker check"))
def selfcheck(ctx: JobContext) -> dict:
    """Walk through N steps on a worker so an operator sees the queue, progress and cancel work."""
    steps = int(ctx.params.get("steps", 10))
    delay = float(ctx.params.get("step_seconds", 0.5))
    ctx.log(f"worker check: {steps} steps of {delay}s")
    for step in range(1, steps + 1):
        time.sleep(delay)
        # A fixed message (translated where it is shown); the step count is in the progress fields.
        ctx.progress(step, steps, message=gettext_noop("Checking the worker"))
    return {"steps": steps}
