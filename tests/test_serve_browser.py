"""The web page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by selenium
loads each task's page from an in-process uvicorn, submits real input, and checks what is drawn against the
API's answer for the same input. Screenshots go to the test's tmp folder (printed with -s).

`make test` installs the browser when it is missing and apt-get is usable; elsewhere these tests skip with one
line saying why."""
from __future__ import annotations

import base64
import shutil
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install grukit[serve]")
pytest.importorskip("selenium", reason="selenium is not installed: pip install grukit[test]")

from grukit.serve import adapters as A  # noqa: E402
from grukit.serve.app import create_app  # noqa: E402
from test_serve_runs import TASKS, LiveServer, chirp, tiny_runs  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="headless Chromium is not installed "
                                "(apt-get install chromium chromium-driver; `make test` does it where it can)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serve_runs")
    served = {t: A.load_served(runs[t], t) for t in TASKS}
    with LiveServer(create_app(list(served.values()))) as url:
        yield url, served


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_OFFLINE", "true")                  # never let selenium fetch a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              "--window-size=1200,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()


def wait(drv, fn, timeout=30.0, what="the page"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            v = fn()
            if v:
                return v
        except Exception:  # noqa: BLE001 - element not there yet
            pass
        time.sleep(0.05)
    err = drv.execute_script("return document.querySelector('#error')?.textContent")
    raise AssertionError(f"timed out waiting for {what}; page error: {err!r}")


def open_run(drv, url, name):
    drv.get(f"{url}/#/run/{name}")
    wait(drv, lambda: drv.execute_script("return document.body.dataset.ready") == name, what=f"panel {name}")


def fill(drv, css, text):
    drv.execute_script("arguments[0].value = arguments[1]", drv.find_element("css selector", css), text)


def click(drv, css):
    drv.find_element("css selector", css).click()


def shot(drv, tmp_path, name):
    p = tmp_path / f"{name}.png"
    drv.save_screenshot(str(p))
    assert p.stat().st_size > 1000
    print(f"screenshot: {p}")
    return p


def api(url, path, **kw):
    import httpx
    r = httpx.post(url + path, timeout=60, **kw)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ pages
def test_home_lists_every_run(site, browser, tmp_path):
    url, _ = site
    browser.get(url + "/")
    rows = wait(browser, lambda: browser.find_elements("css selector", "#runs-table tbody tr"), what="runs")
    assert sorted(r.get_attribute("data-run") for r in rows) == sorted(TASKS)
    assert "grukit serve" in browser.title
    shot(browser, tmp_path, "home")


def test_forecast_chart_matches_the_api(site, browser, tmp_path):
    url, served = site
    df = pd.read_csv(served["forecast"].meta["data_name"])
    csv = df.to_csv(index=False)
    open_run(browser, url, "forecast")
    fill(browser, "#csv", csv)
    click(browser, "#submit")
    pts = wait(browser, lambda: browser.find_elements("css selector", "#chart circle.point"), what="forecast")
    ref = api(url, "/runs/forecast/forecast", json={"series": [df[["sales"]].values.tolist()]})["forecasts"][0]
    svg = browser.find_element("css selector", "#chart")
    y0, yk = float(svg.get_attribute("data-y0")), float(svg.get_attribute("data-yk"))
    assert len(pts) == len(ref["point"]) == 4
    for p, v, lo, hi in zip(pts, ref["point"], ref["lo"], ref["hi"]):
        assert float(p.get_attribute("data-value")) == pytest.approx(v[0], rel=1e-9)
        assert float(p.get_attribute("data-lo")) == pytest.approx(lo[0], rel=1e-9)
        assert (float(p.get_attribute("cy")) - y0) / yk == pytest.approx(v[0], rel=1e-3)   # drawn where it belongs
    assert browser.find_elements("css selector", "#chart polygon.interval")
    shot(browser, tmp_path, "forecast")


def test_classify_upload_bars_match_the_api(site, browser, tmp_path):
    url, _ = site
    x = np.random.default_rng(5).normal(size=(8, 2)).round(3) + 1.5
    path = tmp_path / "seq.csv"
    pd.DataFrame(x, columns=["f1", "f2"]).to_csv(path, index=False)
    open_run(browser, url, "classify")
    browser.find_element("css selector", "#file").send_keys(str(path))
    wait(browser, lambda: browser.find_element("css selector", "#csv").get_attribute("value"), what="file read")
    click(browser, "#submit")
    rows = wait(browser, lambda: browser.find_elements("css selector", "#bars .bar-row"), what="bars")
    ref = api(url, "/runs/classify/classify", json={"sequences": [x.tolist()]})["predictions"][0]
    drawn = {r.get_attribute("data-class"): float(r.get_attribute("data-prob")) for r in rows}
    assert drawn == pytest.approx(ref["probabilities"], rel=1e-9)
    top = browser.find_element("css selector", "#bars .bar-row.top").get_attribute("data-class")
    assert top == ref["label"]
    widths = {r.get_attribute("data-class"): r.find_element("css selector", ".bar").size["width"] /
              r.find_element("css selector", ".bar-track").size["width"] for r in rows}
    for k, p in ref["probabilities"].items():
        assert widths[k] == pytest.approx(p, abs=0.01)
    shot(browser, tmp_path, "classify")


def test_anomaly_plot_flags_match_the_api(site, browser, tmp_path):
    url, _ = site
    v = np.c_[np.arange(80.0), np.sin(np.arange(80) / 3).round(4)]
    v[50, 1] += 5
    open_run(browser, url, "autoencoder")
    fill(browser, "#csv", "t,value\n" + "\n".join(f"{a},{b}" for a, b in v))
    click(browser, "#submit")
    wait(browser, lambda: browser.find_elements("css selector", "#chart polyline.score"), what="scores")
    ref = api(url, "/runs/autoencoder/anomalies", json={"values": v.tolist()})
    flags = browser.find_elements("css selector", "#chart circle.flag")
    assert [int(f.get_attribute("data-step")) for f in flags] == [i for i, f in enumerate(ref["flags"]) if f]
    assert len(flags) >= 1
    shot(browser, tmp_path, "anomalies")


def test_lm_text_streams_in_and_equals_the_api(site, browser, tmp_path):
    url, _ = site
    open_run(browser, url, "lm")
    fill(browser, "#prompt", "the cat")
    fill(browser, "#length", "120")
    fill(browser, "#temperature", "0.8")
    fill(browser, "#seed", "7")
    click(browser, "#submit")
    wait(browser, lambda: browser.find_element("css selector", "#state").text.startswith("done"), what="text")
    ref = api(url, "/runs/lm/generate", json={"prompt": "the cat", "length": 120, "temperature": 0.8, "seed": 7})
    shown = browser.execute_script("return document.querySelector('#output').textContent")
    assert shown == ref["text"]
    pieces = int(browser.find_element("css selector", "#state").text.split()[1])
    assert pieces > 10                                             # it arrived piece by piece (SSE)
    shot(browser, tmp_path, "lm")


def test_music_piano_roll_and_midi_download(site, browser, tmp_path):
    url, _ = site
    open_run(browser, url, "music")
    fill(browser, "#steps", "32")
    fill(browser, "#seed", "4")
    click(browser, "#submit")
    wait(browser, lambda: browser.find_element("css selector", "#midi").is_displayed(), what="roll")
    ref = api(url, "/runs/music/generate", json={"steps": 32, "temperature": 1.0, "seed": 4})["pieces"][0]
    notes = browser.find_elements("css selector", "#roll rect.note")
    assert sorted([int(n.get_attribute("data-t")), int(n.get_attribute("data-p"))] for n in notes) == sorted(ref["notes"])
    href = browser.find_element("css selector", "#midi").get_attribute("href")
    assert base64.b64decode(href.split(",", 1)[1]) == base64.b64decode(ref["midi_base64"])
    shot(browser, tmp_path, "music")


def test_speech_upload_and_streamed_partials(site, browser, tmp_path):
    import soundfile as sf
    url, _ = site
    wave = np.concatenate([chirp(1), chirp(0, 1), chirp(2)])
    path = tmp_path / "clip.wav"
    sf.write(str(path), wave, 8000, subtype="FLOAT")
    ref = api(url, "/runs/speech/transcribe", files={"file": ("clip.wav", path.read_bytes(), "audio/wav")})
    open_run(browser, url, "speech")
    browser.find_element("css selector", "#file").send_keys(str(path))
    click(browser, "#submit")
    wait(browser, lambda: browser.find_element("css selector", "#transcript").text.strip() or
         browser.execute_script("return window.grukit.last && window.grukit.last.text !== undefined"),
         what="transcript")
    assert browser.execute_script("return document.querySelector('#transcript').textContent") == ref["text"]
    browser.execute_script("document.querySelector('#transcript').textContent = ''; window.grukit.last = null")
    click(browser, "#stream")
    final = wait(browser, lambda: browser.execute_script("return window.grukit.last && window.grukit.last.final"),
                 what="streamed transcript")
    # the browser decodes and resamples the file itself (8 kHz float WAV: no resampling), then streams 100 ms chunks
    assert final["text"] == ref["text"]
    partial = browser.execute_script("return document.querySelector('#partial').textContent")
    assert ref["text"].startswith(partial)
    shot(browser, tmp_path, "speech")
