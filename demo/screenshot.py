"""Screenshot of the demo with a given model and real photos: how docs/demo.png is made.

    python demo/screenshot.py MODEL_DIR docs/demo.png .

Starts demo/app.py on a free loopback port, drives Debian's headless Chromium (packages chromium, chromium-driver)
through Selenium, uploads grace_hopper.jpg (matplotlib's sample photo), its JPEG quality-5 and blurred copies and a
broken file, scores them and saves the page. Needs the [demo] extra and selenium.
"""
import os, socket, subprocess, sys, time
from pathlib import Path
from PIL import Image, ImageFilter
import matplotlib.cbook as cbook
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

model, out, repo = sys.argv[1], sys.argv[2], Path(sys.argv[3])
work = Path("/tmp/shot/work"); work.mkdir(parents=True, exist_ok=True)
photo = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
photo.save(work / "grace_hopper.png")
photo.save(work / "grace_hopper_q5.jpg", quality=5)
photo.filter(ImageFilter.GaussianBlur(4)).save(work / "grace_hopper_blur.png")
(work / "broken.jpg").write_bytes(b"not a jpeg")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
server = subprocess.Popen([sys.executable, str(repo / "demo/app.py"), "--model", model], cwd=work, env=env,
                          stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
try:
    import urllib.request
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2); break
        except Exception:
            time.sleep(1)
    o = webdriver.ChromeOptions(); o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        o.add_argument(a)
    d = webdriver.Chrome(options=o, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
    d.get(f"http://127.0.0.1:{port}/")
    w = WebDriverWait(d, 240)
    st = w.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#model-status")))
    w.until(lambda _: "higher is better" in st.text)
    up = w.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#photos input[type=file]")))
    up.send_keys("\n".join(str(work / n) for n in ("grace_hopper.png", "grace_hopper_q5.jpg", "grace_hopper_blur.png", "broken.jpg")))
    w.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#photos tr")) >= 4)
    d.find_element(By.CSS_SELECTOR, "#score-button").click()
    w.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#results .glia-result")) >= 3)
    w.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) >= 3)
    time.sleep(2)
    print([e.text for e in d.find_elements(By.CSS_SELECTOR, "#results li")])
    d.save_screenshot(out)
    d.quit()
finally:
    os.killpg(server.pid, 15)
