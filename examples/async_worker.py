"""An asyncio worker: ``async_flow`` on a coroutine, run by concurrent workers.

Two workers take jobs from one ``asyncio.Queue`` at the same time; each call of the decorated coroutine
is its own flow (per-call state lives in a context variable, not on the decorator). A job cut short by
``asyncio.wait_for`` is *cancelled*, which Hud does not count as a failure.
"""

from __future__ import annotations

import asyncio

import hud_otel as hud_sdk


@hud_sdk.async_flow("resize-image")
async def resize_image(job: dict[str, object]) -> None:
    hud_sdk.set_context(image_id=str(job["id"]), width=int(str(job["width"])))
    await asyncio.sleep(float(str(job["seconds"])))
    if job["width"] == 0:
        raise ZeroDivisionError("width 0")


async def worker(queue: asyncio.Queue[dict[str, object]], timeout_s: float) -> None:
    while True:
        job = await queue.get()
        try:
            await asyncio.wait_for(resize_image(job), timeout=timeout_s)
        except (ZeroDivisionError, asyncio.TimeoutError) as exc:
            print(f"async_worker: job {job['id']} did not finish: {type(exc).__name__}")
        finally:
            queue.task_done()


async def run(jobs: list[dict[str, object]], workers: int = 2, timeout_s: float = 0.5) -> None:
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    tasks = [asyncio.create_task(worker(queue, timeout_s)) for _ in range(workers)]
    await queue.join()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    jobs: list[dict[str, object]] = [
        {"id": "a", "width": 640, "seconds": 0.01},
        {"id": "b", "width": 0, "seconds": 0.01},
        {"id": "c", "width": 320, "seconds": 30},  # cut short by the timeout: cancelled
    ]
    asyncio.run(run(jobs, timeout_s=0.2))


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
