"""Real published chat templates, taken from what PyPI carries.

The source distribution of llama-cpp-python 0.3.36 vendors llama.cpp's test
corpus: about 70 chat templates of Hugging Face models under
vendor/llama.cpp/models/templates/*.jinja. `fetch()` downloads the sdist
once with pip and extracts only those files into a cache folder; later calls
reuse it. Run `python chat_template_corpus.py` (deploy/setup.sh does) to
fill the cache ahead of time.
"""
import os
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "llama-cpp-python==0.3.36"
MEMBER_DIR = "vendor/llama.cpp/models/templates/"


def cache_dir():
    root = os.environ.get("RIGTUNE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rigtune")
    return os.path.join(root, "chat-templates-llama-cpp-python-0.3.36")


def fetch():
    """The cache folder holding the *.jinja files; raises RuntimeError with
    pip's message when the download fails (e.g. offline)."""
    target = cache_dir()
    done = os.path.join(target, ".complete")
    if os.path.exists(done):
        return target
    os.makedirs(target, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-q", "-d", tmp, PACKAGE],
            capture_output=True, text=True, timeout=900)
        sdists = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")]
        if not sdists:
            raise RuntimeError(f"pip download {PACKAGE} failed: {run.stderr.strip()[-500:]}")
        with tarfile.open(os.path.join(tmp, sdists[0])) as tar:
            for member in tar.getmembers():
                name = member.name.split("/", 1)[-1]
                if member.isfile() and name.startswith(MEMBER_DIR) and name.endswith(".jinja"):
                    data = tar.extractfile(member).read()
                    with open(os.path.join(target, os.path.basename(name)), "wb") as out:
                        out.write(data)
    open(done, "w").close()
    return target


if __name__ == "__main__":
    print(fetch())
