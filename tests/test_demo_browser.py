"""demo/app.py in a real browser: headless Debian Chromium driven by Selenium against the app on 127.0.0.1.

The app runs in a subprocess on a free port with a tiny saved GLIANet made here; the test uploads a photo, a broken
file and a too-large image (the app is started with `--max-pixels 100000`), reads the score and the messages from the
page, compares the score with `pipeline("image-quality-assessment")`'s, and saves a screenshot in its tmp dir. Every
wait has a timeout and the server is always stopped.
"""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from transformers import pipeline

from glia_hf.pipeline_glia import PIPELINE_TASK
from tests.test_cli import save_tiny_glia, smooth_photo


ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "demo" / "app.py"
SCORE_ATOL = 1e-5  # two processes, same code and options: equal up to floating-point noise
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NO_BROWSER = "needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"


def load_app():
    spec = importlib.util.spec_from_file_location("glia_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(url: str, process, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the demo did not answer at {url} within {timeout:.0f} s")


def test_model_choice_follows_argument_then_environment_then_quickstart(monkeypatch, tmp_path):
    pytest.importorskip("gradio", reason="pip install 'glia-hf[demo]'")
    app = load_app()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLIA_MODEL", raising=False)
    expected_default = ROOT / app.DEFAULT_MODEL
    assert app.resolve_model(None) == (str(expected_default) if (expected_default / "config.json").is_file() else None)
    (tmp_path / app.DEFAULT_MODEL).mkdir(parents=True)
    (tmp_path / app.DEFAULT_MODEL / "config.json").write_text("{}")
    assert app.resolve_model(None) == str(tmp_path / app.DEFAULT_MODEL)
    monkeypatch.setenv("GLIA_MODEL", "from/environment")
    assert app.resolve_model(None) == "from/environment"
    assert app.resolve_model("from/argument") == "from/argument"
    # no model: the page is still built and asks for one
    assert "No model found" in app.model_status(None)
    assert isinstance(app.build_demo(None), app.gr.Blocks)


@pytest.mark.slow
def test_demo_in_headless_chromium(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(NO_BROWSER)
    pytest.importorskip("gradio", reason="pip install 'glia-hf[demo]'")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in the [dev] extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    model_dir = tmp_path / "model"
    save_tiny_glia(model_dir, seed=2)
    photo, broken, large = tmp_path / "photo.png", tmp_path / "broken.jpg", tmp_path / "large.png"
    Image.fromarray(smooth_photo(240, 320, seed=7)).save(photo)
    broken.write_bytes(b"this is not a JPEG")
    Image.fromarray(smooth_photo(400, 300, seed=8)).save(large)  # 120,000 pixels, over the app's limit below
    expected = pipeline(PIPELINE_TASK, model=str(model_dir), trust_remote_code=True, device="cpu")(str(photo))["score"]

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, str(APP), "--model", str(model_dir), "--max-pixels", "100000"],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    driver = None
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", server)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2000"):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
        driver.set_page_load_timeout(60)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 180)
        status = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#model-status")))
        wait.until(lambda d: "higher is better" in status.text)
        assert "1 to 5" in status.text

        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#photos input[type=file]")))
        upload.send_keys("\n".join(str(p) for p in (photo, broken, large)))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#photos .file-preview tr, #photos tr")) >= 3)
        driver.find_element(By.CSS_SELECTOR, "#score-button").click()
        result = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#results .glia-result")))
        errors = {e.get_attribute("data-file"): e.text
                  for e in driver.find_elements(By.CSS_SELECTOR, "#results .glia-error")}

        assert result.get_attribute("data-file") == "photo.png"
        assert abs(float(result.get_attribute("data-score")) - expected) < SCORE_ATOL
        assert f"{expected:.4f}" in result.text
        assert "cannot read image" in errors["broken.jpg"]
        assert "300x400 = 120,000 pixels" in errors["large.png"] and "limit of 100,000" in errors["large.png"]
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) >= 3)  # photo, mosaic, attention
        assert driver.find_elements(By.CSS_SELECTOR, "#csv a")  # the CSV download link
        time.sleep(1)  # let the gallery images paint before the screenshot
        assert driver.save_screenshot(str(tmp_path / "demo.png"))
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        log.close()
