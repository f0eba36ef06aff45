"""The screenshots of docs/ui.md, taken with headless Chromium from a real `make demo` run.

    BRU_HOME=... bru ui --optuna --port 5055 --optuna-port 8088 &   # after `make demo` in that home
    python docs/ui/screenshots.py BRU_HOME [--mlflow http://127.0.0.1:5055] [--dashboard http://127.0.0.1:8088]

Drives Chromium through its DevTools protocol (`websockets`, which MLflow's server already
installs) to do what a user would: open the campaign's runs in the Model training view,
close the assistant panel, type a filter, open a run, open a study. Writes PNGs next to
this file. Needs `chromium` (apt-get install chromium)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets
from mlflow import MlflowClient
from optuna.storages import RDBStorage

HERE = Path(__file__).resolve().parent
PORT = 9333


class Page:
    def __init__(self, socket) -> None:
        self.socket = socket
        self.ids = 0

    async def call(self, method: str, **params):
        self.ids += 1
        await self.socket.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(await self.socket.recv())
            if message.get("id") == self.ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result.get("result", {}).get("value")

    async def goto(self, url: str, settle: float = 6.0) -> None:
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(settle)

    async def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not await self.js(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            await asyncio.sleep(0.5)

    async def type_into(self, selector: str, text: str) -> None:
        await self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.call("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    async def shot(self, name: str) -> None:
        data = await self.call("Page.captureScreenshot", format="png")
        (HERE / f"{name}.png").write_bytes(base64.b64decode(data["data"]))
        print(f"wrote {HERE / (name + '.png')}")


async def _close_assistant(page: Page) -> None:
    await page.js(
        """(() => { const b = [...document.querySelectorAll('button')]
             .find(e => (e.getAttribute('aria-label') || '').toLowerCase().includes('close'));
             if (b) b.click(); })()"""
    )


async def take(home: Path, mlflow: str, dashboard: str) -> None:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quick")
    repeat = client.search_runs(
        [experiment.experiment_id],
        "tags.`bru.role` = 'repeat' and tags.`bru.task` = 'digits/mlp4' and tags.`bru.activation` = 'eru:2'",
        max_results=1,
    )[0]
    study_id = RDBStorage(f"sqlite:///{home / 'optuna.db'}").get_study_id_from_name("quick/digits/mlp4/eru:2")
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json") as response:
        target = next(t for t in json.load(response) if t["type"] == "page")
    async with websockets.connect(target["webSocketDebuggerUrl"], max_size=2**26) as socket:
        page = Page(socket)
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1500, height=950, deviceScaleFactor=1, mobile=False)
        runs = f"{mlflow}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
        await page.goto(runs)
        await page.wait_for("document.body.innerText.includes('matching runs')")
        await _close_assistant(page)
        await page.type_into(
            "input[placeholder*='metrics']",
            "tags.`bru.role` = 'repeat' and tags.`bru.task` = 'digits/mlp4'",
        )
        await asyncio.sleep(4)
        await page.shot("mlflow-runs")
        await page.goto(
            f"{mlflow}/#/experiments/{experiment.experiment_id}/runs/{repeat.info.run_id}?workflowType=machine_learning"
        )
        await page.wait_for("document.body.innerText.includes('Source')")
        await _close_assistant(page)
        await asyncio.sleep(2)
        await page.shot("mlflow-run")
        await page.goto((home / "reports" / "quick" / "report.html").as_uri(), settle=3)
        await page.shot("report")
        await page.goto(f"{dashboard}/dashboard", settle=4)
        await page.shot("optuna-studies")
        await page.goto(f"{dashboard}/dashboard/studies/{study_id}", settle=8)
        await page.shot("optuna-study")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("--mlflow", default="http://127.0.0.1:5055")
    parser.add_argument("--dashboard", default="http://127.0.0.1:8088")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: chromium: not installed; apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--remote-debugging-port={PORT}", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(3)
            asyncio.run(take(args.home, args.mlflow, args.dashboard))
        finally:
            browser.terminate()
            browser.wait(timeout=10)


if __name__ == "__main__":
    main()
