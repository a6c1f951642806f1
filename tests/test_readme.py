"""The README's promises: CI runs its test command, and the Space front matter matches the pins."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"Install and run the tests:\s*```bash\n(.+?)\n```", text, re.S)
    assert block, "README lost its test command"
    return block.group(1).strip()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_test_command() in ci


def test_space_front_matter_matches_requirements():
    text = (ROOT / "README.md").read_text()
    front = dict(re.findall(r"^(\w+): (.+)$", text.split("---")[1], re.M))
    pins = dict(re.findall(r"^([\w-]+)==([\w.]+)", (ROOT / "requirements.txt").read_text(), re.M))
    assert front["sdk"] == "gradio" and front["sdk_version"] == pins["gradio"]
    assert front["app_file"] == "app.py" and front["python_version"].strip('"') == "3.11"
    assert len(front["short_description"]) <= 60


def test_readme_app_command_and_client_example_point_at_real_things():
    text = (ROOT / "README.md").read_text()
    app_command = re.search(r"Install and run the app.*?```bash\n(.+?)\n```", text, re.S)
    assert app_command and app_command.group(1).strip().endswith("python app.py")
    assert (ROOT / "app.py").exists()
    files = re.findall(r'handle_file\("([^"]+)"\)', text)
    assert files and all((ROOT / f).exists() for f in files), [f for f in files if not (ROOT / f).exists()]
    endpoints = set(re.findall(r'api_name="(/\w+)"', text))
    assert endpoints == {"/auto", "/knee", "/mura", "/mura_study", "/pneumonia", "/chest14", "/knee_report"}
