"""A stand-in worker process for testing the QGIS-side worker CLIENT (not the worker).

Called as ``fake_worker.py -m <module> <job.json>`` through a wrapper script that plays the worker
interpreter. It speaks protocol v1 (models/core/job.py) and behaves as ``job.params['behaviour']`` says:

- ``ok``: progress 0..100, an info and a warning, writes each output through a partial file, a result;
- ``error``: a worker ``error`` event (type/message from params) after stderr noise, exit 1;
- ``crash``: stderr traceback noise, then exit 3 without any event;
- ``slow``: writes partial files, then works for ``seconds``; on SIGTERM exits 130 WITHOUT cleaning up;
- ``stubborn``: like ``slow`` but ignores SIGTERM (the client must kill it);
- ``noise``: non-protocol stdout lines around a normal run.
"""

import json
import os
import signal
import sys
import time


def emit(kind, **payload):
    sys.stdout.write(json.dumps({"event": kind, **payload}) + "\n")
    sys.stdout.flush()


def write_outputs(job):
    for path in job["outputs"].values():
        partial = f"{path}.partial-{os.getpid()}.tif"
        with open(partial, "wb") as f:
            f.write(b"II*\x00fake")
        os.replace(partial, path)


def main():
    job = json.load(open(sys.argv[-1], encoding="utf-8"))
    params = job["params"]
    behaviour = params.get("behaviour", "ok")
    if behaviour in ("slow", "stubborn"):
        signal.signal(signal.SIGTERM, (lambda *_: sys.exit(130)) if behaviour == "slow" else signal.SIG_IGN)
        for path in job["outputs"].values():
            open(f"{path}.partial-{os.getpid()}.tif", "wb").close()
        end = time.monotonic() + params.get("seconds", 30)
        while time.monotonic() < end:
            emit("progress", percent=1.0)
            time.sleep(0.05)
        write_outputs(job)
        emit("result", outputs=job["outputs"], metrics={})
        return 0
    if behaviour == "error":
        sys.stderr.write("worker log line 1\nworker log line 2: details for the log only\n")
        emit("error", type=params["type"], message=params["message"])
        return 1
    if behaviour == "crash":
        sys.stderr.write("Traceback (most recent call last):\n  File 'x.py'\nRuntimeError: secret internal detail\n")
        sys.stderr.flush()
        return 3
    if behaviour == "noise":
        print("plain text line from a library")
        print("{not json")
    for percent in (0, 25, 50, 75, 100):
        emit("progress", percent=percent)
    emit("info", message="device: cpu")
    emit("warning", message="untrained weights")
    write_outputs(job)
    emit("result", outputs=job["outputs"], metrics={"psnr": {"B01": 30.5}, "mae": {"B01": 12.0}})
    return 0


sys.exit(main())
