"""bench/gpu_check.sh refuses cleanly where there is no GPU: exit status 2, a message saying why, nothing run."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_refuses_without_a_gpu(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "out")], check=False,
                            cwd=tmp_path,
                            env={**os.environ, "NVIDIA_SMI": str(tmp_path / "no-nvidia-smi")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no NVIDIA GPU on this machine" in result.stderr and "needs one" in result.stderr
    assert "2/4" not in result.stdout and list((tmp_path / "out").iterdir()) == []  # stopped at step 1
