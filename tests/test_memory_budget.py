"""The server's memory per request, measured from outside its process (bench/memory.py): worst-case files one at
a time, eight at once, what twenty ended sessions still hold, and the overlay folder gone after the server stops.

One app.py subprocess for the whole module (the shipped models, a private TMPDIR), warmed up before the first
measurement. The peak is the kernel's VmHWM of that process, reset through /proc/PID/clear_refs before each
measurement (Linux only; skipped where that file cannot be written).
"""
import sys
from pathlib import Path

import pytest

from bench import memory

ROOT = Path(__file__).resolve().parent.parent

# Budgets (MB), the same as bench/memory.py's: the rise of the server's peak resident memory over its resident size
# just before, for one worst-case request; for eight worst-case requests sent at once; and the resident memory
# that twenty sessions, each of which analysed a 25-megapixel film and then ended, may still hold.
REQUEST_MB = 400
CONCURRENT_MB = 1024
SESSIONS_MB = 200
REQUEST_SECONDS = 5.0  # one worst-case request end to end, after warm-up (a refusal counts as an answer)
SESSIONS = 20
ANSWERED = ("result", "refused")


def _why_not_measurable() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"peak memory is read from /proc (Linux), not available on {sys.platform}"
    if not (ROOT / "models" / "knee" / "model.onnx").is_file():
        return "no shipped models under models/"
    return memory.peak_measurable("self")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("worst-case")


@pytest.fixture(scope="module")
def worst(folder):
    """name -> path of the worst-case files (tests/hostile.py's when it provides them)."""
    return memory.worst_case_files(folder)


@pytest.fixture(scope="module")
def server():
    """The app in its own process: {"process", "url", "pid", "stopped"}; stopped at the end if no test did."""
    why_not = _why_not_measurable()
    if why_not:
        pytest.skip(why_not)
    process, url = memory.start_server()
    why_not = memory.peak_measurable(process.pid)
    if why_not:
        memory.stop_server(process)
        pytest.skip(why_not)
    running = {"process": process, "url": url, "pid": process.pid, "stopped": None}
    yield running
    if running["stopped"] is None:
        memory.stop_server(process)


@pytest.fixture(scope="module")
def one_at_a_time(server, worst):
    """Every worst-case file on /knee, the heaviest accepted one on /chest14 and (as a one-view study) on
    /mura_study, one request at a time."""
    url, pid = server["url"], server["pid"]
    client = memory.new_client(url)  # one session for all of them: a Client costs a second to open and close
    try:
        results = [memory.request_peak(url, pid, "/knee", path, client) for path in worst.values()]
        largest = memory.accepted_files(worst)[0]  # the largest decoded size
        results.append(memory.request_peak(url, pid, "/chest14", largest, client))
        results.append(memory.request_peak(url, pid, "/mura_study", [largest], client))
    finally:
        memory.close_client(client)
    return results


def _rows(results) -> str:
    return "\n".join(f"  {r['endpoint']} {r['file']}: {r['answered']} in {r['seconds']:.1f} s"
                     + (f", peak +{r['peak_rise_mb']:.0f} MB" if "peak_rise_mb" in r else "")
                     + f" ({r['message'][:120]})" for r in results)


def test_every_worst_case_file_is_answered_in_time(one_at_a_time):
    late = [r for r in one_at_a_time if r["answered"] not in ANSWERED or r["seconds"] > REQUEST_SECONDS]
    if late:
        pytest.fail(f"not answered (result or refusal) within {REQUEST_SECONDS} s:\n{_rows(late)}", pytrace=False)


def test_every_worst_case_request_stays_within_its_memory_budget(one_at_a_time):
    over = [r for r in one_at_a_time if r["peak_rise_mb"] > REQUEST_MB]
    if over:
        pytest.fail(f"peak rise over {REQUEST_MB} MB:\n{_rows(over)}", pytrace=False)


def test_eight_concurrent_worst_case_requests(server, worst):
    burst = memory.concurrent_peak(server["url"], server["pid"], memory.burst_jobs(worst, 8))
    unanswered = [j for j in burst["jobs"] if j["answered"] not in ANSWERED]
    if unanswered:
        pytest.fail(f"not answered:\n{_rows(unanswered)}", pytrace=False)
    assert burst["peak_rise_mb"] <= CONCURRENT_MB, (
        f"eight concurrent worst-case requests raised the peak by {burst['peak_rise_mb']:.0f} MB "
        f"(budget {CONCURRENT_MB}) in {burst['seconds']:.1f} s:\n{_rows(burst['jobs'])}")


def test_ended_sessions_hold_little_memory(server, folder):
    held = memory.session_memory(server["url"], server["pid"], memory.film_25mp(folder), SESSIONS)
    assert held["answered"] == {"result": SESSIONS}, f"not every session analysed the film: {held}"
    assert held["held_mb"] <= SESSIONS_MB, (
        f"{SESSIONS} ended sessions that each analysed a 25-megapixel film still hold {held['held_mb']:.0f} MB "
        f"(budget {SESSIONS_MB}): RSS {held['rss_before_mb']:.0f} -> {held['rss_after_mb']:.0f} MB, "
        f"{held['settle_s']:.0f} s after the clients closed")


def test_no_overlay_folder_is_left_after_the_server_stops(server):
    """Last in this module: it stops the shared server."""
    server["stopped"] = stopped = memory.stop_server(server["process"])
    assert stopped["overlay_folders_left"] == 0, (
        f"after SIGTERM (exit code {stopped['returncode']}) the server left {stopped['overlay_folders']} in its "
        f"TMPDIR")
