"""Run by .ci/run in a fresh venv holding only the built wheel, outside the clone: the package and its
default bundle come from the wheel, `cascade classify` works, and the bundle inside it is never written."""

import json
import subprocess
import sys
from pathlib import Path

import cascade
from cascade.bundle import shipped_bundle_path

here = Path(cascade.__file__).resolve().parent
bundle = shipped_bundle_path()
if "site-packages" not in here.parts or bundle != here / "default_bundle":
    sys.exit(f"expected the package and its bundle from the installed wheel, got {here} and {bundle}")

cli = Path(sys.executable).parent / "cascade"
out = subprocess.run([str(cli), "classify", "I still have not received my new card"], check=True,
                     capture_output=True, text=True).stdout
if json.loads(out)["label"] != "card_arrival":
    sys.exit(f"unexpected answer from the wheel's default bundle: {out}")
if cascade.classify("I still have not received my new card").label != "card_arrival":
    sys.exit("cascade.classify gave an unexpected answer")

before = (bundle / "manifest.json").read_bytes()
save = subprocess.run([str(cli), "calibrate", "--save", "--fallthrough", "0.5"], capture_output=True, text=True)
if save.returncode == 0 or "never modified in place" not in save.stderr:
    sys.exit(f"calibrate --save into the installed bundle must be refused; got {save.returncode}: {save.stderr}")
if (bundle / "manifest.json").read_bytes() != before:
    sys.exit("the installed default bundle was modified")
print(f"wheel ok: {here}, bundle {bundle}")
