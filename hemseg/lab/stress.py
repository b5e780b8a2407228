"""`hemseg lab stress`: the app, served as users meet it (`python -m hemseg.app.serve` on localhost, driven by
gradio_client), under hostile uploads, sessions holding the largest images, a heavy volume, many clients at once,
and kills. It builds its files itself and prints a table per part.

Memory is the app process's own, from /proc: its resident set (VmRSS) and its peak (VmHWM), the peak reset before
each hostile upload (``/proc/<pid>/clear_refs``), so each row's extra peak is that upload's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from hemseg.data.limits import MAX_SIDE
from hemseg.files import write_csv
from hemseg.lab.hostile import Hostile, build

PARTS = ("hostile", "sessions", "volume", "load", "privacy")
EXAMPLES = Path(__file__).parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, url: str, seconds: float, output: Callable[[], str]) -> None:
    """Return once ``url`` answers; RuntimeError (with the app's ``output``) when the process exits first, or (after
    killing it) when ``seconds`` pass."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited: {output()}") from None
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the app did not start within {seconds:g} s")


@contextmanager
def served(model: str | None, tmp: Path, retention_min: float = 60, port: int | None = None) -> Iterator[App]:
    """The app in a process of its own, its private folders under ``tmp``; stopped with SIGTERM after."""
    app = App.start(model, tmp, retention_min, port)
    try:
        yield app
    finally:
        app.stop()


class App:
    """A running `python -m hemseg.app.serve`, its address, and its memory from /proc."""

    def __init__(self, process: subprocess.Popen, url: str, tmp: Path, log: Path) -> None:
        self.process, self.url, self.tmp, self.log = process, url, tmp, log
        self.peak_mb = 0.0  # the highest VmHWM read before each reset: with the current one, the life's peak

    @classmethod
    def start(cls, model: str | None, tmp: Path, retention_min: float, port: int | None = None) -> App:
        port = port or free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GRADIO_SERVER_PORT": str(port),
            "HF_HUB_OFFLINE": "1",
            "TMPDIR": str(tmp),
            "HEMSEG_RETENTION_MIN": str(retention_min),
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        if model:
            env["HEMSEG_MODEL"] = model
        log = tmp / f"app-{port}.log"
        with open(log, "w") as out:  # the child keeps its own copy of the file
            process = subprocess.Popen([sys.executable, "-m", "hemseg.app.serve"], env=env, stdout=out, stderr=out)
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(process, url, 180, lambda: log.read_text()[-2000:])
        return cls(process, url, tmp, log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)

    def memory_mb(self) -> dict[str, float]:
        """VmRSS and VmHWM in MB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}

    def reset_peak(self) -> None:
        self.peak_mb = self.life_peak_mb()
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def life_peak_mb(self) -> float:
        return max(self.peak_mb, self.memory_mb()["VmHWM"])

    def files(self, others_only: bool = False) -> list[Path]:
        """Every file under the root of the apps' private folders; ``others_only``: not in this app's own."""
        root = self.tmp / "hemseg-app"
        own = f"{self.process.pid}-"
        files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        return [p for p in files if not (others_only and p.relative_to(root).parts[0].startswith(own))]


def segment(client: Client, path: Path, **options):
    options = {key: handle_file(value) if key == "truth" else value for key, value in options.items()}
    return client.predict(handle_file(str(path)), api_name="/segment", **options)


def hostile_part(app: App, cases: list[Hostile], good: Path) -> list[dict]:
    """Each hostile upload: its outcome against what it should get, time, extra peak memory, and whether the app
    then segments a good slice."""
    client = Client(app.url, verbose=False)
    rows = []
    for case in cases:
        app.reset_peak()
        before = app.memory_mb()["VmRSS"]
        started = time.perf_counter()
        try:
            result = segment(client, case.path, **case.options)
            outcome, text = "segmented", result[7]
            if case.shape is not None:
                width, height = Image.open(result[0]).size
                text += f" [overlay {height} x {width}]" if (height, width) != case.shape else ""
        except AppError as err:
            outcome, text = "refused", str(err)
        seconds = time.perf_counter() - started
        extra = app.memory_mb()["VmHWM"] - before
        serving = Image.open(segment(client, good)[0]).size == Image.open(good).size
        correct = outcome == case.expect and case.says in text and "[overlay" not in text
        rows.append(
            {
                "input": case.kind,
                "bytes": case.path.stat().st_size,
                "expected": case.expect,
                "outcome": outcome if correct else f"WRONG: {outcome}",
                "seconds": round(seconds, 2),
                "extra_peak_mb": round(extra),
                "still_serving": serving,
                "message": " ".join(text.split())[:110],
            }
        )
    return rows


def largest_slice(folder: Path) -> Path:
    """The largest slice the app takes, MAX_SIDE x MAX_SIDE, as a PNG: the example tiled."""
    example = np.asarray(Image.open(EXAMPLES / "vb2_07_sagittal_042.png").convert("L"))
    reps = (MAX_SIDE // example.shape[0] + 1, MAX_SIDE // example.shape[1] + 1)
    path = folder / "largest.png"
    Image.fromarray(np.tile(example, reps)[:MAX_SIDE, :MAX_SIDE]).save(path)
    return path


def sessions_part(app: App, folder: Path, sessions: int = 3, wait_s: float = 60) -> list[dict]:
    """Resident memory idle, while ``sessions`` clients each hold a result of the largest slice, and ``wait_s``
    after they have closed."""
    path = largest_slice(folder)
    idle = app.memory_mb()["VmRSS"]
    clients = [Client(app.url, verbose=False) for _ in range(sessions)]
    for client in clients:
        segment(client, path, pixel_size=0.3)
    held = app.memory_mb()["VmRSS"]
    for client in clients:
        client.close()
    time.sleep(wait_s)
    after = app.memory_mb()["VmRSS"]
    return [
        {"moment": "idle, before", "rss_mb": round(idle)},
        {"moment": f"{sessions} sessions hold a {path.name} result ({MAX_SIDE} x {MAX_SIDE})", "rss_mb": round(held)},
        {"moment": f"{wait_s:g} s after they closed", "rss_mb": round(after), "above_idle_mb": round(after - idle)},
    ]


def volume_part(app: App, folder: Path, shape: tuple[int, int, int] = (512, 512, 200)) -> list[dict]:
    """Whole-volume segmentation of a ``shape`` volume (a smooth random field, 0.6 x 0.6 x 1 mm), timed."""
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(shape[0] // 16, shape[1] // 16, shape[2] // 8)).astype(np.float32)
    image = np.kron(coarse, np.ones((16, 16, 8), np.float32))[: shape[0], : shape[1], : shape[2]]
    path = folder / "large_volume.nii.gz"
    nib.save(nib.Nifti1Image((image * 300 + 1000).astype(np.int16), np.diag([0.6, 0.6, 1.0, 1.0])), path)
    client = Client(app.url, verbose=False)
    rows = []
    for plane in ("axial", "sagittal"):
        started = time.perf_counter()
        summary, files = client.predict(handle_file(str(path)), plane, api_name="/segment_volume")
        seconds = time.perf_counter() - started
        right = "mL" in summary and all(nib.load(f).shape == shape for f in files)
        rows.append(
            {
                "volume": " x ".join(map(str, shape)),
                "plane": plane,
                "seconds": round(seconds, 1),
                "masks_of_its_shape": right,
            }
        )
    return rows


def load_inputs(folder: Path, clients: int) -> list[Path]:
    """One distinct slice per client (the examples, flipped and turned), so that cross-talk would show."""
    base = [np.asarray(Image.open(p).convert("L")) for p in sorted(EXAMPLES.glob("vb*_[0-9][0-9][0-9].png"))]
    variants = [
        lambda a: a,
        np.fliplr,
        np.flipud,
        lambda a: np.rot90(a, 2),
        lambda a: a.T,
        lambda a: a.T[::-1],
        lambda a: a.T[:, ::-1],
    ]
    paths = []
    for i in range(clients):
        image = np.ascontiguousarray(variants[i // len(base) % len(variants)](base[i % len(base)]))
        paths.append(folder / f"client{i:02d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def masks_of(result) -> bytes:
    """The mask PNGs of a /segment result, fetched from their URLs (a client that keeps the files does so)."""
    urls = sorted(f["url"] for f in result[6] if f["url"].endswith(".png"))
    return b"".join(np.asarray(Image.open(urllib.request.urlopen(url))).tobytes() for url in urls)


def load_part(app: App, folder: Path, clients: int = 20, requests: int = 5, **options) -> list[dict]:
    """``clients`` at once, ``requests`` each, each its own slice: latency (until the client has the result;
    gradio_client's download of every file would cost the 2 shared cores 0.17 s of CPU a request, twice what the
    app spends), throughput, errors, and whether each mask, fetched after, equals the one that slice got alone."""
    inputs = load_inputs(folder, clients)
    solo_client = Client(app.url, verbose=False, download_files=False)
    solo = [masks_of(segment(solo_client, path, **options)) for path in inputs]
    latencies: list[float] = []
    errors: list[str] = []
    crossed = []
    ready = threading.Barrier(clients)

    def one_client(i: int) -> None:
        client = Client(app.url, verbose=False, download_files=False)
        ready.wait()
        for _ in range(requests):
            started = time.perf_counter()
            try:
                result = segment(client, inputs[i], **options)
            except Exception as err:  # noqa: BLE001 - every failure is counted, whatever it is
                errors.append(f"{type(err).__name__}: {err}")
                continue
            latencies.append(time.perf_counter() - started)
            if masks_of(result) != solo[i]:
                crossed.append(i)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return [
        {
            "clients x requests": f"{clients} x {requests}",
            "options": ", ".join(f"{k}={v}" for k, v in options.items()) or "none (pixel size estimated)",
            "errors": len(errors),
            "masks_unlike_solo": len(crossed),
            "p50_s": round(statistics.median(latencies), 2) if latencies else None,
            "p95_s": round(float(np.percentile(latencies, 95)), 2) if latencies else None,
            "requests_per_s": round(len(latencies) / wall, 2),
        }
    ]


def privacy_part(model: str | None, folder: Path, good: Path) -> list[dict]:
    """What the app's files become: after SIGTERM, and after kill -9 then a restart (retention 0.25 min). The
    folders' modes say who else could read the files in them."""
    tmp = Path(tempfile.mkdtemp(dir=folder))
    app = App.start(model, tmp, retention_min=60)
    segment(Client(app.url, verbose=False), good)
    kept = len(app.files())
    modes = " ".join(sorted({oct(p.stat().st_mode & 0o777) for p in (tmp / "hemseg-app").rglob("*") if p.is_dir()}))
    app.stop(signal.SIGTERM)
    rows = [{"event": "kill -TERM", "files_before": kept, "folder_modes": modes, "files_after": len(app.files())}]
    app = App.start(model, tmp, retention_min=0.25)
    segment(Client(app.url, verbose=False), good)
    kept = len(app.files())
    app.stop(signal.SIGKILL)
    left = len(app.files())
    time.sleep(15)  # the orphans pass the retention time of the next app
    app = App.start(model, tmp, retention_min=0.25)
    started = time.perf_counter()
    while app.files(others_only=True) and time.perf_counter() - started < 90:
        time.sleep(1)
    seconds = time.perf_counter() - started
    remaining = len(app.files(others_only=True))
    app.stop(signal.SIGTERM)
    rows.append(
        {
            "event": "kill -9 (15 s retention), then a restart",
            "files_before": kept,
            "files_after_kill": left,
            "orphans_after": remaining,
            "seconds_to_clean": round(seconds),
        }
    )
    return rows


def add_stress_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "stress", help="the served app under hostile uploads, held sessions, a heavy volume, many clients, kills"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        metavar="PART",
        help=f"which parts (default: all): {', '.join(PARTS)}",
    )
    parser.add_argument("--model", help="local folder or Hub id[@revision]; default: HEMSEG_MODEL, else the bundled")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients of the load part (default 20)")
    parser.add_argument("--requests", type=int, default=5, help="requests per client (default 5)")
    parser.add_argument("--csv", metavar="FOLDER", help="also write each part's table there as CSV")
    parser.set_defaults(command=run_stress)


def run_stress(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="hemseg-stress-"))
    good = EXAMPLES / "vb2_07_sagittal_042.png"
    tables: dict[str, list[dict]] = {}
    try:
        if set(args.parts) - {"privacy"}:
            with served(args.model, Path(tempfile.mkdtemp(dir=folder))) as app:
                if "hostile" in args.parts:
                    tables["hostile"] = hostile_part(app, build(folder / "hostile", good), good)
                    peak = {"input": "the app's peak resident memory (VmHWM) over all of the above"}
                    tables["hostile"].append(peak | {"extra_peak_mb": round(app.life_peak_mb())})
                if "sessions" in args.parts:
                    tables["sessions"] = sessions_part(app, folder)
                if "volume" in args.parts:
                    tables["volume"] = volume_part(app, folder)
                if "load" in args.parts:
                    tables["load"] = [
                        *load_part(app, folder, args.clients, args.requests),
                        *load_part(app, folder, args.clients, args.requests, pixel_size=1.0),
                    ]
        if "privacy" in args.parts:
            tables["privacy"] = privacy_part(args.model, folder, good)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for part, rows in tables.items():
        print(f"\n## {part}\n\n{markdown(rows)}")
        if args.csv:
            write_csv(Path(args.csv) / f"stress_{part}.csv", rows)
    return 0


def markdown(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "| --- " * len(columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")).replace("|", "/") for key in columns) + " |")
    return "\n".join(lines)
