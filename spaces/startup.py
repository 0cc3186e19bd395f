"""The page served while the Space builds its caches (first start without a shipped `space_cache/`):
what is being computed and how far along it is, refreshed every second; when the explorer is ready
the page reloads itself into it."""

from __future__ import annotations

import threading
import time

import gradio as gr

from layout import TITLE

# Poll the server's config until it is the explorer's (the start-up page has another title), then reload.
RELOAD_WHEN_READY = f"""() => {{
  const url = window.location.pathname.replace(/\\/?$/, '/') + 'config';
  setInterval(async () => {{
    try {{
      const response = await fetch(url, {{cache: 'no-store'}});
      if (response.ok && (await response.json()).title === {TITLE!r}) window.location.reload();
    }} catch (error) {{}}
  }}, 1500);
}}"""

STAGES = {
    "vocabulary": "reading the concept vocabulary",
    "images": "collecting the gallery images",
    "done": "done: opening the explorer",
}


class StartupProgress:
    """Thread-safe record of the cache build: the building thread reports, the page reads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.stage, self.done, self.total = "loading the model", 0, 0
        self.started = time.monotonic()
        self.error: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            self.stage, self.done, self.total = stage, done, total

    def text(self) -> str:
        with self._lock:
            stage, done, total, error = self.stage, self.done, self.total, self.error
        if error:
            return f"**The Space could not start:** {error}"
        label = STAGES.get(stage, stage)
        count = f": {done:,} of {total:,} ({done / total:.0%})" if total > 1 else ""
        if stage == "loading the model":
            return f"**Starting the explorer: {label}.** {time.monotonic() - self.started:.0f} s so far. This page opens the explorer by itself when it is ready."
        return (
            f"**Preparing the explorer (first start only): {label}{count}.** {time.monotonic() - self.started:.0f} s so far.\n\n"
            "The concept labels, the feature atlas and the training-evolution views are computed once and kept next to the model; "
            "later starts take seconds. This page opens the explorer by itself when it is ready."
        )


def startup_page(progress: StartupProgress) -> gr.Blocks:
    with gr.Blocks(title=f"{TITLE} (starting)") as page:
        gr.Markdown(f"# {TITLE}")
        status = gr.Markdown(progress.text(), elem_id="startup-status")
        gr.Timer(1.0).tick(progress.text, None, status, show_progress="hidden", api_name=False, queue=False)
        page.load(None, None, None, js=RELOAD_WHEN_READY)
    return page
