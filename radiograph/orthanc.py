"""A local Orthanc PACS with its DICOMweb plugin, for trying the app's PACS tab and for the tests.

    python -m radiograph orthanc --storage ~/orthanc-db               # http://127.0.0.1:8042/dicom-web
    RADIOGRAPH_DICOMWEB_PASSWORD=secret python -m radiograph orthanc --storage ~/orthanc-db --user radiograph

It runs Debian's Orthanc (`apt-get install orthanc orthanc-dicomweb`) in the foreground with a configuration
written into the storage folder: DICOMweb at /dicom-web/, HTTP on localhost only, no DICOM (DIMSE) listener, and
HTTP basic authentication when a user is given. Debian's own service (/etc/orthanc, port 8042) serves the same
DICOMweb API once orthanc-dicomweb is installed; this command is for a machine without a service manager, or a
throwaway store. Point the app at it with RADIOGRAPH_DICOMWEB_URL=http://127.0.0.1:8042/dicom-web (docs/pacs.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

BINARY = "Orthanc"
PLUGIN_FOLDERS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
PLUGIN = "libOrthancDicomWeb.so"


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed, or the server did not come up; the message says which."""


def dicomweb_plugin() -> Path:
    for folder in PLUGIN_FOLDERS:
        if (Path(folder) / PLUGIN).exists():
            return Path(folder) / PLUGIN
    raise OrthancUnavailable(f"Orthanc's DICOMweb plugin ({PLUGIN}) is not in {', '.join(PLUGIN_FOLDERS)}: install "
                             "it with `apt-get install orthanc-dicomweb`")


def configuration(storage: Path, port: int, user: str | None = None, password: str | None = None) -> dict:
    settings = {
        "Name": "radiograph-local-pacs",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,  # localhost only
        "DicomServerEnabled": False,  # DICOMweb only: no DIMSE port to collide with another Orthanc
        "Plugins": [str(dicomweb_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "AuthenticationEnabled": user is not None,
        "RegisteredUsers": {user: password or ""} if user is not None else {},
        "SaveJobs": False,
    }
    return settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Orthanc:
    """An Orthanc process on 127.0.0.1:`port` storing into `storage`; `url` is its DICOMweb root.

        with Orthanc(tmp_path) as pacs:
            client = Pacs(pacs.url, user=pacs.user, password=pacs.password)
    """

    def __init__(self, storage: Path, port: int | None = None, user: str | None = None,
                 password: str | None = None):
        if shutil.which(BINARY) is None:
            raise OrthancUnavailable(f"{BINARY} is not installed: install it with `apt-get install orthanc "
                                     "orthanc-dicomweb` (Debian, Ubuntu)")
        self.storage, self.port = Path(storage), port or free_port()
        self.user, self.password = user, password
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def start(self, wait_s: float = 30.0) -> "Orthanc":
        with socket.socket() as probe:  # another server on the port would answer for this one
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise OrthancUnavailable(f"port {self.port} is in use (another Orthanc, perhaps Debian's service?); "
                                         "choose another with --port") from None
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.storage / "orthanc.json"
        config.unlink(missing_ok=True)
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it may hold a password
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(configuration(self.storage, self.port, self.user, self.password), indent=2))
        self.log = (self.storage / "orthanc.log").open("ab")
        self.process = subprocess.Popen([BINARY, str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.close()
                raise OrthancUnavailable(f"Orthanc exited with status {self.process.returncode} at start; its log: "
                                         f"{self.storage / 'orthanc.log'}")
            if self.answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise OrthancUnavailable(f"Orthanc did not answer on port {self.port} within {wait_s:.0f} s; its log: "
                                 f"{self.storage / 'orthanc.log'}")

    def answers(self) -> bool:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/dicom-web/studies?limit=1")
        if self.user is not None:
            token = b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radiograph orthanc", description=__doc__.split("\n")[0])
    parser.add_argument("--storage", type=Path, required=True, help="folder for Orthanc's database and files")
    parser.add_argument("--port", type=int, default=8042)
    parser.add_argument("--user", help="require HTTP basic authentication as this user, whose password is "
                        "RADIOGRAPH_DICOMWEB_PASSWORD (from the environment: a command line is visible to `ps`)")
    args = parser.parse_args(argv)
    try:
        server = Orthanc(args.storage, args.port, args.user, os.environ.get("RADIOGRAPH_DICOMWEB_PASSWORD")).start()
    except OrthancUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Orthanc is serving DICOMweb at {server.url} (storage {args.storage}); point the app at it with "
          f"RADIOGRAPH_DICOMWEB_URL={server.url}. Ctrl-C stops it.", flush=True)
    try:
        status = server.process.wait()
    except KeyboardInterrupt:
        status = 0
    finally:
        server.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
