"""The Android demo's JVM unit tests (manifest parser, pre-processing, scores), compiled with a plain kotlinc.

No Android SDK is needed: android_demo/tools/jvm_unit_tests.sh compiles the Android-free Kotlin sources
against Android's own org.json (Debian libandroid-json-java) and runs their JUnit 4 tests. Skipped where
kotlinc or those jars are missing (`apt-get install kotlin libandroid-json-java junit4`).
"""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "android_demo" / "tools" / "jvm_unit_tests.sh"
JARS = ("/usr/share/java/com.android.json.jar", "/usr/share/java/junit4.jar", "/usr/share/java/hamcrest-core.jar")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("kotlinc") is None or not all(Path(j).is_file() for j in JARS),
                    reason="kotlinc, org.json or junit4 not installed")
def test_kotlin_unit_tests_pass():
    proc = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "OK (" in proc.stdout and "Tests run" not in proc.stdout, output[-3000:]
